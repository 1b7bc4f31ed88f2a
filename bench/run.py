"""The benchmark: every scenario against LocalStack, side by side with the raw API ceiling.

    python -m bench                      # starts LocalStack unless --endpoint is given
    python -m bench --n 2000 --scenarios raw,noop --json out.json

Each scenario pre-loads N messages into a fresh queue, starts the consumer (the raw loop or
the worker, each its own process, behind a counting proxy) and measures from its first
ReceiveMessage to the delete that completes N. Reported per scenario: messages/s, the
ratio to the raw ceiling of the same run, SQS requests per message (counted by the proxy,
cross-checked with the worker's own count), CPU seconds per 1,000 messages and peak RSS of
the consumer process, duplicates and losses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from bench.result import ROOT, Result, render
from worker.aws import AwsClient
from worker.ops.queue_stats import queue_counts

PY = sys.executable
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def hwm_mb(pid: int) -> float:
    """Peak resident set size of a running process (VmHWM), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "bench.proxy", "--port", "0", "--upstream", upstream],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, action: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(
            f"{self.url}/__proxy/{action}", data=body, method="POST" if body else "GET"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            result: dict[str, Any] = json.load(r)
            return result

    def counts(self) -> dict[str, Any]:
        return self._call("counts")

    def reset(self) -> None:
        self._call("reset", {})

    def faults(self, **faults: Any) -> None:
        """Replace the faults (bench/proxy.py lists them), e.g. ``faults(latency=0.05,
        op_latency={"ChangeMessageVisibilityBatch": 0.3}, blackhole_ops={"DeleteMessageBatch": 1})``;
        ``faults()`` clears them all."""
        self._call("faults", faults)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Bench:
    def __init__(self, endpoint: str, n: int, workdir: Path) -> None:
        self.endpoint = endpoint
        self.n = n
        self.workdir = workdir
        self.proxy = Proxy(endpoint)
        self.results: list[Result] = []
        self.raw_rate: float | None = None

    # -- queues --------------------------------------------------------------------------
    async def queue(self, fifo: bool = False) -> tuple[str, str]:
        name = f"bench-{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
        attrs = {"VisibilityTimeout": "60"}
        if fifo:
            attrs |= {"FifoQueue": "true"}
        async with self._sqs() as sqs:
            url = (await sqs.create_queue(QueueName=name, Attributes=attrs))["QueueUrl"]
        return name, url

    def _sqs(self) -> Any:
        return get_session().create_client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")

    async def preload(self, url: str, n: int, message_type: str, groups: int = 0) -> None:
        async with self._sqs() as sqs:
            sem = asyncio.Semaphore(16)

            async def batch(start: int) -> None:
                entries = []
                for i in range(start, min(n, start + 10)):
                    e: dict[str, Any] = {
                        "Id": str(i - start),
                        "MessageBody": json.dumps({"seq": i // groups if groups else i}),
                        "MessageAttributes": {"type": {"DataType": "String", "StringValue": message_type}},
                    }
                    if groups:
                        e["MessageGroupId"] = f"g{i % groups}"
                        e["MessageDeduplicationId"] = f"d{i}"
                    entries.append(e)
                async with sem:
                    r = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
                    assert not r.get("Failed"), r.get("Failed")

            if groups:  # FIFO: keep each group's order, one batch after another
                for start in range(0, n, 10):
                    await batch(start)
            else:
                await asyncio.gather(*(batch(s) for s in range(0, n, 10)))

    async def depth(self, url: str) -> int:
        async with self._sqs() as sqs:
            return sum(await queue_counts(AwsClient(sqs), url))

    # -- processes -----------------------------------------------------------------------
    def worker_config(self, name: str, **queue: Any) -> Path:
        q = {"name": name, "handlers": ["bench.handlers"], **queue}
        config = {
            "aws": {"endpoint_url": self.proxy.url, "region": "us-east-1"},
            "log": {"level": "info", "summary_interval": 3600},
            "shutdown_grace": 10,
            "queues": {"bench": q},
        }
        path = self.workdir / f"worker-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def spawn_worker(
        self, config: Path, record: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(record.with_suffix(".log"), "wb")  # noqa: SIM115 - closed when the process ends
        env = {**os.environ, "BENCH_RECORD": str(record), **(extra_env or {})}
        return subprocess.Popen(
            [PY, "-m", "worker", "run", "--config", str(config), "--log-format", "json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    @staticmethod
    def reap(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[float, float]:
        """Wait for the process; (CPU seconds, peak RSS in MB).

        The peak is the process's own VmHWM, read while it runs: wait4's ru_maxrss would
        include the parent's memory from before exec."""
        deadline = time.monotonic() + timeout
        peak = 0.0
        while time.monotonic() < deadline:
            peak = max(peak, hwm_mb(proc.pid))
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = 0
                return usage.ru_utime + usage.ru_stime, peak
            time.sleep(0.05)
        proc.kill()
        _, _, usage = os.wait4(proc.pid, 0)
        return usage.ru_utime + usage.ru_stime, peak

    def wait_deleted(self, n: int, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.proxy.counts()
            if counts["deleted"] >= n:
                return counts
            time.sleep(0.05)
        raise TimeoutError(f"only {self.proxy.counts()['deleted']} of {n} deleted in {timeout}s")

    # -- measurements --------------------------------------------------------------------
    def _finish(
        self, scenario: str, n: int, counts: dict[str, Any], cpu: float, rss: float, records: list[Path]
    ) -> Result:
        seconds = counts["last"]["DeleteMessageBatch"] - counts["first"]["ReceiveMessage"]
        seen: list[str] = []
        worker_calls = 0
        for record in records:
            if record.exists():
                seen += json.loads(record.read_text())["seen"]
            log = record.with_suffix(".log")
            if log.exists():
                for line in log.read_text().splitlines():
                    if '"shutdown_complete"' in line:
                        worker_calls += sum(json.loads(line).get("api_calls", {}).values())
        result = Result(
            scenario=scenario,
            messages=n,
            seconds=round(seconds, 3),
            rate=round(n / seconds, 1),
            requests_per_message=round(counts["total"] / n, 4),
            worker_requests_per_message=round(worker_calls / n, 4) if records else None,
            cpu_per_1000=round(cpu / n * 1000, 3),
            peak_rss_mb=round(rss, 1),
            duplicates=len(seen) - len(set(seen)) if records else 0,
            losses=n - len(set(seen)) if records else max(0, n - counts["deleted"]),
        )
        if self.raw_rate:
            result.ratio = round(result.rate / self.raw_rate, 3)
        self.results.append(result)
        print(render([result], header=False), flush=True)
        return result

    async def raw(self, concurrencies: list[int]) -> Result:
        best: Result | None = None
        for c in concurrencies:
            _, url = await self.queue()
            await self.preload(url, self.n, "noop")
            self.proxy.reset()
            proc = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "bench.raw",
                    "--endpoint",
                    self.proxy.url,
                    "--url",
                    url,
                    "--n",
                    str(self.n),
                    "--concurrency",
                    str(c),
                ],
                cwd=ROOT,
            )
            cpu, rss = self.reap(proc, timeout=600)
            counts = self.proxy.counts()
            result = self._finish(f"raw ceiling (C={c})", self.n, counts, cpu, rss, [])
            self.results.remove(result)
            if best is None or result.rate > best.rate:
                best = result
        assert best is not None
        self.raw_rate = best.rate
        best.ratio = 1.0
        best.extra["concurrency_tried"] = concurrencies
        self.results.append(best)
        return best

    async def worker(
        self,
        scenario: str,
        message_type: str = "noop",
        fifo_groups: int = 0,
        processes: int = 1,
        **queue: Any,
    ) -> Result:
        name, url = await self.queue(fifo=bool(fifo_groups))
        await self.preload(url, self.n, message_type, groups=fifo_groups)
        self.proxy.reset()
        config = self.worker_config(name, **queue)
        records = [self.workdir / f"rec-{uuid.uuid4().hex[:6]}.json" for _ in range(processes)]
        procs = [self.spawn_worker(config, r) for r in records]
        counts = self.wait_deleted(self.n)
        peaks = [hwm_mb(p.pid) for p in procs]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        usage = [self.reap(p) for p in procs]
        cpu = sum(u[0] for u in usage)
        rss = max(max(u[1] for u in usage), *peaks)
        result = self._finish(scenario, self.n, counts, cpu, rss, records)
        result.extra["config"] = queue
        if processes > 1:
            result.extra["processes"] = processes
        if fifo_groups:
            order: list[tuple[str, int]] = []
            for r in records:
                order += [(str(g), int(q)) for g, q in json.loads(r.read_text())["fifo"]]
            last: dict[str, int] = {}
            violations = 0
            for group, seq in order:
                if seq < last.get(group, -1):
                    violations += 1
                last[group] = seq
            result.extra["order_violations"] = violations
        result.extra["left_in_queue"] = await self.depth(url)
        return result

    async def latency(self, rate: float = 200, seconds: float = 15, **queue: Any) -> Result:
        name, url = await self.queue()
        self.proxy.reset()
        record = self.workdir / f"lat-{uuid.uuid4().hex[:6]}.json"
        proc = self.spawn_worker(self.worker_config(name, **queue), record)
        await asyncio.sleep(3)  # started and long-polling
        total = int(rate * seconds)
        async with self._sqs() as sqs:
            in_flight = asyncio.Semaphore(32)

            async def send_one() -> None:
                async with in_flight:
                    await sqs.send_message(
                        QueueUrl=url,
                        MessageBody=json.dumps({"t": time.time()}),
                        MessageAttributes={"type": {"DataType": "String", "StringValue": "latency"}},
                    )

            start = time.monotonic()
            sends = []
            for i in range(total):  # a steady rate: each send starts at its own time
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sends.append(asyncio.create_task(send_one()))
            await asyncio.gather(*sends)
            sent_rate = total / (time.monotonic() - start)
        counts = self.wait_deleted(total, timeout=120)
        peak = hwm_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        cpu, rss = self.reap(proc)
        rss = max(rss, peak)
        data = json.loads(record.read_text())
        lat = sorted(data["latencies"])
        q = statistics.quantiles(lat, n=100)
        result = Result(
            scenario=f"latency at {rate:g} msg/s",
            messages=total,
            seconds=round(seconds, 1),
            rate=round(sent_rate, 1),
            requests_per_message=round(counts["total"] / total, 4),
            cpu_per_1000=round(cpu / total * 1000, 3),
            peak_rss_mb=round(rss, 1),
            duplicates=len(data["seen"]) - len(set(data["seen"])),
            losses=total - len(set(data["seen"])),
            extra={
                "p50_ms": round(q[49] * 1000, 1),
                "p95_ms": round(q[94] * 1000, 1),
                "p99_ms": round(q[98] * 1000, 1),
            },
        )
        self.results.append(result)
        print(render([result], header=False), flush=True)
        return result

    async def idle(self, seconds: float, pollers: int = 2) -> Result:
        name, _ = await self.queue()
        record = self.workdir / f"idle-{uuid.uuid4().hex[:6]}.json"
        proc = self.spawn_worker(self.worker_config(name, pollers=pollers, wait_time_seconds=20), record)
        time.sleep(3)
        self.proxy.reset()
        time.sleep(seconds)
        counts = self.proxy.counts()
        peak = hwm_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, rss = self.reap(proc)
        rss = max(rss, peak)
        per_minute = counts["total"] / (seconds / 60) / pollers
        result = Result(
            scenario="idle (per poller, 20 s polls)",
            messages=0,
            seconds=seconds,
            rate=0.0,
            peak_rss_mb=round(rss, 1),
            extra={"requests_per_minute_per_poller": round(per_minute, 2)},
        )
        self.results.append(result)
        print(render([result], header=False), flush=True)
        return result


@contextlib.contextmanager
def sqs_endpoint(given: str | None) -> Iterator[str]:
    """The endpoint given, or a LocalStack started (and stopped) for the run."""
    if given:
        yield given
        return
    sys.path.insert(0, str(ROOT))
    from tests.servers import LocalStack

    server = LocalStack()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.cleanup()


ALL = ["raw", "noop", "io", "block", "fifo", "latency", "idle", "scale"]


async def run(args: argparse.Namespace, endpoint: str) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(endpoint, args.n, workdir)
    wanted = args.scenarios.split(",")
    print(render([], header=True), flush=True)
    try:
        if "raw" in wanted:
            await bench.raw([int(c) for c in args.raw_concurrency.split(",")])
        if "noop" in wanted:
            await bench.worker("no-op, default settings", "noop")
            best = [
                await bench.worker(f"no-op, {p} pollers, {m} in flight", "noop", pollers=p, max_in_flight=m)
                for p, m in ((8, 200), (16, 320))
            ]
            for r in best:  # report the better one as "best settings"
                bench.results.remove(r)
            top = max(best, key=lambda r: r.rate)
            top.extra["best_of"] = [r.scenario.removeprefix("no-op, ") for r in best]
            top.scenario = "no-op, best settings"
            bench.results.append(top)
        if "io" in wanted:
            for inflight in (100, 500, 1000):
                await bench.worker(
                    f"50 ms I/O handler, {inflight} in flight",
                    "io",
                    pollers=max(2, inflight // 50),
                    max_in_flight=inflight,
                )
        if "block" in wanted:
            await bench.worker("20 ms blocking handler, 32 threads", "block", pollers=4, max_in_flight=64)
        if "fifo" in wanted:
            await bench.worker(
                "FIFO, 100 groups, no-op", "fifo", fifo_groups=100, pollers=8, max_in_flight=200
            )
        if "latency" in wanted:
            await bench.latency(rate=200, seconds=args.latency_seconds)
        if "idle" in wanted and args.idle_seconds > 0:
            await bench.idle(args.idle_seconds)
        if "scale" in wanted:
            for processes in (1, 2, 4):
                await bench.worker(
                    f"scale-out: {processes} worker process(es)",
                    "noop",
                    processes=processes,
                    pollers=8,
                    max_in_flight=200,
                )
    finally:
        bench.proxy.stop()
    return bench.results


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the worker against the raw API ceiling."
    )
    p.add_argument("--endpoint", help="SQS endpoint (default: start LocalStack for the run)")
    p.add_argument("--n", type=int, default=20_000, help="messages per scenario (default 20000)")
    p.add_argument("--scenarios", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--raw-concurrency", default="4,8,16,32", help="concurrencies tried for the raw ceiling")
    p.add_argument("--latency-seconds", type=float, default=15)
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png")
    args = p.parse_args()
    started = time.time()
    with sqs_endpoint(args.endpoint) as endpoint:
        results = asyncio.run(run(args, endpoint))
    print()
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.docs:
        from bench.report import write_docs

        write_docs(results, args, started)
    bad = [r.scenario for r in results if r.losses or r.duplicates]
    if bad:
        print(f"duplicates or losses in: {bad}", file=sys.stderr)
        return 1
    return 0
