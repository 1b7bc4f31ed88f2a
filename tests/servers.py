"""Real SQS/SNS servers for the tests: LocalStack on the host (no Docker) and moto's server.

LocalStack needs Python 3.13 and a botocore that clashes with aiobotocore's, so it lives in
its own virtual environment under ``.cache/localstack`` (installed on first use with uv, with
a date cut-off so that newer dependencies cannot break it). Set ``SQS_WORKER_TEST_ENDPOINT``
to use a server you run yourself (e.g. ``docker compose up localstack``) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SQS_WORKER_CACHE", ROOT / ".cache")).resolve()
LOCALSTACK_SPEC = "localstack-core[runtime]==4.14.0"
EXCLUDE_NEWER = "2026-03-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uv() -> list[str]:
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return [found]
    return [sys.executable, "-m", "uv"]


def _runs(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return out.stdout.strip() == "True"


def find_python313() -> str:
    """A Python 3.13 interpreter: $LOCALSTACK_PYTHON, python3.13 on PATH, pyenv, or uv's."""
    candidates = [os.environ.get("LOCALSTACK_PYTHON", ""), shutil.which("python3.13") or ""]
    pyenv = shutil.which("pyenv")
    if pyenv:
        versions = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, check=False)
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False).stdout.strip()
        for v in sorted(versions.stdout.split(), reverse=True):
            if v.startswith("3.13"):
                candidates.append(str(Path(root) / "versions" / v / "bin" / "python3.13"))
    for python in candidates:
        if python and _runs(python):
            return python
    found = subprocess.run([*_uv(), "python", "find", "3.13"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        subprocess.run([*_uv(), "python", "install", "3.13"], check=True)
        found = subprocess.run([*_uv(), "python", "find", "3.13"], capture_output=True, text=True, check=True)
    return found.stdout.strip()


def ensure_localstack() -> Path:
    """Install LocalStack into its own venv once; return that venv's python."""
    venv = CACHE / "localstack"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == LOCALSTACK_SPEC and python.exists():
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([*_uv(), "venv", "-q", "--clear", "-p", find_python313(), str(venv)], check=True)
    subprocess.run(
        [
            *_uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            "--exclude-newer",
            EXCLUDE_NEWER,
            LOCALSTACK_SPEC,
        ],
        check=True,
    )
    marker.write_text(LOCALSTACK_SPEC)
    return python


class LocalStack:
    """One LocalStack process on a port of its own; ``kill()`` and ``start()`` again to
    simulate an outage (LocalStack keeps no state across restarts)."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self._env = env or {}
        """More environment for the server's process (the benchmark's GC settings)."""
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._root = Path(tempfile.mkdtemp(prefix="localstack-"))
        self._ended_here = False
        """The process was stopped or killed by this object (not by itself or another)."""

    def start(self, timeout: float = 90) -> None:
        python = ensure_localstack()
        env = {
            **os.environ,
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": "sqs,sns,s3,cloudwatch,events",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DNS_ADDRESS": "0",
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(self._root),
            "SQS_ENDPOINT_STRATEGY": "path",
            "LOCALSTACK_HOST": f"127.0.0.1:{self.port}",
            "DISABLE_EVENTS": "1",
            # Queue depth reaches CloudWatch every 5 s (default 60): alarm tests see it fire.
            "SQS_CLOUDWATCH_METRICS_REPORT_INTERVAL": "5",
            **self._env,
        }
        self._ended_here = False
        log = open(self._root / "localstack.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(python), "-m", "localstack.runtime.main"],
            # Its own directory: `-m` puts the working directory first on sys.path, and a
            # module there named like one of the standard library's (a trace.py in a
            # scratch directory) broke LocalStack's plugin loading.
            cwd=self._root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LocalStack exited; see {self._root / 'localstack.log'}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_localstack/health", timeout=2) as r:
                    services = json.load(r).get("services", {})
                    if services.get("sqs") in ("available", "running"):
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(f"LocalStack did not answer within {timeout}s")

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self._ended_here = True
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self._ended_here = True
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def cleanup(self) -> None:
        self.stop()
        if self.proc is not None and not self._ended_here:
            # It ended on its own (a crash; -9: killed, e.g. by the kernel): keep its log.
            print(
                f"LocalStack exited by itself (code {self.proc.returncode}); its log is kept: "
                f"{self._root / 'localstack.log'}",
                file=sys.stderr,
            )
            return
        shutil.rmtree(self._root, ignore_errors=True)
