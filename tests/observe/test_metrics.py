"""What /metrics exposes: process metrics, no ``_created`` series, every series of every
configured queue at 0 before the first event, the end-to-end lag histogram, failures of
batch handlers counted per message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from tests.conftest import Aws, TestQueue, eventually, running, settings_for
from worker import Message, PermanentFailure, Retry, Router
from worker.messages.envelope import parse_message
from worker.messages.routing import Registry
from worker.observe.metrics import FAILURE_REASONS, RUNTIME_OPERATIONS, Metrics
from worker.runtime import processor as processor_module
from worker.runtime.context import QueueContext
from worker.runtime.lease import Leases
from worker.runtime.processor import Processor
from worker.runtime.supervisor import Supervisor
from worker.settings import QueueSettings, WorkerSettings, load_settings
from worker.testing import sqs_message

ROOT = Path(__file__).resolve().parents[2]
Key = tuple[str, tuple[tuple[str, str], ...]]


class Row(BaseModel):
    n: int


def scrape(metrics: Metrics) -> tuple[str, dict[Key, float]]:
    text = generate_latest(metrics.registry).decode()
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, out


def key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


@contextlib.asynccontextmanager
async def running_with(
    settings: WorkerSettings, registries: dict[str, Registry]
) -> AsyncIterator[Supervisor]:
    """A worker in-process with a registry of its own per queue."""
    supervisor = Supervisor(settings, registries)
    task = asyncio.create_task(supervisor.run())
    started = asyncio.create_task(supervisor.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        yield supervisor
    finally:
        supervisor.request_stop()
        await task


def two_queues(endpoint: str, a: TestQueue, b: TestQueue) -> WorkerSettings:
    q = {"handlers": ["tests.support.noop"], "wait_time_seconds": 1}
    return load_settings(
        None,
        {
            "aws": {"endpoint_url": endpoint, "region": "us-east-1", "startup_timeout": 5},
            "queues": {"orders": {"name": a.name, **q}, "rows": {"name": b.name, **q}},
            "log": {"summary_interval": 3600},
        },
    )


async def test_a_fresh_worker_exposes_process_metrics_every_series_at_zero_and_no_created(aws: Aws) -> None:
    a, b = await aws.queue(), await aws.queue()
    orders, rows = Router(), Router()
    orders.add("order.placed", lambda payload: None)
    orders.add("order.paid", lambda payload: None)

    @rows.batch_handler("row", max_size=5, max_wait=0.1)
    async def handle_rows(payloads: list[Row]) -> None:
        return None

    registries = {"orders": Registry(orders.routes), "rows": Registry(rows.routes)}
    async with running_with(two_queues(aws.endpoint, a, b), registries) as worker:
        text, m = scrape(worker.metrics)
        counters = [c.counters for c in worker.consumers]
    assert all(c.received == 0 for c in counters)  # nothing was handled: every value is the start one

    # Process and platform metrics on the worker's own registry.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"):
        assert m[key(name)] > 0, name
    assert any(k[0] == "python_info" for k in m)
    assert any(k[0] == "python_gc_collections_total" for k in m)
    # No _created series (they would double every counter and histogram).
    assert not [line for line in text.splitlines() if "_created" in line]

    # Every series of every configured queue exists at 0, per type that queue routes.
    routed = {"orders": ["order.paid", "order.placed"], "rows": ["row"]}
    for queue, types in routed.items():
        for name in ("sqs_worker_in_flight", "sqs_worker_free_slots"):
            assert key(name, queue=queue) in m, (name, queue)
        for name in (
            "sqs_worker_visibility_extensions_total",
            "sqs_worker_messages_released_total",
            "sqs_worker_delete_failed_total",
            "sqs_worker_lease_overdue_total",
            "sqs_worker_poller_restarts_total",
        ):
            assert m[key(name, queue=queue)] == 0, (name, queue)
        assert key("sqs_worker_receive_latency_seconds_count", queue=queue) in m
        for operation in RUNTIME_OPERATIONS:  # per queue from the start (the pollers already receive)
            assert key("sqs_worker_queue_requests_total", queue=queue, operation=operation) in m
        for operation in ("delete_message_batch", "change_message_visibility_batch", "send_message"):
            assert m[key("sqs_worker_queue_requests_total", queue=queue, operation=operation)] == 0
        for t in types:
            for name in (
                "sqs_worker_messages_received_total",
                "sqs_worker_messages_succeeded_total",
                "sqs_worker_messages_retried_total",
                "sqs_worker_messages_dead_lettered_total",
                "sqs_worker_handler_duration_seconds_count",
                "sqs_worker_message_lag_seconds_count",
            ):
                assert m[key(name, queue=queue, type=t)] == 0, (name, queue, t)
            assert m[key("sqs_worker_message_lag_seconds_bucket", queue=queue, type=t, le="+Inf")] == 0
            for reason in FAILURE_REASONS:
                assert m[key("sqs_worker_messages_failed_total", queue=queue, type=t, reason=reason)] == 0
        # Unknown types: one label value, with the series an unknown message can reach.
        assert m[key("sqs_worker_messages_received_total", queue=queue, type="unknown")] == 0
        assert m[key("sqs_worker_messages_dead_lettered_total", queue=queue, type="unknown")] == 0
        assert m[key("sqs_worker_messages_failed_total", queue=queue, type="unknown", reason="rejected")] == 0
    # Types are per queue: a queue has no series for a type it does not route.
    assert key("sqs_worker_messages_received_total", queue="orders", type="row") not in m
    assert key("sqs_worker_messages_received_total", queue="rows", type="order.paid") not in m
    # No label value the runtime never records (the queue label is the configuration key).
    queues = {dict(labels)["queue"] for _, labels in m if "queue" in dict(labels)}
    assert queues == {"orders", "rows"}


def test_the_failure_reasons_initialised_are_the_ones_the_processor_records() -> None:
    assert set(FAILURE_REASONS) == set(processor_module._REASONS.values())


async def test_lag_is_observed_from_the_sent_timestamp_to_the_handler_start(aws: Aws) -> None:
    queue = await aws.queue()
    started: list[float] = []
    router = Router()

    @router.handler("one")
    async def one(payload: dict[str, int]) -> None:
        started.append(time.time())

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    async def rows(payloads: list[Row]) -> None:
        started.extend(time.time() for _ in payloads)

    sent = time.time()
    await aws.send(queue.url, {"n": 1}, "one")
    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "row")
    await asyncio.sleep(1.5)  # the messages wait in the queue before the worker starts
    async with running(settings_for(aws.endpoint, queue), router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 4, timeout=15)
        _, m = scrape(worker.metrics)
    waited = max(started) - sent
    one_count = m[key("sqs_worker_message_lag_seconds_count", queue="q", type="one")]
    one_sum = m[key("sqs_worker_message_lag_seconds_sum", queue="q", type="one")]
    assert one_count == 1
    assert 1.4 <= one_sum <= waited + 0.1
    # Buckets fit for seconds: nothing at or below 1 s, everything at or below 30 s.
    assert m[key("sqs_worker_message_lag_seconds_bucket", queue="q", type="one", le="1.0")] == 0
    assert m[key("sqs_worker_message_lag_seconds_bucket", queue="q", type="one", le="30.0")] == 1
    assert m[key("sqs_worker_message_lag_seconds_bucket", queue="q", type="one", le="3600.0")] == 1
    # A batch handler: one observation per message of the batch.
    row_count = m[key("sqs_worker_message_lag_seconds_count", queue="q", type="row")]
    row_sum = m[key("sqs_worker_message_lag_seconds_sum", queue="q", type="row")]
    assert row_count == 3
    assert 3 * 1.4 <= row_sum <= 3 * (waited + 0.1)


async def test_lag_counts_a_sender_clock_ahead_as_zero_and_once_per_delivery() -> None:
    metrics = Metrics()
    router = Router()
    runs: list[int] = []

    @router.handler("job")
    async def job(payload: dict[str, int]) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("again")

    settings = QueueSettings(handlers=["<testing>"], retry_jitter=0)
    with ThreadPoolExecutor(max_workers=1) as executor:
        ctx = QueueContext.standalone("q", settings, Registry.of(router), executor=executor)
        ctx.metrics = metrics
        processor = Processor(ctx)
        raw = sqs_message({"n": 1}, type="job")
        raw["Attributes"]["SentTimestamp"] = str(int((time.time() + 60) * 1000))  # a minute ahead
        lease = Leases(lambda lease: None).open(parse_message(raw), raw, time.monotonic(), 30)
        assert (await processor.run_one(lease)).kind == "failed"
        assert (await processor.run_one(lease)).kind == "succeeded"  # run again in place (FIFO)
    _, m = scrape(metrics)
    assert m[key("sqs_worker_message_lag_seconds_count", queue="q", type="job")] == 1
    assert m[key("sqs_worker_message_lag_seconds_sum", queue="q", type="job")] == 0
    assert m[key("sqs_worker_message_lag_seconds_bucket", queue="q", type="job", le="0.01")] == 1


async def test_a_failing_batch_counts_every_message(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    router = Router()
    calls: list[int] = []

    @router.batch_handler("row", max_size=10, max_wait=1.0)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        calls.append(len(payloads))
        if any(m.receive_count == 1 for m in messages):
            raise RuntimeError("the whole batch failed")
        pairs = zip(payloads, messages, strict=True)
        # Second delivery: a partial failure, rows 0..2 only.
        return {m.message_id: Retry(0, "later") for p, m in pairs if p.n < 3 and m.receive_count == 2}

    await aws.send_many(queue.url, [{"n": i} for i in range(10)], "row")
    settings = settings_for(aws.endpoint, queue, max_in_flight=20, retry_backoff=[1])
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 10, timeout=30)
        _, m = scrape(worker.metrics)
    assert calls[0] == 10  # one batch of ten
    failed = {
        r: m[key("sqs_worker_messages_failed_total", queue="q", type="row", reason=r)]
        for r in FAILURE_REASONS
    }
    retried = m[key("sqs_worker_messages_retried_total", queue="q", type="row")]
    assert sum(calls) == 10 + 10 + 3  # ten failed, then three of them, then those three succeeded
    assert failed == {"error": 10, "timeout": 0, "retry_requested": 0, "rejected": 0}  # distinct messages
    assert retried == 13  # ten, then the three that failed again
    assert m[key("sqs_worker_messages_succeeded_total", queue="q", type="row")] == 10


async def test_a_failing_batch_on_its_last_attempt_dead_letters_every_message(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=1.0)
    async def rows(payloads: list[Row]) -> None:
        raise RuntimeError("no")

    await aws.send_many(queue.url, [{"n": i} for i in range(10)], "row")
    settings = settings_for(aws.endpoint, queue, max_in_flight=20)
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.failed == 10, timeout=20)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
        _, m = scrape(worker.metrics)
    assert m[key("sqs_worker_messages_dead_lettered_total", queue="q", type="row")] == 10
    assert m[key("sqs_worker_messages_retried_total", queue="q", type="row")] == 0
    assert m[key("sqs_worker_messages_failed_total", queue="q", type="row", reason="error")] == 10


async def test_a_failing_fifo_batch_counts_every_message_retried_in_place(aws: Aws) -> None:
    queue = await aws.queue(fifo=True, max_receive_count=5)
    router = Router()
    calls: list[list[int]] = []

    @router.batch_handler("row", max_size=10, max_wait=0.1)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        calls.append([p.n for p in payloads])
        if len(calls) == 1:
            raise RuntimeError("the whole batch failed")
        if len(calls) == 2:  # rows 1 and 3 fail: row 0 is done, rows 1.. run again in place
            pairs = zip(payloads, messages, strict=True)
            return {m.message_id: Retry(0, "later") for p, m in pairs if p.n in (1, 3)}
        return None

    for i in range(5):
        await aws.send(queue.url, {"n": i}, "row", group="g")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1])
    async with running(settings, router) as worker:
        # Rows 0, 2 and 4 succeed in the second call and are deleted, never run again.
        await eventually(lambda: worker.consumers[0].counters.succeeded == 5, timeout=30)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
        _, m = scrape(worker.metrics)
    assert calls == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [1, 3]]
    # Five failed and ran again, then the two that failed (1 and 3) ran again.
    assert m[key("sqs_worker_messages_retried_total", queue="q", type="row")] == 5 + 2
    assert m[key("sqs_worker_messages_failed_total", queue="q", type="row", reason="error")] == 5
    assert m[key("sqs_worker_messages_dead_lettered_total", queue="q", type="row")] == 0


async def test_requests_are_counted_per_queue_as_the_worker_makes_them(aws: Aws) -> None:
    """Every SQS request lands on the queue it was made for (DLQ moves and start-up lookups
    included), and the per-queue counts add up to the worker's per-operation call counts."""
    busy, idle = await aws.queue(max_receive_count=3), await aws.queue()
    router = Router()

    @router.handler("job")
    async def job(payload: dict[str, int]) -> None:
        if payload["n"] < 2:
            raise PermanentFailure("rejected: moved to the DLQ by the worker")

    n = 20
    await aws.send_many(busy.url, [{"n": i} for i in range(n)], "job")
    q = {"handlers": ["tests.support.noop"], "wait_time_seconds": 1, "pollers": 1}
    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1", "startup_timeout": 5},
            "queues": {"busy": {"name": busy.name, **q}, "idle": {"name": idle.name, **q}},
            "delete_flush_interval": 3,  # a partial batch of deletes waits for ten
            "log": {"summary_interval": 3600},
        },
    )
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == n - 2 and counters.failed == 2, timeout=20)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
    _, m = scrape(worker.metrics)  # stopped: no request in progress

    def requests(queue: str, operation: str) -> float:
        return m.get(key("sqs_worker_queue_requests_total", queue=queue, operation=operation), 0.0)

    # Batches of ten (the rejected two deleted too): a flush sends all that wait, so at most
    # one short batch more than the fewest possible.
    assert math.ceil(n / 10) <= requests("busy", "delete_message_batch") <= math.ceil(n / 10) + 1
    assert requests("busy", "send_message") == 2  # the worker's own DLQ moves, counted for their queue
    assert requests("busy", "receive_message") >= math.ceil(n / 10)
    assert requests("idle", "receive_message") >= 1  # empty receives cost too
    for queue in ("busy", "idle"):
        assert requests(queue, "change_message_visibility_batch") == 0  # quick handlers: no extension
        assert requests(queue, "get_queue_attributes") == 1
    assert requests("busy", "get_queue_url") == 2  # the queue and its DLQ
    assert requests("idle", "get_queue_url") == 1
    assert requests("idle", "delete_message_batch") == requests("idle", "send_message") == 0
    # Nothing escapes: per operation, the queues' counts are the worker's calls (every outcome).
    operations = {dict(labels)["operation"] for name, labels in m if name == "sqs_worker_aws_api_calls_total"}
    for operation in operations:
        calls = sum(
            v for (name, labels), v in m.items()
            if name == "sqs_worker_aws_api_calls_total" and dict(labels)["operation"] == operation
        )  # fmt: skip
        assert requests("busy", operation) + requests("idle", operation) == calls, operation
    assert m[key("sqs_worker_messages_received_total", queue="busy", type="job")] == n


def test_the_dashboard_uses_only_series_the_worker_exports() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sqs-worker.json").read_text())
    metrics = Metrics()
    metrics.init_queue("q", ["t"])
    _, m = scrape(metrics)
    exported = {name for name, _ in m}
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b((?:sqs_worker|process)_[a-z_]+)", expr)}
    assert used <= exported, used - exported
    # The lag quantiles and the process's CPU and memory are on it.
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({quantile}" in e and "sqs_worker_message_lag_seconds_bucket" in e
            for e in exprs
        )
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= used
    # Requests per message and the monthly request cost, per queue, from the per-queue counter.
    panels = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in dashboard["panels"]}
    per_message = panels["Requests per message"]
    assert any(
        "sqs_worker_queue_requests_total" in e
        and "sqs_worker_messages_received_total" in e
        and "by (queue)" in e
        for e in per_message
    )
    cost = panels["Estimated monthly request cost (USD)"]
    assert all("sqs_worker_queue_requests_total" in e and "by (queue)" in e for e in cost)
    assert any("$price_per_million" in e and "2592000" in e for e in cost)
    assert any("$fifo_price_per_million" in e and ".fifo" in e for e in cost)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["price_per_million"]["query"] == "0.40"
    assert variables["fifo_price_per_million"]["query"] == "0.50"


def test_null_metrics_take_every_call_and_record_nothing() -> None:
    """``worker run`` without the health server: nobody can scrape, nothing is recorded."""
    from worker.observe.metrics import NullMetrics

    metrics = NullMetrics()
    metrics.init_queue("q", ["a"])
    metrics.api_call("receive_message", "ok")
    metrics.received.labels("q", "a").inc()
    metrics.failed.labels("q", "a", "error").inc(2)
    metrics.duration.labels("q", "a").observe(0.1)
    metrics.in_flight.labels("q").set(3)
    metrics.free_slots.labels(queue="q").dec()
    metrics.tasks.set(1)
    assert metrics.queue_requests("q") is None  # the SQS client is not even wrapped
    assert isinstance(metrics, Metrics)  # a drop-in for the runtime
    # Nothing is kept: every metric and every child is the one shared no-op.
    shared: object = metrics.in_flight
    assert metrics.received.labels("q", "a") is shared
    assert "prometheus_client" not in type(shared).__module__
