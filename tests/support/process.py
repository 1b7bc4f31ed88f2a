"""Run ``python -m worker run`` as a separate process, the way the container does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.servers import ROOT


class WorkerProcess:
    def __init__(self, tmp: Path, config: dict[str, object], env: dict[str, str] | None = None) -> None:
        self.config_path = tmp / f"worker-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.config_path.with_suffix(".log")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, closed_log: bool = False) -> WorkerProcess:
        """Start the worker; ``closed_log``: its stderr is a pipe whose reader is gone."""
        stderr: Any = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        if closed_log:
            stderr = subprocess.PIPE
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "run",
                "--config",
                str(self.config_path),
                "--log-format",
                "json",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        if closed_log:
            assert self.proc.stderr is not None
            self.proc.stderr.close()  # every write of the worker now raises BrokenPipeError
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_records(path: Path) -> tuple[list[str], list[str]]:
    """(started ids, done ids) as the recorder handlers wrote them."""
    started: list[str] = []
    done: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            kind, message_id, *_ = line.split(" ")
            (started if kind == "start" else done).append(message_id)
    return started, done
