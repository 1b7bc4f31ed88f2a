"""Loaded by the benchmark's own LocalStack (``PYTHONPATH`` points here; benchmarks/run.py).

LocalStack's heap grows through a benchmark run (3.2 million objects after two minutes),
and each full garbage collection walks all of it: pauses of 0.1 s growing to 1.5 s, one
every 15 to 25 s, so that about one 3-second measured run in five lost up to half its time
to the server doing nothing for either side. A thread here freezes the heap every
``BENCH_SERVER_GC_FREEZE`` seconds (``gc.freeze``: what exists is left out of later
collections), so a collection walks only what is new; what is frozen is never collected
(cyclic garbage then stays: a little memory for the length of a run). Collections that
still pause the server for ``BENCH_SERVER_GC_LOG_MS`` (default 50) milliseconds or more are
appended to ``BENCH_SERVER_GC_LOG`` (one line each: wall time, generation, milliseconds),
for the report. Being a ``sitecustomize``, it takes the place of one the interpreter might
ship (LocalStack's own venv has none).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

PAUSE_LOGGED = float(os.environ.get("BENCH_SERVER_GC_LOG_MS", "50")) / 1000


def _freeze_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        gc.freeze()


def _logger(path: str) -> Any:
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= PAUSE_LOGGED:
            with open(path, "a") as f:
                f.write(f"{time.time():.3f} {info['generation']} {took * 1000:.0f}\n")

    return callback


if os.environ.get("BENCH_SERVER_GC_FREEZE"):
    every = float(os.environ["BENCH_SERVER_GC_FREEZE"])
    threading.Thread(target=_freeze_every, args=(every,), daemon=True, name="bench-gc-freeze").start()
if os.environ.get("BENCH_SERVER_GC_LOG"):
    gc.callbacks.append(_logger(os.environ["BENCH_SERVER_GC_LOG"]))
