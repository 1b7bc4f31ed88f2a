"""The benchmark harness: the counting proxy, the scenarios, and ``Bench``, which starts
worker and raw-loop processes against one server and measures them (``benchmarks/run.py`` runs
it; ``benchmarks/capacity.py`` and ``benchmarks/profiling.py`` drive it for their checks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks import moto_server, procstat
from benchmarks.aggregate import STORE_CALLS, Run, worker_log_events
from benchmarks.procstat import Sample, hwm_mb
from benchmarks.result import ROOT, TUNED, Capacity, Result, render

__all__ = [
    "PY",
    "TUNED",
    "WORKER_SCRIPT",
    "Bench",
    "Proxy",
    "Scenario",
    "defaults",
    "idle_pollers",
    "repeated",
]

PY = sys.executable
WORKER_SCRIPT = Path(PY).parent / "worker"
"""The ``worker`` console script: the command users run."""
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "benchmarks.proxy", "--port", "0", "--upstream", upstream],
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
        """Replace the faults (benchmarks/proxy.py lists them), e.g. ``faults(latency=0.05,
        op_latency={"ChangeMessageVisibilityBatch": 0.3}, blackhole_ops={"DeleteMessageBatch": 1})``;
        ``faults()`` clears them all."""
        self._call("faults", faults)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass(frozen=True)
class Scenario:
    """One consumer configuration: the raw loop or the worker, a handler, queue settings."""

    key: str
    name: str
    group: str
    """What ``--scenarios`` selects it by."""
    message_type: str = "noop"
    raw_handler_ms: float | None = None
    """Set: the raw loop (with this much asyncio sleep per message); else the worker."""
    raw_threads: int = 0
    """The raw loop's handler blocks (``time.sleep``) in a pool of this many threads."""
    raw_worker_receive: bool = False
    """The raw loop asks for what the worker's receive asks for (``benchmarks/raw.py --worker-receive``)."""
    fifo_groups: int = 0
    queue: dict[str, Any] = field(default_factory=dict)
    """The worker's queue settings; {} is the worker's defaults."""
    idempotent: bool = False
    """Run with a DynamoDB idempotency store (moto's server, started by the bench)."""


def repeated(raw_concurrency: int) -> list[Scenario]:
    c = raw_concurrency
    return [
        Scenario("raw", f"raw loop, no-op (C={c})", "raw", raw_handler_ms=0),
        Scenario("noop-default", "no-op, default settings", "noop"),
        Scenario(
            "noop-8x200",
            "no-op, 8 pollers, 200 in flight",
            "noop",
            queue={"pollers": 8, "max_in_flight": 200},
        ),
        Scenario(
            "noop-16x500",
            "no-op, 16 pollers, 500 in flight",
            "noop",
            queue={"pollers": 16, "max_in_flight": 500},
        ),
        Scenario("raw-io", f"raw loop, 50 ms I/O (C={c})", "io", "io", raw_handler_ms=50),
        Scenario("io-default", "50 ms I/O, default settings", "io", "io"),
        Scenario(
            "io-10x500",
            "50 ms I/O, 10 pollers, 500 in flight",
            "io",
            "io",
            queue={"pollers": 10, "max_in_flight": 500},
        ),
        Scenario(
            "io-20x1000",
            "50 ms I/O, 20 pollers, 1000 in flight",
            "io",
            "io",
            queue={"pollers": 20, "max_in_flight": 1000},
        ),
        Scenario(
            "noop-idempotent",
            "no-op, idempotent (DynamoDB store)",
            "idempotency",
            "noop-idem",
            idempotent=True,
        ),
        Scenario(
            "raw-block",
            f"raw loop, 20 ms blocking, 32 threads (C={c})",
            "block",
            "block",
            raw_handler_ms=20,
            raw_threads=32,
        ),
        Scenario("block", "20 ms blocking, 32 threads, default settings", "block", "block"),
        Scenario(
            "raw-fifo",
            f"raw loop, FIFO, 100 groups (C={c})",
            "fifo",
            "fifo",
            raw_handler_ms=0,
            fifo_groups=100,
        ),
        Scenario(
            "raw-fifo-attrs",
            f"raw loop, FIFO, 100 groups, asking what the worker asks (C={c})",
            "fifo",
            "fifo",
            raw_handler_ms=0,
            fifo_groups=100,
            raw_worker_receive=True,
        ),
        Scenario(
            "fifo",
            "FIFO, 100 groups, no-op",
            "fifo",
            "fifo",
            fifo_groups=100,
            queue={"pollers": 8, "max_in_flight": 200},
        ),
        Scenario(
            "fifo-default", "FIFO, 100 groups, no-op, default settings", "fifo", "fifo", fifo_groups=100
        ),
    ]


class Bench:
    def __init__(self, endpoint: str, n: int, workdir: Path, server_pid: int | None = None) -> None:
        self.endpoint = endpoint
        self.n = n
        self.workdir = workdir
        self.proxy = Proxy(endpoint)
        self._dynamodb: str | None = None
        self._moto: subprocess.Popen[bytes] | None = None
        self.server_pid = server_pid
        self.results: list[Result] = []
        self.capacity: list[Capacity] = []
        self.profiles: dict[str, str] = {}
        self.runs: list[Run] = []
        self.last_logs: list[Path] = []

    # -- queues --------------------------------------------------------------------------
    async def queue(self, fifo: bool = False, visibility: int = 60) -> tuple[str, str]:
        name = f"bench-{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
        attrs = {"VisibilityTimeout": str(visibility)}
        if fifo:
            attrs |= {"FifoQueue": "true"}
        async with self._sqs() as sqs:
            url = (await sqs.create_queue(QueueName=name, Attributes=attrs))["QueueUrl"]
        return name, url

    async def delete_queue(self, url: str) -> None:
        with contextlib.suppress(Exception):
            async with self._sqs() as sqs:
                await sqs.delete_queue(QueueUrl=url)

    def _sqs(self) -> Any:
        return get_session().create_client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")

    async def preload(
        self, url: str, n: int, message_type: str, groups: int = 0, body: dict[str, Any] | None = None
    ) -> None:
        async with self._sqs() as sqs:
            sem = asyncio.Semaphore(16)

            async def batch(start: int) -> None:
                entries = []
                for i in range(start, min(n, start + 10)):
                    e: dict[str, Any] = {
                        "Id": str(i - start),
                        "MessageBody": json.dumps(body or {"seq": i // groups if groups else i}),
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

    async def visible(self, url: str) -> int:
        async with self._sqs() as sqs:
            a = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(a.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    async def depth(self, url: str) -> int:
        async with self._sqs() as sqs:
            a = await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
        return sum(int(v) for v in a.get("Attributes", {}).values())

    def close(self) -> None:
        self.proxy.stop()
        if self._moto is not None:
            self._moto.kill()
            self._moto.wait()

    async def idempotency_table(self) -> dict[str, Any]:
        """A fresh table on moto's DynamoDB server (started on first use), as ``idempotency:``."""
        if self._dynamodb is None:
            self._moto, self._dynamodb = await moto_server.start()
        table = f"bench-{uuid.uuid4().hex[:8]}"
        async with get_session().create_client(
            "dynamodb", endpoint_url=self._dynamodb, region_name="us-east-1"
        ) as dynamodb:
            await dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        return {"store": "dynamodb", "table": table, "endpoint_url": self._dynamodb}

    # -- processes -----------------------------------------------------------------------
    def worker_config(self, name: str, idempotency: dict[str, Any] | None = None, **queue: Any) -> Path:
        """The worker's configuration: the queue's settings as given (none: the defaults),
        info-level JSON logs (the per-message ``message_succeeded`` line stays on)."""
        handlers = ["benchmarks.handlers"] + (["benchmarks.handlers_idempotent"] if idempotency else [])
        q = {"name": name, "handlers": handlers, **queue}
        config: dict[str, Any] = {
            "aws": {"endpoint_url": self.proxy.url, "region": "us-east-1"},
            "log": {"level": "info", "summary_interval": 3600},
            "shutdown_grace": 10,
            "queues": {"bench": q},
        }
        if idempotency is not None:
            config["idempotency"] = idempotency
        path = self.workdir / f"worker-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def spawn_worker(
        self,
        config: Path,
        record: Path,
        extra_env: dict[str, str] | None = None,
        python_args: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """``worker run`` through the console script (``python_args`` go to the interpreter:
        ``["-m", "cProfile", "-o", path]`` or ``["-X", "importtime"]``)."""
        log = open(record.with_suffix(".log"), "wb")  # noqa: SIM115 - closed when the process ends
        env = {**os.environ, "BENCH_RECORD": str(record), **(extra_env or {})}
        script = [str(WORKER_SCRIPT)] if WORKER_SCRIPT.exists() else ["-m", "worker"]
        return subprocess.Popen(
            [PY, *(python_args or []), *script, "run", "--config", str(config), "--log-format", "json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def spawn_raw(
        self,
        url: str,
        n: int,
        concurrency: int,
        handler_ms: float,
        extra_env: dict[str, str] | None = None,
        threads: int = 0,
        latency: bool = False,
        wait: int = 1,
        worker_receive: bool = False,
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                PY,
                "-m",
                "benchmarks.raw",
                "--endpoint",
                self.proxy.url,
                "--url",
                url,
                "--n",
                str(n),
                "--concurrency",
                str(concurrency),
                "--handler-ms",
                str(handler_ms),
                "--threads",
                str(threads),
                "--wait",
                str(wait),
                *(["--latency"] if latency else []),
                *(["--worker-receive"] if worker_receive else []),
            ],
            cwd=ROOT,
            env={**os.environ, **(extra_env or {})},
            stdout=subprocess.PIPE,
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
        proc.returncode = -9
        return usage.ru_utime + usage.ru_stime, peak

    def sample(self) -> Sample:
        busy, total = procstat.host_jiffies()
        return Sample(
            time.monotonic(),
            busy,
            total,
            procstat.cpu_seconds(self.server_pid),
            procstat.cpu_seconds(self.proxy.proc.pid),
        )

    def wait_deleted(
        self,
        n: int,
        procs: list[subprocess.Popen[bytes]] | None = None,
        timeout: float = 600,
        samples: list[Sample] | None = None,
    ) -> dict[str, Any]:
        """Poll the proxy until ``n`` messages are deleted (sampling the machine meanwhile);
        fail early, with the log's end, when every consumer process has exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.proxy.counts()
            if samples is not None:
                samples.append(self.sample())
            if counts["deleted"] >= n:
                return counts
            if procs and all(procstat.exited(p.pid) for p in procs):
                raise RuntimeError(f"the consumer exited after {counts['deleted']} of {n} deletes")
            time.sleep(0.05)
        raise TimeoutError(f"only {self.proxy.counts()['deleted']} of {n} deleted in {timeout}s")

    def stop(
        self, procs: list[subprocess.Popen[bytes]], signal_them: bool = True
    ) -> list[tuple[float, float]]:
        """SIGTERM (the worker's graceful stop), then answer its open long polls on the empty
        queue at once (else a stop waits out a 20 s poll); (CPU s, peak RSS MB) per process."""
        if signal_them:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        self.proxy.faults(empty_receives=True)
        try:
            return [self.reap(p) for p in procs]
        finally:
            self.proxy.faults()

    # -- one measured run ------------------------------------------------------------------
    async def measure(
        self,
        sc: Scenario,
        rep: int = 0,
        *,
        n: int | None = None,
        raw_concurrency: int = 16,
        processes: int = 1,
        python_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        scenario: str | None = None,
    ) -> Run:
        n = n or self.n
        name, url = await self.queue(fifo=bool(sc.fifo_groups))
        await self.preload(url, n, sc.message_type, groups=sc.fifo_groups)
        self.proxy.faults()
        self.proxy.reset()
        records: list[Path] = []
        samples: list[Sample] = [self.sample()]
        start = time.monotonic()
        if sc.raw_handler_ms is not None:
            procs = [
                self.spawn_raw(
                    url,
                    n,
                    raw_concurrency,
                    sc.raw_handler_ms,
                    extra_env,
                    sc.raw_threads,
                    worker_receive=sc.raw_worker_receive,
                )
            ]
        else:
            store = await self.idempotency_table() if sc.idempotent else None
            config = self.worker_config(name, store, **sc.queue)
            records = [self.workdir / f"rec-{uuid.uuid4().hex[:6]}.json" for _ in range(processes)]
            procs = [self.spawn_worker(config, r, extra_env, python_args) for r in records]
        self.last_logs = [r.with_suffix(".log") for r in records]
        try:
            counts = self.wait_deleted(n, procs, samples=samples)
        except Exception:
            for p in procs:
                p.kill()
            for r in records:
                log = r.with_suffix(".log")
                if log.exists():
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        cpu_done = [procstat.cpu_seconds(p.pid) for p in procs]
        peaks = [hwm_mb(p.pid) for p in procs]
        usage = self.stop(procs, signal_them=sc.raw_handler_ms is None)
        firsts: list[tuple[float, float] | None] = []  # per process
        seen: list[str] = []
        worker_calls: int | None = None
        events: Counter[str] = Counter()
        extra: dict[str, Any] = {}
        if sc.raw_handler_ms is not None:
            out = procs[0].stdout.read() if procs[0].stdout else b""
            data = next((json.loads(x) for x in out.decode().splitlines() if x.startswith("{")), None)
            firsts.append((float(data["first"]), float(data["cpu_first"])) if data else None)
        else:
            for record in records:
                data = json.loads(record.read_text()) if record.exists() else {}
                seen += data.get("seen", [])
                mark = data.get("first")
                firsts.append((float(mark[0]), float(mark[1])) if mark else None)
                found, calls = worker_log_events(record.with_suffix(".log"))
                events += found
                if calls is not None:
                    worker_calls = (worker_calls or 0) + calls
            extra["info_lines_per_message"] = round(events["message_succeeded"] / n, 2)
            if sc.idempotent:
                extra["store_requests_per_message"] = round(events[STORE_CALLS] / n, 3)
        # CPU between the first message and the last delete: per process, what it had at the
        # end (read at once; the raw loop may have exited: its total then) minus at its first
        # message (a process that handled none: all of it).
        window_cpu = 0.0
        for mark, done, (total, _) in zip(firsts, cpu_done, usage, strict=True):
            window_cpu += max(0.0, (done if done is not None else total) - (mark[1] if mark else 0.0))
        marks = [m for m in firsts if m is not None]
        first = min((m[0] for m in marks), default=None)
        last = float(counts["last"].get("DeleteMessageBatch", time.monotonic()))
        window = procstat.window(samples, first if first is not None else start, last)
        if sc.fifo_groups and records:
            extra["order_violations"] = self._order_violations(records)
        extra["left_in_queue"] = await self.depth(url)
        await self.delete_queue(url)
        run = Run(
            key=sc.key,
            scenario=scenario or sc.name,
            rep=rep,
            messages=n,
            start=start,
            first=first,
            last=last,
            window_cpu=window_cpu,
            startup_cpu=statistics.mean(m[1] for m in marks) if marks else None,
            total_cpu=sum(u[0] for u in usage),
            requests=int(counts["total"]),
            worker_requests=worker_calls,
            rss=max([u[1] for u in usage] + peaks),
            duplicates=len(seen) - len(set(seen)) if records else 0,
            losses=(n - len(set(seen))) if records else max(0, n - int(counts["deleted"])),
            window=window,
            extra=extra,
            processes=processes,
            raw=sc.raw_handler_ms is not None,
        )
        self.runs.append(run)
        print(f"  rep {rep + 1}: {run.describe()}", flush=True)
        return run

    @staticmethod
    def _order_violations(records: list[Path]) -> int:
        order: list[tuple[str, int]] = []
        for r in records:
            order += [(str(g), int(q)) for g, q in json.loads(r.read_text())["fifo"]]
        last: dict[str, int] = {}
        violations = 0
        for group, seq in order:
            if seq < last.get(group, -1):
                violations += 1
            last[group] = seq
        return violations

    # -- the one-off scenarios --------------------------------------------------------------
    async def latency(
        self, rate: float = 200, seconds: float = 15, raw_concurrency: int | None = None, **queue: Any
    ) -> Result:
        """Messages sent at a steady ``rate`` to a consumer already long-polling: seconds from
        each send to its handler (the worker with ``queue`` settings, or with
        ``raw_concurrency`` the raw loop with 20 s long polls, the reference: what the
        server itself takes)."""
        name, url = await self.queue()
        self.proxy.reset()
        total = int(rate * seconds)
        record: Path | None = None
        if raw_concurrency is None:
            record = self.workdir / f"lat-{uuid.uuid4().hex[:6]}.json"
            proc = self.spawn_worker(self.worker_config(name, **queue), record)
        else:
            proc = self.spawn_raw(url, total, raw_concurrency, 0, latency=True, wait=20)
        await asyncio.sleep(3)  # started and long-polling
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
        counts = self.wait_deleted(total, [proc], timeout=120)
        peak = hwm_mb(proc.pid)
        ((cpu, rss),) = self.stop([proc], signal_them=record is not None)
        await self.delete_queue(url)
        if record is not None:
            data = json.loads(record.read_text())
            seen = data["seen"]
            scenario, key = f"latency at {rate:g} msg/s", "latency"
        else:
            out = proc.stdout.read().decode() if proc.stdout else ""
            data = next((json.loads(x) for x in out.splitlines() if x.startswith("{")), {"latencies": []})
            seen = []
            scenario, key = f"latency at {rate:g} msg/s, raw loop (C={raw_concurrency})", "latency-raw"
        lat = sorted(data["latencies"])
        q = statistics.quantiles(lat, n=100)
        result = Result(
            scenario=scenario,
            key=key,
            messages=total,
            seconds=round(seconds, 1),
            rate=round(sent_rate, 1),
            requests_per_message=round(counts["total"] / total, 4),
            cpu_ms_per_message=round(cpu / total * 1000, 3),
            peak_rss_mb=round(max(rss, peak), 1),
            duplicates=len(seen) - len(set(seen)),
            losses=total - (len(set(seen)) if record is not None else len(lat)),
            extra={
                "p50_ms": round(q[49] * 1000, 1),
                "p95_ms": round(q[94] * 1000, 1),
                "p99_ms": round(q[98] * 1000, 1),
            },
        )
        print(render([result], header=False), flush=True)
        return result

    async def idle(self, seconds: float) -> Result:
        """Requests an idle worker with default settings makes (20 s long polls)."""
        name, url = await self.queue()
        record = self.workdir / f"idle-{uuid.uuid4().hex[:6]}.json"
        proc = self.spawn_worker(self.worker_config(name), record)
        time.sleep(3)
        self.proxy.reset()
        time.sleep(seconds)
        counts = self.proxy.counts()
        peak = hwm_mb(proc.pid)
        ((_, rss),) = self.stop([proc])
        await self.delete_queue(url)
        pollers = idle_pollers()
        per_minute = counts["total"] / (seconds / 60)
        result = Result(
            scenario="idle, default settings (20 s polls)",
            key="idle",
            messages=0,
            seconds=seconds,
            rate=0.0,
            peak_rss_mb=round(max(rss, peak), 1),
            extra={
                "requests_per_minute": round(per_minute, 2),
                "pollers": pollers,
                "requests_per_minute_per_poller": round(per_minute / pollers, 2) if pollers else None,
            },
        )
        self.results.append(result)
        print(render([result], header=False), flush=True)
        return result


def defaults() -> dict[str, Any]:
    """The queue settings' defaults of the code under test (what "default settings" ran with)."""
    from worker.settings import QueueSettings

    qs = QueueSettings(handlers=["benchmarks.handlers"])
    names = (
        "pollers",
        "min_pollers",
        "max_in_flight",
        "min_in_flight",
        "wait_time_seconds",
        "visibility_timeout",
        "settle_calls",
    )
    return {k: getattr(qs, k) for k in names if hasattr(qs, k)}


def idle_pollers() -> int | None:
    """Long polls an idle worker with default settings keeps open: the fixed count, or the
    lower bound of an adaptive one."""
    from worker.settings import QueueSettings

    qs = QueueSettings(handlers=["benchmarks.handlers"])
    if isinstance(qs.pollers, int):
        return qs.pollers
    low = getattr(getattr(qs, "poller_bounds", None), "low", None)
    return low if isinstance(low, int) else None
