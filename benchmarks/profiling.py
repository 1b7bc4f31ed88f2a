"""Profiles that explain a result: one more run of a scenario, profiled, after the measured
ones (profiling slows the process; its numbers are not reported as measurements).

- A worker scenario: a cProfile of the event loop's thread from the first message handled
  to the exit (``BENCH_PROFILE``, see benchmarks/handlers.py), the top 20 functions by own time,
  and the share of wall time spent waiting in the selector (the worker idle, waiting for
  the server: the server is the bound).
- Beside a worker profile, when the raw loop was profiled too (``raw``: always with
  ``--profile missed``): own time per message by package, the worker's and the raw loop's,
  so a CPU gap is split into what the worker adds (its own code, its log line, more tasks)
  and what both spend in botocore, aiohttp and the event loop.
- Start-up (``startup-worker``): ``python -X importtime`` of ``worker run``, the 20 largest
  imports by cumulative time, and its own import time by top-level package beside the raw
  loop's (``import bench.raw`` under ``-X importtime``): what the worker imports beyond it.
"""

from __future__ import annotations

import argparse
import pstats
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.result import ROOT

if TYPE_CHECKING:
    from benchmarks.harness import Bench, Scenario

TOP = 20
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _where(file: str, line: int) -> str:
    if file == "~":
        return "builtin"
    for marker in ("site-packages/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker.startswith("lib/"):
                file = file.split("/", 1)[-1]
            break
    else:
        file = file.removeprefix(str(ROOT) + "/")
    return f"{file}:{line}"


def top_functions(path: Path, count: int = TOP) -> str:
    """The profile's functions by own (wall) time, with the selector's share up front."""
    stats = pstats.Stats(str(path))
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values()) or 1e-9
    waiting = sum(v[2] for k, v in table.items() if re.search(r"'(poll|select)' of 'select\.", k[2]))
    rows = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:count]
    lines = [
        f"{total:.2f} s profiled (event loop thread, first message to exit); "
        f"{waiting:.2f} s ({waiting / total:.0%}) waiting in the selector for the network",
        f"{'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>8}  function",
    ]
    for (file, line, func), (_, calls, own, cum, _) in rows:
        lines.append(f"{own:7.3f} {own / total:6.1%} {cum:7.3f} {calls:8d}  {func} ({_where(file, line)})")
    return "\n".join(lines)


PACKAGES = (
    ("worker (own code)", ("/worker/",)),
    ("structlog, orjson (log line library)", ("structlog/", "orjson")),
    ("aiobotocore", ("aiobotocore/",)),
    ("botocore", ("botocore/",)),
    ("aiohttp, yarl, multidict", ("aiohttp/", "yarl/", "multidict/")),
    ("HTTP headers (stdlib email)", ("/email/", "/http/")),
    ("event loop, tasks (asyncio)", ("/asyncio/", "_asyncio", "selectors", "_contextvars")),
    ("other Python (stdlib, libraries)", ("lib/python3",)),
)
WAITING = "waiting in the selector (not CPU)"


def by_package(path: Path, messages: int) -> dict[str, float]:
    """Own time per message (microseconds) by package; the selector's wait on its own row
    (wall time in a profile, not CPU). cProfile inflates every call alike (about 3x)."""
    table = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (file, _, func), (_, _, own, _, _) in table.items():
        if re.search(r"'(poll|select)' of 'select\.", func):
            name = WAITING
        else:
            where = func if file == "~" else file
            name = next((n for n, marks in PACKAGES if any(m in where for m in marks)), "other (builtins)")
        out[name] = out.get(name, 0.0) + own * 1e6 / max(1, messages)
    return out


def package_table(worker: dict[str, float], raw: dict[str, float], label: str) -> str:
    """Both profiles' own time per message by package, side by side."""
    names = [n for n, _ in PACKAGES] + ["other (builtins)", WAITING]
    lines = [f"{'own us/msg (profiled)':<36} {label[:14]:>14} {'raw loop':>9} {'diff':>7}"]
    for name in names:
        a, b = worker.get(name, 0.0), raw.get(name, 0.0)
        lines.append(f"{name:<36} {a:14.1f} {b:9.1f} {a - b:+7.1f}")
    cpu_a = sum(v for k, v in worker.items() if k != WAITING)
    cpu_b = sum(v for k, v in raw.items() if k != WAITING)
    lines.append(f"{'total without the wait':<36} {cpu_a:14.1f} {cpu_b:9.1f} {cpu_a - cpu_b:+7.1f}")
    return "\n".join(lines)


def top_imports(log: Path, count: int = TOP) -> str:
    """``-X importtime`` lines of a log: the total and the largest imports by cumulative time."""
    rows = []
    own_total = 0
    for line in log.read_text(errors="replace").splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            own, cumulative, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
            own_total += own
            rows.append((cumulative, own, indent // 2, name))
    if not rows:
        return "no -X importtime output found"
    top = sorted(rows, reverse=True)[:count]
    lines = [
        f"{own_total / 1e6:.2f} s importing {len(rows)} modules (python -X importtime, worker run)",
        f"{'cum ms':>8} {'own ms':>7}  module (nesting)",
    ]
    lines += [f"{c / 1000:8.1f} {o / 1000:7.1f}  {'  ' * depth}{name}" for c, o, depth, name in top]
    return "\n".join(lines)


def import_packages(text: str) -> dict[str, int]:
    """Own microseconds per top-level package in ``-X importtime`` output."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            top = m[4].split(".")[0]
            out[top] = out.get(top, 0) + int(m[1])
    return out


def imports_beyond(worker: dict[str, int], raw: dict[str, int], count: int = 12) -> str:
    """What ``worker run`` imports beyond what the raw loop imports: own import time by
    top-level package, the largest differences first."""
    diff = {k: worker.get(k, 0) - raw.get(k, 0) for k in worker.keys() | raw.keys()}
    lines = [
        f"import time beyond the raw loop's: {sum(diff.values()) / 1000:+.1f} ms "
        f"(worker {sum(worker.values()) / 1000:.1f}, raw loop {sum(raw.values()) / 1000:.1f}; "
        "own ms by top-level package, the collector off in both)",
        f"{'worker':>8} {'raw':>7} {'diff':>7}  package",
    ]
    for k in sorted(diff, key=lambda k: -diff[k])[:count]:
        lines.append(
            f"{worker.get(k, 0) / 1000:8.1f} {raw.get(k, 0) / 1000:7.1f} {diff[k] / 1000:+7.1f}  {k}"
        )
    return "\n".join(lines)


def raw_loop_imports(python: str) -> dict[str, int]:
    """The raw loop's imports under ``-X importtime`` (the collector off, as ``worker run``
    imports with it off): own microseconds per top-level package."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import gc; gc.disable(); import bench.raw"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return import_packages(done.stderr)


async def profile_scenarios(
    bench: Bench, keys: list[str], args: argparse.Namespace, known: dict[str, Scenario], startup: Scenario
) -> None:
    """One profiled run per key: ``known`` scenarios by key, or ``startup`` (-X importtime)."""
    packages: dict[str, dict[str, float]] = {}
    for key in keys:
        if key in ("startup", "startup-worker"):
            sc = startup
            run = await bench.measure(sc, 0, n=args.startup_n, python_args=["-X", "importtime"])
            bench.runs.remove(run)
            text = "\n".join(top_imports(log) for log in bench.last_logs)
            worker = import_packages("\n".join(log.read_text(errors="replace") for log in bench.last_logs))
            if worker:
                text += "\n\n" + imports_beyond(worker, raw_loop_imports(sys.executable))
            bench.profiles["startup-worker"] = (
                f"first message after {run.first_message:.2f} s (under -X importtime)\n{text}"
            )
        elif key in known:
            path = bench.workdir / f"{key}.prof"
            run = await bench.measure(known[key], 0, extra_env={"BENCH_PROFILE": str(path)})
            bench.runs.remove(run)
            if path.exists():
                bench.profiles[key] = top_functions(path)
                packages[key] = by_package(path, run.messages)
        else:
            print(f"  no profile for {key!r} (known: startup-worker, {', '.join(known)})", flush=True)
            continue
        shown = "startup-worker" if key == "startup" else key
        print(f"profile of {shown}:\n{bench.profiles.get(shown, '(none written)')}", flush=True)
    raw = packages.get("raw")
    for key, mine in packages.items():
        if raw is not None and key != "raw" and not key.startswith("raw-"):
            bench.profiles[key] += "\n\n" + package_table(mine, raw, key)
            print(f"by package, {key} vs the raw loop:\n{package_table(mine, raw, key)}", flush=True)
