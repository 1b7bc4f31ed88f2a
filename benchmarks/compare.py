"""Side-by-side runs against other SQS consumers: the numbers of the comparison page.

    python -m benchmarks.compare                 # starts LocalStack unless --endpoint is given
    python -m benchmarks.compare --quick         # a tiny N, one repetition (the test's smoke run)
    make compare                            # --docs --json benchmarks/compare-results.json

One run, one LocalStack, one counting proxy (``benchmarks/proxy.py``), the same N messages for
every consumer. Each repetition runs, for the no-op handler and then the 50 ms I/O handler,
the raw aiobotocore loop first (the reference: ``benchmarks/raw.py``), then this worker with
default settings (the existing ``noop-default`` / ``io-default`` scenarios of
``benchmarks/harness.py``), Celery on SQS and sqs-consumer (``benchmarks/external.py`` installs them
into ``.cache/compare``); every ratio is taken to the raw loop of the same repetition and
handler, then the median over the repetitions is reported (``benchmarks/aggregate.py``).

Every consumer is measured the same way: a fresh queue is loaded with N messages before
its process starts (consumption only: Celery's are Celery's own task messages, captured
from ``send_task``); the clock starts just before the process does; its handler records the
first message (monotonic time and the process's CPU then) and every message it completed;
the run ends at the delete that completes N (the proxy's count). Throughput is N over first
message to that delete (and over process start to it), CPU per message the process's CPU
between the two (/proc), requests per message the proxy's count; a message its handler never
completed is lost, one completed twice a duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiobotocore.session import get_session

from benchmarks import procstat
from benchmarks.aggregate import Run, aggregate
from benchmarks.external import CONSUMERS, InstallError, Node, celery_info, ensure_celery, ensure_node
from benchmarks.harness import Bench, Scenario, defaults, repeated
from benchmarks.procstat import Sample, hwm_mb
from benchmarks.result import Result
from benchmarks.run import server_version, sqs_server

__all__ = ["CONSUMER_KEYS", "HANDLERS", "main"]

CONSUMER_KEYS = ["raw", "worker", "celery", "sqs-consumer"]
HANDLERS = {"noop": "no-op handler", "io": "50 ms I/O handler"}
NOT_RUN = {
    "Shoryuken (Ruby)": "not run here: RubyGems is not reachable from these machines",
    "Spring Cloud AWS (Java)": "not run here: Maven Central is not reachable from these machines",
    "AWS Lambda (SQS event source)": "not run here: LocalStack runs Lambda functions in Docker, "
    "which these machines do not have",
}
CELERY_QUEUE = "bench-celery"
"""Celery's queue name (its messages carry it): every run maps it to that run's queue URL
with ``predefined_queues``."""


@dataclass
class Consumer:
    key: str
    label: str
    settings: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    handlers: dict[str, str] = field(default_factory=dict)
    """How each handler is written in this consumer."""


class External(Protocol):
    consumer: Consumer

    async def preload(self, bench: Bench, url: str, handler: str, n: int) -> None: ...

    def spawn(self, bench: Bench, url: str, handler: str, record: Path) -> subprocess.Popen[bytes]: ...


def proxied(bench: Bench, url: str) -> str:
    """The queue URL on the proxy's host (SDKs that send to the queue URL go through it)."""
    return bench.proxy.url + urlsplit(url).path


def _start(cmd: list[str], cwd: Path, record: Path) -> subprocess.Popen[bytes]:
    """The consumer's process: output to the record's .log, $BENCH_RECORD set."""
    with open(record.with_suffix(".log"), "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, "BENCH_RECORD": str(record)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


class Celery:
    def __init__(self, python: Path, workdir: Path, concurrency: int, loglevel: str) -> None:
        self.python = python
        self.workdir = workdir
        self.options = {"concurrency": concurrency, "loglevel": loglevel}
        info = celery_info(python, **self.options)
        settings = info["settings"]
        self.consumer = Consumer(
            "celery",
            "Celery on SQS",
            {
                **settings,
                "broker_url": "sqs://bench:bench@<proxy>",
                "broker_transport_options": {
                    "region": "us-east-1",
                    "is_secure": False,
                    "predefined_queues": {CELERY_QUEUE: {"url": "<the run's queue>"}},
                    "wait_time_seconds": settings["wait_time_seconds"],
                    "polling_interval": settings["polling_interval"],
                    "visibility_timeout": settings["visibility_timeout"],
                },
                "task_ignore_result": True,
                "receives": "one ReceiveMessage (up to 10) in flight per queue (kombu's SQS channel, "
                "pycurl); one DeleteMessage per message when its task returns (acks_late)",
                "program": "benchmarks/consumers/celery_app.py (app.worker_main)",
            },
            {k: str(v).split(" ")[0] for k, v in info["versions"].items()},
            {
                "noop": "a task that returns",
                "io": "a task that calls time.sleep(0.05) (sync, in a pool thread)",
            },
        )
        self._bodies: dict[str, list[dict[str, Any]]] = {}

    def bodies(self, handler: str, n: int) -> list[dict[str, Any]]:
        """Celery's own SendMessage arguments for tasks 0..n-1 (produced once per handler)."""
        have = self._bodies.get(handler, [])
        if len(have) < n:
            out = subprocess.run(
                [
                    str(self.python),
                    str(CONSUMERS / "celery_app.py"),
                    "produce",
                    "--queue",
                    CELERY_QUEUE,
                    "--task",
                    handler,
                    "--n",
                    str(n),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            have = self._bodies[handler] = [json.loads(line) for line in out.stdout.splitlines() if line]
        return have[:n]

    async def preload(self, bench: Bench, url: str, handler: str, n: int) -> None:
        await send_all(bench.endpoint, url, self.bodies(handler, n))

    def spawn(self, bench: Bench, url: str, handler: str, record: Path) -> subprocess.Popen[bytes]:
        cmd = [
            str(self.python),
            str(CONSUMERS / "celery_app.py"),
            "worker",
            "--broker",
            f"sqs://bench:bench@127.0.0.1:{bench.proxy.port}",
            "--queue",
            CELERY_QUEUE,
            "--url",
            proxied(bench, url),
            *(f"--{k}={v}" for k, v in self.options.items()),
        ]
        return _start(cmd, self.workdir, record)


class SqsConsumer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.consumer = Consumer(
            "sqs-consumer",
            "sqs-consumer (Node.js)",
            {
                "batchSize": 10,
                "other options": "defaults (waitTimeSeconds 20, pollingWaitTimeMs 0, "
                "alwaysAcknowledge false, shouldDeleteMessages true: one DeleteMessage per message)",
                "sqs": "new SQSClient({endpoint: <proxy>, region: 'us-east-1'}) (AWS SDK v3)",
                "receives": "one ReceiveMessage (batchSize) in flight; the next once the batch is "
                "handled (in parallel) and deleted",
                "program": "benchmarks/consumers/sqs_consumer.mjs",
            },
            {"node": node.version(), **node.package_versions()},
            {
                "noop": "async handleMessage that returns the message",
                "io": "async handleMessage that awaits a 50 ms setTimeout, then returns the message",
            },
        )

    async def preload(self, bench: Bench, url: str, handler: str, n: int) -> None:
        await bench.preload(url, n, handler)

    def spawn(self, bench: Bench, url: str, handler: str, record: Path) -> subprocess.Popen[bytes]:
        ms = 50 if handler == "io" else 0
        cmd = [str(self.node.node), str(self.node.program), bench.proxy.url, proxied(bench, url), str(ms)]
        return _start(cmd, self.node.prefix, record)


async def send_all(endpoint: str, url: str, entries: list[dict[str, Any]]) -> None:
    """SendMessageBatch of the given messages, ten at a time, 16 batches at once."""
    async with get_session().create_client("sqs", endpoint_url=endpoint, region_name="us-east-1") as sqs:
        sem = asyncio.Semaphore(16)

        async def batch(start: int) -> None:
            chunk = [{"Id": str(i), **e} for i, e in enumerate(entries[start : start + 10])]
            async with sem:
                r = await sqs.send_message_batch(QueueUrl=url, Entries=chunk)
                assert not r.get("Failed"), r.get("Failed")

        await asyncio.gather(*(batch(s) for s in range(0, len(entries), 10)))


async def measure_external(
    bench: Bench, ext: External, handler: str, key: str, name: str, rep: int, n: int
) -> Run:
    """One run of an external consumer, recorded as ``Bench.measure`` records the worker's."""
    _, url = await bench.queue()
    await ext.preload(bench, url, handler, n)
    bench.proxy.faults()
    bench.proxy.reset()
    record = bench.workdir / f"{key}-{uuid.uuid4().hex[:6]}.json"
    samples: list[Sample] = [bench.sample()]
    start = time.monotonic()
    proc = ext.spawn(bench, url, handler, record)
    try:
        counts = bench.wait_deleted(n, [proc], timeout=max(300.0, n / 5), samples=samples)
    except Exception:
        proc.kill()
        proc.wait()
        print(record.with_suffix(".log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    cpu_done = procstat.cpu_seconds(proc.pid)
    peak = hwm_mb(proc.pid)
    ((total_cpu, rss),) = bench.stop([proc])
    data = json.loads(record.read_text()) if record.exists() else {}
    seen = [str(s) for s in data.get("seen", [])]
    mark = data.get("first") or None
    first = float(mark[0]) if mark else None
    window_cpu = max(0.0, (cpu_done if cpu_done is not None else total_cpu) - (float(mark[1]) if mark else 0))
    last = max(float(counts["last"].get(op, 0.0)) for op in ("DeleteMessage", "DeleteMessageBatch"))
    run = Run(
        key=key,
        scenario=name,
        rep=rep,
        messages=n,
        start=start,
        first=first,
        last=last or time.monotonic(),
        window_cpu=window_cpu,
        startup_cpu=float(mark[1]) if mark else None,
        total_cpu=total_cpu,
        requests=int(counts["total"]),
        worker_requests=None,
        rss=max(rss, peak),
        duplicates=len(seen) - len(set(seen)),
        losses=n - len(set(seen)),
        window=procstat.window(samples, first if first is not None else start, last),
        extra={"left_in_queue": await bench.depth(url), "recorded": bool(data)},
    )
    await bench.delete_queue(url)
    bench.runs.append(run)
    print(f"  rep {rep + 1}: {run.describe()}", flush=True)
    return run


@dataclass
class Comparison:
    args: argparse.Namespace
    consumers: dict[str, Consumer]
    skipped: dict[str, str]
    results: list[Result] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)


def builtin_consumers(raw_concurrency: int) -> dict[str, Consumer]:
    import aiobotocore

    from worker import __version__ as worker_version

    return {
        "raw": Consumer(
            "raw",
            "raw aiobotocore loop",
            {
                "receive loops (C)": raw_concurrency,
                "each loop": "ReceiveMessage (10, WaitTimeSeconds 1), handle the ten at once, "
                "one DeleteMessageBatch",
                "program": "benchmarks/raw.py",
            },
            {"aiobotocore": aiobotocore.__version__, "python": platform.python_version()},
            {"noop": "nothing", "io": "await asyncio.sleep(0.05) per message"},
        ),
        "worker": Consumer(
            "worker",
            "this worker",
            {
                **{k: str(v) for k, v in defaults().items()},
                "settings": "defaults (queue name and handlers only)",
                "log": "info, JSON: the per-message message_succeeded line is on",
                "program": "worker run --config ... (the console script)",
            },
            {"sqs-worker": worker_version, "python": platform.python_version()},
            {"noop": "async handler that returns", "io": "async handler: await asyncio.sleep(0.05)"},
        ),
    }


def install(
    wanted: list[str], args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """The external consumers wanted, installed; and those that could not be, with why."""
    ready: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if "celery" in wanted:
        try:
            ready["celery"] = Celery(ensure_celery(), workdir, args.celery_concurrency, args.celery_loglevel)
        except InstallError as exc:
            skipped["celery"] = f"Celery could not be installed: {exc}"
    if "sqs-consumer" in wanted:
        try:
            ready["sqs-consumer"] = SqsConsumer(ensure_node())
        except InstallError as exc:
            skipped["sqs-consumer"] = f"Node.js or sqs-consumer could not be installed: {exc}"
    for key, why in skipped.items():
        print(f"skipped {key}: {why}", file=sys.stderr, flush=True)
    return ready, skipped


def row_key(consumer: str, handler: str) -> str:
    builtin = {
        ("raw", "noop"): "raw",
        ("raw", "io"): "raw-io",
        ("worker", "noop"): "noop-default",
        ("worker", "io"): "io-default",
    }
    return builtin.get((consumer, handler), f"{consumer}-{handler}")


async def run(args: argparse.Namespace, endpoint: str, server_pid: int | None) -> Comparison:
    wanted = args.consumers.split(",")
    handlers = args.handlers.split(",")
    unknown = (set(wanted) - set(CONSUMER_KEYS)) | (set(handlers) - set(HANDLERS))
    if unknown:
        raise SystemExit(f"unknown consumers or handlers: {', '.join(sorted(unknown))}")
    if "raw" not in wanted:
        raise SystemExit("the raw loop is the reference of every ratio: keep 'raw' in --consumers")
    workdir = Path(tempfile.mkdtemp(prefix="compare-"))
    externals, skipped = install(wanted, args, workdir)
    consumers = builtin_consumers(args.raw_concurrency)
    consumers = {k: consumers[k] for k in wanted if k in consumers}
    consumers |= {k: e.consumer for k, e in externals.items()}
    order = [k for k in CONSUMER_KEYS if k in consumers]
    scenarios = {s.key: s for s in repeated(args.raw_concurrency)}
    bench = Bench(endpoint, args.n, workdir, server_pid)

    def name(consumer: str, handler: str) -> str:
        return f"{consumers[consumer].label}, {HANDLERS[handler]}"

    async def one(consumer: str, handler: str, rep: int, n: int) -> Run:
        key = row_key(consumer, handler)
        if consumer in externals:
            return await measure_external(
                bench, externals[consumer], handler, key, name(consumer, handler), rep, n
            )
        sc: Scenario = scenarios[key]
        return await bench.measure(
            sc, rep, n=n, raw_concurrency=args.raw_concurrency, scenario=name(consumer, handler)
        )

    comparison = Comparison(args, consumers, skipped)
    try:
        if args.warmup:
            # Unmeasured: the first start of each reads its files from disk, not the cache.
            print("warm-up", flush=True)
            for consumer in order:
                await one(consumer, "noop", 0, min(50, args.n))
            bench.runs.clear()
        for rep in range(args.reps):
            print(f"repetition {rep + 1} of {args.reps}", flush=True)
            for handler in handlers:
                for consumer in order:
                    await one(consumer, handler, rep, args.n)
        for handler in handlers:
            keys = {row_key(c, handler): c for c in order}
            runs = [r for r in bench.runs if r.key in keys]
            for result in aggregate(runs, {}, raw_key=row_key("raw", handler)):
                for drop in ("x_raw_io", "x_raw_io_with_startup", "recorded"):
                    result.extra.pop(drop, None)
                result.extra["consumer"] = keys[result.key]
                result.extra["handler"] = handler
                comparison.results.append(result)
        comparison.runs = list(bench.runs)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return comparison


def machine() -> dict[str, Any]:
    from benchmarks.report import _cpu_model

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def payload(c: Comparison, started: float, server: str, argv: list[str] | None) -> dict[str, Any]:
    return {
        "date": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "started": started,
        "minutes": round((time.time() - started) / 60, 1),
        "command": " ".join(["python -m benchmarks.compare", *(argv if argv is not None else sys.argv[1:])]),
        "server": f"LocalStack {server}",
        "machine": machine(),
        "n": c.args.n,
        "reps": c.args.reps,
        "handlers": c.args.handlers.split(","),
        "consumers": {k: asdict(v) for k, v in c.consumers.items()},
        "skipped": c.skipped,
        "not_run": NOT_RUN,
        "results": [asdict(r) for r in c.results],
        "runs": [asdict(r) for r in c.runs],
    }


QUICK = {"n": 100, "reps": 1, "warmup": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="The raw loop, this worker, Celery on SQS and sqs-consumer, side by side.",
    )
    p.add_argument("--endpoint", help="SQS endpoint (default: start LocalStack for the run)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")",
    )
    p.add_argument("--n", type=int, help="messages per run (default 5000)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3)")
    p.add_argument(
        "--consumers", default=",".join(CONSUMER_KEYS), help="subset of " + ",".join(CONSUMER_KEYS)
    )
    p.add_argument("--handlers", default=",".join(HANDLERS), help="subset of " + ",".join(HANDLERS))
    p.add_argument("--raw-concurrency", type=int, default=16, help="the raw loop's receive loops (16)")
    p.add_argument("--celery-concurrency", type=int, default=32, help="Celery's threads (32)")
    p.add_argument("--celery-loglevel", default="INFO", help="Celery's log level (INFO)")
    p.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="an unmeasured run of each first",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--docs", action="store_true", help="write docs/comparison-numbers.md")
    p.add_argument("--docs-dir", help="write comparison-numbers.md here instead (implies --docs)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (records, logs)")
    args = p.parse_args(argv)
    full = {"n": 5000, "reps": 3, "warmup": True}
    for k, v in (QUICK if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks.compare_report import render_markdown, write_docs

    args = parse_args(argv)
    started = time.time()
    with sqs_server(args.endpoint) as (endpoint, server_pid):
        server = server_version(endpoint)
        comparison = asyncio.run(run(args, endpoint, server_pid))
    data = payload(comparison, started, server, argv)
    print()
    print(render_markdown(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if args.docs or args.docs_dir:
        print(f"wrote {write_docs(data, Path(args.docs_dir) if args.docs_dir else None)}")
    bad = [r.scenario for r in comparison.results if r.losses or r.duplicates]
    if bad:
        print(f"duplicates or losses in: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
