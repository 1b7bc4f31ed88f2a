"""Fault injection with every message accounted for.

    python -m benchmarks.chaos                    # every scenario at full size, docs/reliability.md
    python -m benchmarks.chaos --quick            # the CI sizes
    python -m benchmarks.chaos --scenarios soak --soak-minutes 30

Workers run as real processes behind the fault proxy (benchmarks/proxy.py), against LocalStack.
Each scenario ends with an accounting: every message sent is either handled successfully
(recorded, flushed, by the handler before it returns) or sitting in the dead-letter queue
after its own handler failed or rejected it; losses (which include messages dead-lettered
without their handler ever failing them) must be 0; duplicate successes are counted and
explained.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks import moto_server
from benchmarks.accounting import Accounting, render
from benchmarks.harness import PY, Proxy
from benchmarks.procstat import hwm_mb
from benchmarks.result import ROOT
from benchmarks.run import sqs_endpoint
from worker.aws import AwsClient
from worker.ops.queue_stats import queue_counts
from worker.settings import QueueSettings

GRACE = 10
ORIGINAL_ID_ATTRIBUTE = "worker.original_message_id"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RUNS: list[Run] = []
"""Every scenario's Run, so that a run that stops on an error leaves no process behind."""


class Run:
    """One scenario: its queues, its proxy, its worker processes, its records."""

    def __init__(self, endpoint: str, name: str) -> None:
        _RUNS.append(self)
        self.endpoint = endpoint
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        self.records = self.dir / "records"
        self.records.mkdir()
        self.proxy = Proxy(endpoint)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.health_port = 0
        self.dead: set[str] = set()
        """Original ids of the messages found in the DLQ (set by ``account``)."""
        self.idempotency: dict[str, Any] | None = None
        """The workers' ``idempotency:`` (``use_store``), else none."""

    async def use_store(self, dynamodb_endpoint: str) -> None:
        """Run the workers with a DynamoDB idempotency store (a table of this run)."""
        table = f"chaos-{uuid.uuid4().hex[:8]}"
        self.effects_table = f"{table}-effects"
        self.dynamodb = dynamodb_endpoint
        async with self.dynamodb_client() as dynamodb:
            for name in (table, self.effects_table):
                await dynamodb.create_table(
                    TableName=name,
                    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
        self.idempotency = {"store": "dynamodb", "table": table, "endpoint_url": dynamodb_endpoint}

    def dynamodb_client(self) -> Any:
        return get_session().create_client("dynamodb", endpoint_url=self.dynamodb, region_name="us-east-1")

    async def effects(self) -> Counter[str]:
        """The side effects in the effects table, per message id."""
        found: Counter[str] = Counter()
        async with self.dynamodb_client() as dynamodb:
            paginator = dynamodb.get_paginator("scan")
            async for page in paginator.paginate(TableName=self.effects_table):
                found.update(item["message_id"]["S"] for item in page.get("Items", []))
        return found

    def sqs(self) -> Any:
        return get_session().create_client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")

    async def queues(self, fifo: bool = False, max_receive_count: int = 3) -> None:
        suffix = ".fifo" if fifo else ""
        base = {"VisibilityTimeout": "10"} | ({"FifoQueue": "true"} if fifo else {})
        stem = f"chaos-{uuid.uuid4().hex[:8]}"
        async with self.sqs() as sqs:
            self.dlq = (await sqs.create_queue(QueueName=f"{stem}-dlq{suffix}", Attributes=base))["QueueUrl"]
            arn = (await sqs.get_queue_attributes(QueueUrl=self.dlq, AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
            redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)})
            self.url = (
                await sqs.create_queue(QueueName=stem + suffix, Attributes={**base, "RedrivePolicy": redrive})
            )["QueueUrl"]
        self.queue_name = stem + suffix

    async def send(self, n: int, message_type: str = "job", groups: int = 0) -> list[str]:
        ids: list[str] = []
        async with self.sqs() as sqs:
            for start in range(0, n, 10):
                entries = []
                for i in range(start, min(n, start + 10)):
                    e: dict[str, Any] = {
                        "Id": str(i - start),
                        "MessageBody": json.dumps({"seq": i // groups if groups else i}),
                        "MessageAttributes": {"type": {"DataType": "String", "StringValue": message_type}},
                    }
                    if groups:
                        e |= {"MessageGroupId": f"g{i % groups}", "MessageDeduplicationId": uuid.uuid4().hex}
                    entries.append(e)
                r = await sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
                assert not r.get("Failed"), r["Failed"]
                ids += [s["MessageId"] for s in sorted(r["Successful"], key=lambda s: int(s["Id"]))]
        return ids

    def spawn(self, env: dict[str, str] | None = None, **queue: Any) -> subprocess.Popen[bytes]:
        self.health_port = free_port()
        q = {
            "name": self.queue_name,
            "handlers": ["benchmarks.chaos_handlers"],
            "wait_time_seconds": 2,
            "visibility_timeout": 10,
            "retry_backoff": [1],
            "max_in_flight": 50,
            "pollers": 2,
            **queue,
        }
        # The worker requires the readiness window to be longer than a long poll.
        ready_window = max(5, int(q["wait_time_seconds"]) + 5)
        config = {
            "aws": {"endpoint_url": self.proxy.url, "region": "us-east-1", "startup_timeout": 60},
            "shutdown_grace": GRACE,
            "log": {"summary_interval": 10},
            "health": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": self.health_port,
                "ready_window": ready_window,
            },
            "queues": {"q": q},
        }
        if self.idempotency is not None:
            config["idempotency"] = self.idempotency
            q["handlers"] = [*q["handlers"], "benchmarks.chaos_effects"]
        path = self.dir / f"worker-{len(self.procs)}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(self.dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [PY, "-m", "worker", "run", "--config", str(path), "--log-format", "json"],
            cwd=ROOT,
            env={**os.environ, "CHAOS_RECORD_DIR": str(self.records), **self._effects_env(), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        return proc

    def _effects_env(self) -> dict[str, str]:
        if self.idempotency is None:
            return {}
        return {"CHAOS_EFFECTS_TABLE": self.effects_table, "CHAOS_DYNAMODB": self.dynamodb}

    def successes(self) -> list[tuple[float, str, str, int]]:
        out = []
        for f in self.records.glob("*.log"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == "ok":
                    out.append((f.stat().st_mtime, parts[1], parts[2], int(parts[3])))
        return out

    def outcomes(self, *kinds: str) -> list[list[tuple[str, str, int]]]:
        """The handler calls recorded as one of ``kinds`` (ok, fail, reject): per worker
        process, in the order that process made them, as (message id, group, seq)."""
        out = []
        for f in sorted(self.records.glob("*.log")):
            calls = []
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] in kinds:
                    calls.append((parts[1], parts[2], int(parts[3])))
            out.append(calls)
        return out

    def ids(self, *kinds: str) -> set[str]:
        """Ids of the messages with at least one handler call recorded as one of ``kinds``."""
        return {c[0] for calls in self.outcomes(*kinds) for c in calls}

    def order_violations(self) -> int:
        """Successes out of seq order within their FIFO group, per worker process (in the
        order it recorded them; exact for a single worker process)."""
        violations = 0
        for calls in self.outcomes("ok"):
            last: dict[str, int] = {}
            for _, group, seq in calls:
                if seq < last.get(group, -1):
                    violations += 1
                last[group] = max(seq, last.get(group, -1))
        return violations

    def done_count(self) -> int:
        return len({s[1] for s in self.successes()})

    async def depth(self, url: str) -> int:
        async with self.sqs() as sqs:
            return sum(await queue_counts(AwsClient(sqs), url))

    async def settle(self, timeout: float) -> None:
        """Until the source queue is empty (handled or dead-lettered) twice in a row."""
        deadline = time.monotonic() + timeout
        empty = 0
        while time.monotonic() < deadline:
            empty = empty + 1 if await self.depth(self.url) == 0 else 0
            if empty >= 2:
                return
            await asyncio.sleep(1)
        raise TimeoutError(
            f"{self.name}: queue not settled in {timeout}s ({await self.depth(self.url)} left)"
        )

    async def dead_letters(self) -> list[str]:
        """Drain the DLQ: for each message in it, the id of the message sent. A copy the worker
        moved there itself (SendMessage, a new MessageId) carries the original id in the
        ``worker.original_message_id`` attribute; one SQS moved keeps its MessageId. A message
        id appears more than once when it was dead-lettered more than once."""
        ids: list[str] = []
        async with self.sqs() as sqs:
            while True:
                # Deleted as read: a FIFO queue hands out nothing more of a group while a
                # message of it is in flight.
                r = await sqs.receive_message(
                    QueueUrl=self.dlq,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=60,
                    WaitTimeSeconds=1,
                    MessageAttributeNames=["All"],
                )
                msgs = r.get("Messages") or []
                if not msgs:
                    return sorted(ids)
                for m in msgs:
                    original = (m.get("MessageAttributes") or {}).get(ORIGINAL_ID_ATTRIBUTE, {})
                    ids.append(str(original.get("StringValue") or m["MessageId"]))
                await sqs.delete_message_batch(
                    QueueUrl=self.dlq,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )

    def ready(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def abandon(self) -> None:
        """Kill what is still running (the run stopped on an error before ``account``)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if self.proxy.proc.poll() is None:
            self.proxy.stop()

    def stop_all(self) -> list[float]:
        """SIGTERM every live worker; seconds each took to exit."""
        took = []
        for p in self.procs:
            if p.poll() is None:
                start = time.monotonic()
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(GRACE + 15)
                except subprocess.TimeoutExpired:
                    p.kill()
                took.append(round(time.monotonic() - start, 2))
        return took

    async def account(self, sent: list[str], explanation: str = "", **extra: Any) -> Accounting:
        took = self.stop_all()
        self.proxy.stop()
        counts = Counter(s[1] for s in self.successes())
        copies = await self.dead_letters()
        self.dead = dead = set(copies)
        ok_ids = set(counts)
        effects: Counter[str] | None = None
        if self.idempotency is not None:
            # Handled: its transaction committed (ok) or a later delivery found it done (replay).
            ok_ids |= self.ids("replay")
            effects = await self.effects()
        sent_ids = set(sent)
        # In the DLQ and never handled successfully: accounted for only when its own handler
        # failed or rejected it at least once.
        in_dlq = (dead & sent_ids) - ok_ids
        unrun = in_dlq - self.ids("fail", "reject")
        result = Accounting(
            scenario=self.name,
            sent=len(sent),
            succeeded=len(ok_ids & sent_ids),
            dead_lettered=len(in_dlq - unrun),
            dead_lettered_unrun=len(unrun),
            lost=len(sent_ids - ok_ids - (in_dlq - unrun)),
            duplicate_successes=sum(
                c - 1 for c in (effects if effects is not None else counts).values() if c > 1
            ),
            explanation=explanation,
            extra={**extra, "exit_seconds": took} if took else dict(extra),
        )
        if len(copies) > len(dead):
            result.extra["dlq_copies_extra"] = len(copies) - len(dead)
        if dead - sent_ids:
            result.extra["dlq_unknown_ids"] = len(dead - sent_ids)
        logs = [p.read_text() for p in self.dir.glob("worker-*.log")]
        result.extra["poller_crashes"] = sum(text.count('"poller_crashed"') for text in logs)
        if effects is not None:
            # Deliveries SQS made again whose effect had happened: settled without running.
            result.extra["redeliveries_replayed"] = sum(text.count('"message_replayed"') for text in logs)
            result.extra["effects"] = sum(effects.values())
            result.extra["messages_with_an_effect"] = len(effects)
        return result


async def wait_for(pred: Any, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(every)
    raise TimeoutError("condition not met")


# -- scenarios -------------------------------------------------------------------------------
async def random_failures(endpoint: str, n: int) -> Accounting:
    run = Run(endpoint, "handler-failures-5pct")
    await run.queues(max_receive_count=3)
    sent = await run.send(n)
    run.spawn({"CHAOS_FAIL_RATE": "0.05"}, max_in_flight=100, pollers=4, retry_backoff=[0])
    await run.settle(timeout=60 + n / 20)
    return await run.account(sent, "5% of handler calls raise; after 3 receives SQS dead-letters")


async def sigkill(endpoint: str, n: int, kills: int = 2, store: str | None = None) -> Accounting:
    run = Run(endpoint, f"sigkill-x{kills}" + ("+idempotency" if store else ""))
    await run.queues(max_receive_count=5)
    if store:
        await run.use_store(store)
    sent = await run.send(n, "effect" if store else "job")
    env = {"CHAOS_WORK_SECONDS": "0.02"}
    proc = run.spawn(env, visibility_timeout=3, heartbeat_interval=1)
    in_flight_at_kill = []
    for k in range(kills):
        target = n * (k + 1) // (kills + 1)
        # (moto's DynamoDB slows as its tables grow: the store's run waits longer)
        await wait_for(lambda t=target: run.done_count() >= t, timeout=600 if store else 120)
        in_flight_at_kill.append(50)  # max_in_flight: the most that can be redone
        proc.kill()
        proc.wait()
        proc = run.spawn(env, visibility_timeout=3, heartbeat_interval=1)
    await run.settle(timeout=120 + n / 20)
    explanation = (
        "with the idempotency store (DynamoDB; dup counts effects, written in one transaction"
        " with the record's completion): a message handled but not yet deleted at a kill is"
        " delivered again and settled without running (redeliveries_replayed)"
        if store
        else "duplicates: messages handled but not yet deleted when the process was killed"
    )
    return await run.account(sent, explanation, kills=kills, duplicate_bound=sum(in_flight_at_kill))


DEFAULTS_VISIBILITY = 6
"""The defaults scenario's visibility timeout: killed leases come back soon; the heartbeat's
default interval (a third of it) gives ``max_in_flight: auto`` its bound."""


async def defaults_under_faults(endpoint: str, n: int, kills: int = 2) -> Accounting:
    """The worker's own concurrency defaults (``pollers`` and ``max_in_flight`` auto: the
    adaptive limiter) under every fault at once: 5% handler failures, 10% of calls answered
    with errors, 10% of delete entries failed, and two SIGKILLs."""
    run = Run(endpoint, f"defaults-auto-faults-x{kills}")
    await run.queues(max_receive_count=3)
    sent = await run.send(n)
    run.proxy.faults(error_rate=0.1, error="mixed", batch_entry_fail_rate=0.1)
    env = {"CHAOS_WORK_SECONDS": "0.02", "CHAOS_FAIL_RATE": "0.05"}
    queue = {
        "pollers": "auto",
        "max_in_flight": "auto",
        "retry_backoff": [0],
        "visibility_timeout": DEFAULTS_VISIBILITY,
    }
    bound = QueueSettings(
        handlers=["benchmarks.chaos_handlers"], visibility_timeout=DEFAULTS_VISIBILITY
    ).in_flight_bounds.high
    proc = run.spawn(env, **queue)
    limits: list[int] = []
    in_flight: list[int] = []
    pollers: list[int] = []
    killed: list[int] = []
    for k in range(kills):
        target = n * (k + 1) // (kills + 1)
        await wait_for(lambda t=target: run.done_count() >= t, timeout=120)
        seen: dict[str, float] = {}
        for _ in range(10):  # (a loaded machine may keep /metrics from answering at once)
            seen = _gauges(run, "sqs_worker_in_flight_limit", "sqs_worker_pollers", "sqs_worker_in_flight")
            if seen:
                break
            await asyncio.sleep(0.2)
        limits.append(int(seen.get("sqs_worker_in_flight_limit", -1)))
        in_flight.append(int(seen.get("sqs_worker_in_flight", -1)))
        pollers.append(int(seen.get("sqs_worker_pollers", -1)))
        killed.append(proc.pid)
        proc.kill()
        proc.wait()
        proc = run.spawn(env, **queue)
    await run.settle(timeout=120 + n / 10)
    result = await run.account(
        sent,
        "pollers and max_in_flight auto (the adaptive limiter) with 5% handler failures, 10%"
        " API errors, 10% failed delete entries and two kills; duplicates: messages handled"
        " but not yet deleted at a kill (at most the in-flight limit's bound per kill)",
        kills=kills,
        limit_at_kill=limits,
        in_flight_at_kill=in_flight,
        pollers_at_kill=pollers,
        duplicate_bound=bound * kills,
    )
    # Any success of a killed process may have been waiting for its delete at the kill (not
    # only its last ones: a delete refused a few times waits seconds in backoff while
    # thousands finish after it); a duplicate no kill explains needs a cause the worker logged.
    result.extra["dup_not_from_a_kill"] = _duplicates_not_from_kills(run, set(killed))
    logs = "".join(p.read_text() for p in run.dir.glob("worker-*.log"))
    result.extra["lease_overdue"] = logs.count('"lease_overdue"')
    result.extra["delete_failed"] = logs.count('"delete_failed"')
    return result


def _duplicates_not_from_kills(run: Run, killed: set[int]) -> int:
    """Successful runs beyond a message's first that no kill explains: a success recorded by
    a killed process may have been waiting for its delete at the kill (once per message and
    process: a message run twice within one process is not explained by its kill)."""
    runs: Counter[str] = Counter()
    at_kill: Counter[str] = Counter()
    for f in run.records.glob("*.log"):
        oks = [
            p[1]
            for p in (line.split() for line in f.read_text().splitlines())
            if len(p) == 4 and p[0] == "ok"
        ]
        runs.update(oks)
        if f.stem.isdigit() and int(f.stem) in killed:
            at_kill.update(set(oks))
    return sum(c - 1 - min(c - 1, at_kill[i]) for i, c in runs.items() if c > 1)


async def sigterm_cycles(endpoint: str, n: int, cycles: int = 5) -> Accounting:
    run = Run(endpoint, f"sigterm-x{cycles}")
    await run.queues(max_receive_count=5)
    sent = await run.send(n)
    env = {"CHAOS_WORK_SECONDS": "0.5"}
    exits: list[float] = []
    not_visible_after: list[int] = []
    step = 10
    for _ in range(cycles):
        proc = run.spawn(env, max_in_flight=50, pollers=4)
        await wait_for(lambda: run.ready() == 200, timeout=60)
        before = run.done_count()
        await wait_for(lambda b=before: run.done_count() >= b + step, timeout=120)  # under load
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, GRACE + 15)
        exits.append(round(time.monotonic() - start, 2))
        async with run.sqs() as sqs:
            a = await sqs.get_queue_attributes(
                QueueUrl=run.url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )
        not_visible_after.append(int(a["Attributes"]["ApproximateNumberOfMessagesNotVisible"]))
    run.spawn(env, max_in_flight=50, pollers=4)
    await run.settle(timeout=120 + n / 20)
    result = await run.account(sent, "graceful: running handlers finish, deletes flushed, nothing redone")
    result.extra |= {
        "exit_seconds_per_cycle": exits,
        "in_flight_right_after_exit": not_visible_after,
        "grace": GRACE,
    }
    return result


async def outage(endpoint: str, n: int, seconds: float, mode: str, store: str | None = None) -> Accounting:
    run = Run(endpoint, f"outage-{mode}-{seconds:g}s" + ("+idempotency" if store else ""))
    await run.queues(max_receive_count=5)
    if store:
        await run.use_store(store)
    sent = await run.send(n, "effect" if store else "job")
    run.spawn({"CHAOS_WORK_SECONDS": "0.02"}, max_in_flight=20)
    await wait_for(lambda: run.done_count() >= n // 4, timeout=120)
    before = run.proxy.counts()["total"]
    if mode == "blackhole":
        run.proxy.faults(blackhole_seconds=seconds)
    else:
        run.proxy.faults(reset_rate=1.0)
    start = time.monotonic()
    saw_unready = False
    while time.monotonic() - start < seconds:
        saw_unready = saw_unready or run.ready() == 503
        await asyncio.sleep(0.5)
    during = run.proxy.counts()["total"] - before
    run.proxy.faults()
    await wait_for(lambda: run.ready() == 200, timeout=60)
    recovered = round(time.monotonic() - start - seconds, 1)
    await run.settle(timeout=120 + n / 20)
    alive = all(p.poll() is None for p in run.procs)
    explanation = (
        "SQS unreachable (the store is not): leases that could not be kept are delivered again"
        " after the outage and settled without running (redeliveries_replayed); dup counts"
        " effects (written in one transaction with the record's completion)"
        if store
        else "leases are extended and settles retried through the outage; a duplicate is a message"
        " whose lease could not be kept: SQS unreachable for longer than its 10 s visibility"
        " timeout, so it was delivered again after the outage (at-least-once)"
    )
    return await run.account(
        sent,
        explanation,
        requests_during_outage=during,
        requests_per_second_during_outage=round(during / seconds, 2),
        readiness_went_503=saw_unready,
        ready_again_after_s=recovered,
        worker_alive=alive,
    )


async def throttled(endpoint: str, n: int) -> Accounting:
    run = Run(endpoint, "api-errors-20pct")
    await run.queues(max_receive_count=5)
    sent = await run.send(n)
    run.proxy.faults(error_rate=0.2, error="mixed", batch_entry_fail_rate=0.2)
    run.spawn({"CHAOS_WORK_SECONDS": "0.01"}, max_in_flight=50)
    await run.settle(timeout=120 + n / 10)
    outcomes = run.proxy.counts()["outcomes"]
    worker_log = "".join(p.read_text() for p in run.dir.glob("worker-*.log"))
    return await run.account(
        sent,
        "20% of calls answered 400 Throttling or 500; 20% of delete entries failed inside the batch;"
        " failed delete entries are sent again with backoff while their lease is kept, so none is handled twice",
        injected=outcomes,
        delete_entries_retried=worker_log.count('"ack_entry_retry"'),
    )


async def hanging_handler(endpoint: str, n: int) -> Accounting:
    run = Run(endpoint, "hanging-handler")
    await run.queues(max_receive_count=5)
    hung = await run.send(3, "hang")
    sent = await run.send(n)
    run.spawn({"CHAOS_WORK_SECONDS": "0.01"}, max_processing_time=3, max_in_flight=20)
    await run.settle(timeout=60 + n / 20)
    log = "".join(p.read_text() for p in run.dir.glob("worker-*.log"))
    return await run.account(
        hung + sent,
        "hung handlers cancelled at max_processing_time (3 s) and retried; other work went on",
        timeouts=log.count('"message_timeout"'),
    )


async def fifo_two_workers(endpoint: str, n: int, groups: int = 50) -> Accounting:
    run = Run(endpoint, f"fifo-2-workers-{groups}-groups")
    await run.queues(fifo=True, max_receive_count=10)
    sent = await run.send(n, groups=groups)
    env = {"CHAOS_WORK_SECONDS": "0.01", "CHAOS_FAIL_RATE": "0.05"}
    run.spawn(env, max_in_flight=50)
    run.spawn(env, max_in_flight=50)
    await run.settle(timeout=120 + n / 10)
    # Order is checked on the workers' own timestamped success lines, across both processes.
    order_ok = await _fifo_order_from_logs(run)
    return await run.account(
        sent,
        "5% handler failures; order checked across both processes",
        groups=groups,
        order_violations=order_ok,
    )


async def _fifo_order_from_logs(run: Run) -> int:
    """Order violations from the workers' own success log lines (timestamped, both processes)."""
    events: list[tuple[str, str]] = []
    for log in sorted(run.dir.glob("worker-*.log")):
        for line in log.read_text().splitlines():
            if '"message_succeeded"' in line:
                d = json.loads(line)
                events.append((d["timestamp"], d["message_id"]))
    events.sort()
    seq_of: dict[str, tuple[str, int]] = {}
    for f in run.records.glob("*.log"):
        for line in f.read_text().splitlines():
            _, message_id, group_id, seq_text = line.split()
            seq_of[message_id] = (group_id, int(seq_text))
    last: dict[str, int] = {}
    violations = 0
    for _, message_id in events:
        if message_id not in seq_of:
            continue
        group_id, number = seq_of[message_id]
        if number < last.get(group_id, -1):
            violations += 1
        last[group_id] = max(number, last.get(group_id, -1))
    return violations


async def fifo_failures(endpoint: str, groups: int, per_group: int) -> Accounting:
    """One worker on a FIFO queue, 5% of handler calls fail, maxReceiveCount 3."""
    run = Run(endpoint, "fifo-failures")
    await run.queues(fifo=True, max_receive_count=3)
    n = groups * per_group
    sent = await run.send(n, groups=groups)
    run.spawn({"CHAOS_FAIL_RATE": "0.05"}, retry_backoff=[0])
    await run.settle(timeout=60 + n / 10)
    result = await run.account(
        sent,
        "5% of handler calls raise (backoff 0 s, maxReceiveCount 3); only a message that failed"
        " itself may reach the DLQ, never a follower of its group; successes in group order",
        groups=groups,
        per_group=per_group,
    )
    result.extra["failed_calls"] = sum(len(c) for c in run.outcomes("fail"))
    result.extra["order_violations"] = run.order_violations()
    return result


async def send_after_stop(endpoint: str, n: int = 10) -> Accounting:
    """Messages sent right after a worker stopped go to the next worker at once.

    A long poll that the stopping worker abandons stays open at the server, which hands it
    the next messages sent; nobody reads that answer, so they stay invisible for the
    visibility timeout (30 s here, the default) before another worker can have them."""
    run = Run(endpoint, "send-after-stop")
    await run.queues(max_receive_count=3)
    first = run.spawn(wait_time_seconds=20, visibility_timeout=30)
    await wait_for(lambda: run.ready() == 200, timeout=60)
    # Both pollers' long polls are at the server (the queue is empty: each lasts 20 s).
    await wait_for(lambda: run.proxy.counts()["ops"].get("ReceiveMessage", 0) >= 2, timeout=30)
    await asyncio.sleep(0.5)
    start = time.monotonic()
    first.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(first.wait, GRACE + 15)
    except subprocess.TimeoutExpired:
        first.kill()
    first_exit = round(time.monotonic() - start, 2)
    await asyncio.sleep(0.5)
    open_at_send = run.proxy.counts()["open"].get("ReceiveMessage", 0)
    sent = await run.send(n)
    sent_at = time.monotonic()
    run.spawn()
    wanted = set(sent)
    with contextlib.suppress(TimeoutError):  # reported as handled_in_time < n
        await wait_for(lambda: wanted <= {s[1] for s in run.successes()}, timeout=60, every=0.1)
    handled_after = round(time.monotonic() - sent_at, 2)
    handled = len(wanted & {s[1] for s in run.successes()})
    await run.settle(timeout=60)
    return await run.account(
        sent,
        "a worker on an empty queue (20 s long polls) stops; 0.5 s later messages are sent and a"
        " second worker starts: they should be handled within seconds, not after the visibility"
        " timeout of messages handed to a long poll the first worker abandoned",
        handled_after_s=handled_after,
        handled_in_time=handled,
        first_exit_seconds=first_exit,
        receives_open_at_send=open_at_send,
    )


async def permanent_fifo(endpoint: str, groups: int, per_group: int) -> Accounting:
    """A FIFO queue where 5% of the messages are rejected (PermanentFailure)."""
    run = Run(endpoint, "permanent-fifo")
    await run.queues(fifo=True, max_receive_count=3)
    n = groups * per_group
    sent = await run.send(n, groups=groups)
    run.spawn({"CHAOS_PERMANENT_RATE": "0.05"}, retry_backoff=[0])
    await run.settle(timeout=60 + n / 10)
    result = await run.account(
        sent,
        "5% of the messages raise PermanentFailure (decided per message id): exactly those are"
        " dead-lettered, and the rest of their group is handled, in order",
        groups=groups,
        per_group=per_group,
    )
    rejected = run.ids("reject") & set(sent)
    result.extra |= {
        "rejected": len(rejected),
        "rejected_not_in_dlq": len(rejected - run.dead),
        "followers_dead_lettered": len((run.dead & set(sent)) - rejected),
        "order_violations": run.order_violations(),
    }
    return result


async def fifo_batch_failures(endpoint: str, groups: int, per_group: int) -> Accounting:
    """FIFO batch handlers: 10% of members fail and 3% are rejected, each on its own."""
    run = Run(endpoint, "fifo-batch-failures")
    await run.queues(fifo=True, max_receive_count=3)
    n = groups * per_group
    sent = await run.send(n, "rows", groups=groups)
    run.spawn({"CHAOS_FAIL_RATE": "0.1", "CHAOS_PERMANENT_RATE": "0.03"}, retry_backoff=[0])
    await run.settle(timeout=60 + n / 10)
    result = await run.account(
        sent,
        "a FIFO batch handler; 10% of members fail, 3% are rejected, each on its own"
        " (maxReceiveCount 3): a member's attempts count only its own failures, so no member"
        " reaches the DLQ for another's; a member that succeeded is deleted and never run"
        " again (dup 0), so within a batch call it may succeed before an earlier member that"
        " failed and is retried in place",
        groups=groups,
        per_group=per_group,
    )
    rejected = run.ids("reject") & set(sent)
    result.extra |= {
        "failed_calls": sum(len(c) for c in run.outcomes("fail")),
        "rejected": len(rejected),
        "rejected_not_in_dlq": len(rejected - run.dead),
    }
    return result


async def store_outage(endpoint: str, n: int, seconds: float, store: str) -> Accounting:
    """The idempotency store refuses every connection for ``seconds`` (SQS does not)."""
    run = Run(endpoint, f"store-outage-refused-{seconds:g}s")
    await run.queues(max_receive_count=3)
    store_proxy = Proxy(store)
    try:
        await run.use_store(store_proxy.url)
        sent = await run.send(n, "effect")
        run.spawn({"CHAOS_WORK_SECONDS": "0.02"}, max_in_flight=20)
        await wait_for(lambda: run.done_count() >= n // 4, timeout=120)
        store_proxy.faults(reset_rate=1.0)
        await asyncio.sleep(seconds)
        store_proxy.faults()
        await run.settle(timeout=120 + n / 20)
        result = await run.account(
            sent,
            "the idempotency store unreachable (SQS is not): a message whose claim cannot be"
            " made waits, leased, without spending an attempt (message_waiting), and runs once"
            " the store is back; a handler mid-transaction when the store went away fails"
            " on its own (retried); dup counts effects",
        )
    finally:
        store_proxy.stop()
    logs = [p.read_text() for p in run.dir.glob("worker-*.log")]
    result.extra["waiting"] = sum(text.count('"message_waiting"') for text in logs)
    return result


async def sigterm_plain_batches(endpoint: str, n: int, cycles: int = 2) -> Accounting:
    """SIGTERM while plain-function batch handlers run longer than the grace allows."""
    run = Run(endpoint, f"sigterm-plain-batches-x{cycles}")
    await run.queues(max_receive_count=5)
    sent = await run.send(n, "rows_sync")
    env = {"CHAOS_WORK_SECONDS": str(GRACE + 2)}  # past the grace, within grace + flush
    exits: list[float] = []
    for _ in range(cycles):
        proc = run.spawn(env, max_in_flight=40, pollers=2)
        await wait_for(lambda: run.ready() == 200, timeout=60)
        before = run.done_count()
        await wait_for(lambda b=before: run.done_count() >= b + 10, timeout=120)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, GRACE + 15)
        exits.append(round(time.monotonic() - start, 2))
    run.spawn(env, max_in_flight=40, pollers=2)
    await run.settle(timeout=120 + n / 10)
    result = await run.account(
        sent,
        f"plain-function batch handlers ({GRACE + 2} s threads, grace {GRACE} s) stopped by"
        " SIGTERM: a thread still running at the grace keeps its messages leased and its"
        " result counts when it ends before the final deadline; nothing is released while its"
        " thread runs (dup 0)",
    )
    logs = [p.read_text() for p in run.dir.glob("worker-*.log")]
    result.extra |= {
        "exit_seconds_per_cycle": exits,
        "grace": GRACE,
        "threads_past_the_grace": sum(text.count('"handler_thread_still_running"') for text in logs),
        "released": sum(text.count('"message_released"') for text in logs),
    }
    return result


async def soak(endpoint: str, minutes: float, rate: float = 50) -> Accounting:
    run = Run(endpoint, f"soak-{minutes:g}min")
    await run.queues(max_receive_count=3)
    proc = run.spawn(
        {"CHAOS_WORK_SECONDS": "0.02", "CHAOS_FAIL_RATE": "0.01"}, max_in_flight=50, retry_backoff=[1]
    )
    sent: list[str] = []
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    warm = min(120.0, minutes * 60 / 4)
    while time.monotonic() - start < minutes * 60:
        sent += await run.send(int(rate))
        elapsed = time.monotonic() - start
        if not samples or elapsed - samples[-1]["t"] >= 30:
            samples.append({"t": elapsed, "rss_mb": _rss_mb(proc.pid), "fds": _fds(proc.pid), **_tasks(run)})
        await asyncio.sleep(max(0.0, 1 - (time.monotonic() - start - elapsed)))
    await run.settle(timeout=300)
    after_warm = next(s for s in samples if s["t"] >= warm)
    end = samples[-1]
    return await run.account(
        sent,
        "steady load with 1% failures",
        rss_after_warmup_mb=after_warm["rss_mb"],
        rss_at_end_mb=end["rss_mb"],
        rss_growth_pct=round((end["rss_mb"] / after_warm["rss_mb"] - 1) * 100, 1),
        fds_after_warmup=after_warm["fds"],
        fds_at_end=end["fds"],
        tasks_after_warmup=after_warm.get("tasks"),
        tasks_at_end=end.get("tasks"),
        peak_rss_mb=hwm_mb(proc.pid),
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _fds(pid: int) -> float:
    return float(len(os.listdir(f"/proc/{pid}/fd")))


def _gauges(run: Run, *names: str) -> dict[str, float]:
    """The worker's gauges ``names`` from its /metrics (their first sample each)."""
    found: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{run.health_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name in names and name not in found:
                    found[name] = float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return found


def _tasks(run: Run) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{run.health_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("sqs_worker_asyncio_tasks "):
                    return {"tasks": float(line.split()[1])}
    except OSError:
        pass
    return {}


# -- running ---------------------------------------------------------------------------------
QUICK = {"n": 300, "outage": 8.0, "fifo_groups": 10, "fifo_per_group": 20}
FULL = {"n": 10_000, "outage": 30.0, "fifo_groups": 20, "fifo_per_group": 50}
ALL = [
    "failures",
    "sigkill",
    "sigterm",
    "blackhole",
    "refused",
    "throttled",
    "hang",
    "fifo",
    "fifo-failures",
    "send-after-stop",
    "permanent-fifo",
    "sigkill-idempotent",
    "blackhole-idempotent",
    "refused-idempotent",
    "defaults",
    "fifo-batch-failures",
    "store-outage",
    "sigterm-plain-batches",
    "soak",
]
_RESULT_PREFIXES = [
    ("handler-failures", "failures"),
    ("sigkill-x", "sigkill"),
    ("sigterm-plain-batches", "sigterm-plain-batches"),
    ("sigterm-x", "sigterm"),
    ("outage-blackhole", "blackhole"),
    ("outage-refused", "refused"),
    ("api-errors", "throttled"),
    ("hanging-handler", "hang"),
    ("fifo-2-workers", "fifo"),
    ("fifo-failures", "fifo-failures"),
    ("fifo-batch-failures", "fifo-batch-failures"),
    ("send-after-stop", "send-after-stop"),
    ("permanent-fifo", "permanent-fifo"),
    ("defaults-auto", "defaults"),
    ("store-outage", "store-outage"),
    ("soak", "soak"),
]


def option_of(result: str) -> str:
    """The ``--scenarios`` name of a result's scenario name (``--resume``)."""
    if result.endswith("+idempotency"):
        for kind in ("sigkill", "blackhole", "refused"):
            if kind in result:
                return f"{kind}-idempotent"
    return next((option for prefix, option in _RESULT_PREFIXES if result.startswith(prefix)), result)


IDEMPOTENT = {"sigkill-idempotent", "blackhole-idempotent", "refused-idempotent", "store-outage"}


async def run_all(
    endpoint: str,
    scenarios: list[str],
    quick: bool,
    soak_minutes: float,
    done: list[Accounting] | None = None,
    save: Path | None = None,
) -> list[Accounting]:
    """Run ``scenarios`` (those in ``done`` are taken as they are, not run again); with
    ``save``, the results so far are written there after each scenario."""
    size = QUICK if quick else FULL
    n = int(size["n"])
    groups, per_group = int(size["fifo_groups"]), int(size["fifo_per_group"])
    results: list[Accounting] = list(done or [])
    finished = {r.scenario for r in results}
    store = ""
    moto: subprocess.Popen[bytes] | None = None
    plan = {
        "failures": lambda: random_failures(endpoint, n),
        "sigkill": lambda: sigkill(endpoint, n),
        "sigterm": lambda: sigterm_cycles(endpoint, max(n // 2, 600)),
        "blackhole": lambda: outage(endpoint, max(n // 5, 200), size["outage"], "blackhole"),
        "refused": lambda: outage(endpoint, max(n // 5, 200), size["outage"], "refused"),
        "throttled": lambda: throttled(endpoint, max(n // 2, 200)),
        "hang": lambda: hanging_handler(endpoint, max(n // 10, 100)),
        "fifo": lambda: fifo_two_workers(endpoint, max(n // 5, 200)),
        "fifo-failures": lambda: fifo_failures(endpoint, groups, per_group),
        "send-after-stop": lambda: send_after_stop(endpoint),
        "permanent-fifo": lambda: permanent_fifo(endpoint, groups, per_group),
        # moto copies every table for each transaction: the store's scenarios are smaller.
        "sigkill-idempotent": lambda: sigkill(endpoint, min(n, 2000), store=store),
        "blackhole-idempotent": lambda: outage(
            endpoint, max(n // 5, 200), size["outage"], "blackhole", store
        ),
        "refused-idempotent": lambda: outage(endpoint, max(n // 5, 200), size["outage"], "refused", store),
        "defaults": lambda: defaults_under_faults(endpoint, n),
        "fifo-batch-failures": lambda: fifo_batch_failures(endpoint, groups, per_group),
        "store-outage": lambda: store_outage(endpoint, max(n // 10, 200), size["outage"], store),
        "sigterm-plain-batches": lambda: sigterm_plain_batches(endpoint, max(n // 20, 200)),
        "soak": lambda: soak(endpoint, soak_minutes),
    }
    try:
        for name in scenarios:
            if name in {option_of(f) for f in finished}:
                continue
            if name in IDEMPOTENT:
                # A fresh moto per store scenario: it copies every table for each
                # transaction and, grown over a whole run, answers TransactWriteItems with
                # 500s (seen twice: the run stalled in the second store scenario).
                moto, store = await moto_server.start()
            try:
                result = await plan[name]()
            finally:
                if moto is not None:
                    moto.kill()
                    moto.wait(10)
                    moto = None
            results.append(result)
            print(render([result], header=not results[:-1]), flush=True)
            if save is not None:
                await asyncio.to_thread(save.write_text, json.dumps([asdict(r) for r in results], indent=2))
    finally:
        if moto is not None:
            moto.kill()
            moto.wait(10)
        for run in _RUNS:
            run.abandon()
        _RUNS.clear()
    return results


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description="Fault injection with accounting."
    )
    p.add_argument("--endpoint", help="SQS endpoint (default: start LocalStack)")
    p.add_argument("--scenarios", default=",".join(s for s in ALL if s != "soak"))
    p.add_argument("--quick", action="store_true", help="CI sizes")
    p.add_argument("--soak-minutes", type=float, default=30)
    p.add_argument("--json", help="write the results here (after each scenario)")
    p.add_argument("--resume", help="a --json file of an interrupted run: its scenarios are kept, not run")
    p.add_argument("--docs", action="store_true", help="write docs/reliability.md")
    args = p.parse_args()
    started = time.time()
    with sqs_endpoint(args.endpoint) as endpoint:
        done = [Accounting(**r) for r in json.loads(Path(args.resume).read_text())] if args.resume else None
        save = Path(args.json) if args.json else None
        results = asyncio.run(
            run_all(endpoint, args.scenarios.split(","), args.quick, args.soak_minutes, done, save)
        )
    print()
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.docs:
        from benchmarks.reliability_doc import write

        write(results, args, started)
    return 0 if all(r.lost == 0 and r.dead_lettered_unrun == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
