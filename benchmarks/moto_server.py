"""moto's server answering one request at a time: ``python -m benchmarks.moto_server PORT``.

moto's backends are not thread-safe, and ``python -m moto.server`` serves each request in a
thread of its own: a DynamoDB transaction deep-copies the tables while another request
writes them, and moto answers ``TransactWriteItems`` with a 500 ("dictionary changed size
during iteration", seen in its log: 458 of them in one run of the sigkill+idempotency
scenario, which then stalled). The same application, unthreaded, has no such race.

``start()`` runs it as a process of its own for the chaos scenarios and the benchmark, its
output in a log file (not the caller's terminal)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


async def start(timeout: float = 30) -> tuple[subprocess.Popen[bytes], str]:
    """DynamoDB over HTTP (LocalStack's needs a download these machines cannot make): the
    server's process and its endpoint; prints where its log is."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"
    print(f"  moto's server on port {port}, its log: {log}", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.moto_server", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"moto's server did not start (see {log})")
        await asyncio.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def _listening(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
    except (urllib.error.URLError, OSError):
        return False
    return True


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
