"""What /proc says about the processes of a benchmark run: CPU seconds, peak memory, the
machine's busy share, and which process listens on a port (the SQS server's CPU is part of
what explains a result: on two shared cores it is usually the bound)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and all its threads; None once it is gone."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: the fields after it follow the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def exited(pid: int) -> bool:
    """Has the process ended (a zombie not reaped yet, or gone)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def hwm_mb(pid: int) -> float:
    """Peak resident set size of a running process (VmHWM), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def host_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot (/proc/stat's ``cpu`` line)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def listening_pid(port: int) -> int | None:
    """The process listening on this local TCP port (None if not found or not visible)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


@dataclass
class Sample:
    """One reading while a scenario runs (monotonic time, machine ticks, CPU seconds)."""

    at: float
    busy: int
    total: int
    server: float | None
    proxy: float | None


def window(samples: list[Sample], start: float, end: float) -> dict[str, float]:
    """The machine's busy share and the server's and proxy's CPU seconds between the two
    samples nearest ``start`` and ``end`` ({} without two distinct samples)."""
    if len(samples) < 2:
        return {}
    a = min(samples, key=lambda s: abs(s.at - start))
    b = min(samples, key=lambda s: abs(s.at - end))
    if b.total <= a.total:
        return {}
    out = {"host_busy": round((b.busy - a.busy) / (b.total - a.total), 3), "seconds": b.at - a.at}
    if a.server is not None and b.server is not None:
        out["server_cpu"] = b.server - a.server
    if a.proxy is not None and b.proxy is not None:
        out["proxy_cpu"] = b.proxy - a.proxy
    return out
