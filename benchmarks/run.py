"""The benchmark: every scenario against LocalStack, side by side with the raw loop.

    python -m benchmarks                      # starts LocalStack unless --endpoint is given
    python -m benchmarks --quick              # CI-size smoke run of every scenario
    python -m benchmarks --n 2000 --scenarios raw,noop --json out.json

Each measured run pre-loads N messages into a fresh queue, starts the consumer as its own
process (the raw loop, ``benchmarks/raw.py``, or the worker through its console script, ``worker
run --config ...``) behind a counting proxy, and waits for the delete that completes N.
It records the process start, the first message handled (by the handler itself) and the
last delete (the proxy), so throughput is reported with start-up excluded (N / (last delete
- first message)) and included (N / (last delete - process start)), and CPU per message
from the consumer's CPU between the first message and the last delete (start-up CPU is
reported on its own).

The repeated scenarios run ``--reps`` times, interleaved: every repetition runs each
scenario once, every other repetition in reverse order (so that a drift of the machine's
speed during a repetition favours the raw loop in one and the worker in the next), and
every ratio is taken to the raw loop of the same repetition before the median is
reported. Then, once each: start-up pairs (raw loop and worker, every other pair worker
first), latency, idle cost, scale-out and heartbeat capacity; last, with ``--profile``, a
cProfile of the worker (or ``-X importtime`` for start-up) for every scenario whose target
was missed, so that the report can say where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import procstat
from benchmarks.aggregate import aggregate, latency_pairs, once
from benchmarks.harness import TUNED, Bench, Scenario, defaults, repeated
from benchmarks.result import LEGEND, ROOT, render, render_capacity

__all__ = ["main", "sqs_endpoint"]


@contextlib.contextmanager
def sqs_endpoint(given: str | None) -> Iterator[str]:
    """The endpoint given, or a LocalStack started (and stopped) for the run."""
    with sqs_server(given) as (endpoint, _):
        yield endpoint


SERVER_GC_FREEZE = 1.0
"""Seconds between freezes of the started LocalStack's heap (benchmarks/server_site)."""
SERVER_SQS_METRICS = False
"""Whether the started LocalStack publishes its own SQS CloudWatch metrics (``sqs_server``)."""


@contextlib.contextmanager
def sqs_server(
    given: str | None, gc_log: Path | None = None, freeze: bool = False, sqs_metrics: bool = True
) -> Iterator[tuple[str, int | None]]:
    """(endpoint, server pid): the endpoint given (its pid looked up by port), or a
    LocalStack started (and stopped) for the run; with ``freeze``, its heap frozen every
    ``SERVER_GC_FREEZE`` seconds (its full collections would pause it for up to 1.5 s as
    the heap grows: benchmarks/server_site/sitecustomize.py); its collections that paused it
    for 50 ms or more go to ``gc_log``. Without ``sqs_metrics``, LocalStack does not
    publish its SQS CloudWatch metrics (``SQS_DISABLE_CLOUDWATCH_METRICS``: for every send,
    receive and delete it otherwise sends ``PutMetricData`` to its own CloudWatch through a
    botocore client, about a sixth of its time in a py-spy profile, into a metrics table
    that grows through the run, besides a periodic queue-depth publisher; SQS does that off
    the consumer's path)."""
    if given:
        port = urlsplit(given).port
        yield given, procstat.listening_pid(port) if port else None
        return
    sys.path.insert(0, str(ROOT))
    from tests.servers import LocalStack

    site = [str(ROOT / "benchmarks" / "server_site"), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, site))}
    if freeze:
        env["BENCH_SERVER_GC_FREEZE"] = str(SERVER_GC_FREEZE)
    if gc_log is not None:
        env["BENCH_SERVER_GC_LOG"] = str(gc_log)
    # Set either way, so that the report's record holds whatever the environment had.
    env["SQS_DISABLE_CLOUDWATCH_METRICS"] = "0" if sqs_metrics else "1"
    server = LocalStack(env=env)
    server.start()
    try:
        yield server.endpoint, server.proc.pid if server.proc else None
    finally:
        server.cleanup()


GROUPS = [
    "raw",
    "noop",
    "io",
    "idempotency",
    "block",
    "fifo",
    "startup",
    "latency",
    "idle",
    "scale",
    "heartbeat",
]


async def run(args: argparse.Namespace, endpoint: str, server_pid: int | None) -> Bench:
    from benchmarks.capacity import heartbeat_capacity
    from benchmarks.profiling import profile_scenarios
    from benchmarks.targets import evaluate

    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(endpoint, args.n, workdir, server_pid)
    wanted = set(args.scenarios.split(","))
    unknown = wanted - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
    scenarios = [s for s in repeated(args.raw_concurrency) if s.group in wanted]
    try:
        if wanted & {"raw", "noop", "io", "idempotency", "block", "fifo", "startup", "scale"}:
            # Unmeasured: the first start of each kind reads its files from disk, not the cache.
            print("warm-up", flush=True)
            for sc in (
                Scenario("warmup-raw", "warm-up: raw loop", "raw", raw_handler_ms=0),
                Scenario("warmup", "warm-up: worker", "noop"),
            ):
                await bench.measure(sc, n=50, raw_concurrency=args.raw_concurrency)
            bench.runs.clear()
        if scenarios:
            for rep in range(args.reps):
                print(f"repetition {rep + 1} of {args.reps}", flush=True)
                for sc in in_order(scenarios, rep):
                    await bench.measure(sc, rep, raw_concurrency=args.raw_concurrency)
            bench.results += aggregate(bench.runs, TUNED)
            print(render(bench.results), flush=True)
        if "startup" in wanted:
            print("start-up pairs", flush=True)
            pair = [
                Scenario(
                    "startup-raw",
                    f"start-up: raw loop (C={args.raw_concurrency})",
                    "startup",
                    raw_handler_ms=0,
                ),
                Scenario("startup-worker", "start-up: worker, default settings", "startup"),
            ]
            runs = [
                await bench.measure(sc, rep, n=args.startup_n, raw_concurrency=args.raw_concurrency)
                for rep in range(args.startup_reps)
                for sc in in_order(pair, rep)
            ]
            bench.results += aggregate(runs, {}, raw_key="startup-raw", startup_only=True)
        if "latency" in wanted:
            # The reference polls as the worker's defaults do at this rate: two loops, 20 s polls.
            pairs = [
                (
                    await bench.latency(rate=200, seconds=args.latency_seconds, raw_concurrency=2),
                    await bench.latency(rate=200, seconds=args.latency_seconds),
                )
                for _ in range(args.latency_reps)
            ]
            bench.results += latency_pairs(pairs)
        if "idle" in wanted and args.idle_seconds > 0:
            await bench.idle(args.idle_seconds)
        if "scale" in wanted:
            raw = next((r for r in bench.results if r.key == "raw"), None)
            for processes in args.scale:
                sc = Scenario(
                    f"scale-{processes}",
                    f"scale-out: {processes} worker process(es)",
                    "scale",
                    queue={"pollers": 8, "max_in_flight": 200},
                )
                r = await bench.measure(sc, 0, processes=processes)
                bench.results.append(once(r, raw))
        if "heartbeat" in wanted:
            for latency in args.heartbeat_latencies:
                bench.capacity.append(
                    await heartbeat_capacity(
                        bench, latency, args.heartbeat_n, args.heartbeat_visibility, args.heartbeat_hold
                    )
                )
            print(render_capacity(bench.capacity), flush=True)
        if args.profile != "none":
            targets = evaluate(bench.results, bench.capacity)
            if args.profile == "missed":
                keys = [t.profile for t in targets if t.ok is False and t.profile]
                if any(k != "startup-worker" for k in keys):
                    keys.insert(0, "raw")  # the reference for the per-package comparison
            else:
                keys = args.profile.split(",")
            known = {s.key: s for s in repeated(args.raw_concurrency)}
            startup = Scenario("startup-worker", "start-up: worker, default settings", "startup")
            await profile_scenarios(bench, list(dict.fromkeys(keys)), args, known, startup)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return bench


def in_order(scenarios: list[Scenario], rep: int) -> list[Scenario]:
    """The order of repetition ``rep``: as listed (each raw loop before the scenarios
    compared with it) in even repetitions, reversed (the raw loop after them) in odd ones.
    The machine's speed drifts by tens of percent within a minute on shared cores; with a
    fixed order, whichever runs later in its group would be judged on the drift."""
    return list(scenarios) if rep % 2 == 0 else list(reversed(scenarios))


QUICK = {
    "n": 300,
    "reps": 1,
    "startup_reps": 1,
    "startup_n": 50,
    "latency_seconds": 3.0,
    "latency_reps": 1,
    "idle_seconds": 0.0,
    "scale": [1, 2],
    "heartbeat_n": 40,
    "heartbeat_visibility": 4,
    "heartbeat_hold": 2.5,
    "heartbeat_latencies": [0.3],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark the worker side by side with the raw loop."
    )
    p.add_argument("--endpoint", help="SQS endpoint (default: start LocalStack for the run)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI-size smoke run (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")",
    )
    p.add_argument("--n", type=int, help="messages per measured run (default 5000)")
    p.add_argument(
        "--reps",
        type=int,
        help="interleaved repetitions of the repeated scenarios, every other one in reverse "
        "order (default 5)",
    )
    p.add_argument(
        "--scenarios", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}"
    )
    p.add_argument(
        "--raw-concurrency", type=int, default=16, help="the raw loop's receive loops (default 16)"
    )
    p.add_argument("--startup-reps", type=int, help="raw/worker start-up pairs (default 9)")
    p.add_argument("--startup-n", type=int, help="messages per start-up run (default 200)")
    p.add_argument("--latency-seconds", type=float, help="seconds of sending per latency run (default 10)")
    p.add_argument("--latency-reps", type=int, help="raw/worker latency pairs (default 3)")
    p.add_argument("--idle-seconds", type=float, help="idle measurement (default 60; 0 skips it)")
    p.add_argument(
        "--scale", type=lambda s: [int(x) for x in s.split(",")], help="worker processes (default 1,2,4)"
    )
    p.add_argument(
        "--heartbeat-n", type=int, help="leases held in the heartbeat-capacity runs (default 1000)"
    )
    p.add_argument("--heartbeat-visibility", type=int, help="visibility timeout there (default 6 s)")
    p.add_argument("--heartbeat-hold", type=float, help="hold, in visibility timeouts (default 4)")
    p.add_argument(
        "--heartbeat-latencies",
        type=lambda s: [float(x) for x in s.split(",")],
        help="seconds per ChangeMessageVisibilityBatch call (default 0.05,0.1,0.3,1)",
    )
    p.add_argument(
        "--profile",
        default="none",
        help="'missed' (every scenario whose target was missed), scenario keys (noop-16x500,fifo,"
        "startup-worker...), or 'none' (default): one more run of each under cProfile "
        "(-X importtime for start-up), top 20 into the report",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png")
    p.add_argument("--docs-dir", help="write benchmarks.md and benchmarks.png here instead (implies --docs)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, records)")
    args = p.parse_args(argv)
    defaults: dict[str, Any] = {
        "n": 5000,
        "reps": 5,
        "startup_reps": 9,
        "startup_n": 200,
        "latency_seconds": 10.0,
        "latency_reps": 3,
        "idle_seconds": 60.0,
        "scale": [1, 2, 4],
        "heartbeat_n": 1000,
        "heartbeat_visibility": 6,
        "heartbeat_hold": 4.0,
        "heartbeat_latencies": [0.05, 0.1, 0.3, 1.0],
    }
    for name, value in (QUICK if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def server_version(endpoint: str) -> str:
    """LocalStack's version, from its health endpoint ("?" when it does not say)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as r:
            return str(json.load(r).get("version", "?"))
    except (OSError, ValueError):
        return "?"


def payload(
    bench: Bench,
    args: argparse.Namespace,
    started: float,
    finished: float,
    server: str,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "started": started,
        "server": server,
        "python": platform.python_version(),
        # --keep changes nothing measured: left out, so that ``make bench BENCH_ARGS=--keep``
        # still reads as ``make bench``.
        "command": " ".join(
            [
                "python -m benchmarks",
                *(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--keep"),
            ]
        ),
        # The Makefile's BENCH_PYTHON (its own environment, .cache/bench-venv): which Python.
        "bench_python": (
            f"python{sys.version_info[0]}.{sys.version_info[1]}"
            if os.environ.get("UV_PROJECT_ENVIRONMENT", "").endswith("bench-venv")
            else None
        ),
        "defaults": {k: str(v) for k, v in defaults().items()},
        "minutes": round((finished - started) / 60, 1),
        "args": {
            k: v for k, v in vars(args).items() if k not in ("json", "docs", "docs_dir", "keep", "endpoint")
        },
        "results": [asdict(r) for r in bench.results],
        "capacity": [asdict(c) for c in bench.capacity],
        "profiles": bench.profiles,
        "runs": [asdict(r) for r in bench.runs],
    }


def server_pauses(gc_log: Path | None) -> dict[str, Any] | None:
    """The started server's garbage-collection pauses of 50 ms or more over the run (None:
    a server given by --endpoint, whose collections the bench does not control)."""
    if gc_log is None:
        return None
    lines = gc_log.read_text().split() if gc_log.exists() else []
    millis = [int(ms) for ms in lines[2::3]]
    return {"frozen_every_s": SERVER_GC_FREEZE, "pauses": len(millis), "longest_ms": max(millis, default=0)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    gc_log = None if args.endpoint else Path(tempfile.mkdtemp(prefix="bench-server-")) / "gc.log"
    try:
        with sqs_server(args.endpoint, gc_log, freeze=True, sqs_metrics=SERVER_SQS_METRICS) as (
            endpoint,
            server_pid,
        ):
            server = server_version(endpoint)
            bench = asyncio.run(run(args, endpoint, server_pid))
        gc = server_pauses(gc_log)
    finally:
        if gc_log is not None:
            shutil.rmtree(gc_log.parent, ignore_errors=True)
    data = payload(bench, args, started, time.time(), server, argv)
    data["server_gc"] = gc
    data["server_sqs_metrics"] = None if args.endpoint else SERVER_SQS_METRICS
    print()
    print(render(bench.results))
    print(LEGEND)
    if bench.capacity:
        print()
        print(render_capacity(bench.capacity))
    from benchmarks.targets import evaluate, render_targets

    print()
    print(render_targets(evaluate(bench.results, bench.capacity)))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    if args.docs or args.docs_dir:
        from benchmarks.report import write_docs

        print(f"wrote {write_docs(data, Path(args.docs_dir) if args.docs_dir else None)}")
    bad = [r.scenario for r in bench.results if r.losses or r.duplicates]
    bad += [f"heartbeat at {c.latency:g} s/call" for c in bench.capacity if c.losses or c.duplicates]
    if bad:
        print(f"duplicates or losses in: {bad}", file=sys.stderr)
        return 1
    return 0
