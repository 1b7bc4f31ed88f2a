"""The one settle loop (worker/runtime/runner.py) against LocalStack: the rules every message
follows, single or batch, standard or FIFO, each pinned by a test named after it."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import BaseModel

from benchmarks.harness import Proxy
from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router
from worker.idempotency.store import MemoryStore, Record
from worker.messages.payload_store import PayloadStore
from worker.messages.payloads import PayloadPointer


class Row(BaseModel):
    n: int


async def test_a_fifo_batch_member_counts_only_its_own_failures(aws: Aws) -> None:
    # Group [A, B]: A always fails; B fails in the first call only. B succeeds in the
    # second call and is deleted then: never run again behind A, never dead-lettered for
    # A's failures. A reaches the DLQ after its own three attempts.
    queue = await aws.queue(fifo=True, max_receive_count=3)
    seen: dict[int, list[int]] = {0: [], 1: []}
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        failed: dict[str, BaseException] = {}
        for row, message in zip(payloads, messages, strict=True):
            seen[row.n].append(message.receive_count)  # the attempt number the handler sees
            if row.n == 0 or len(seen[1]) == 1:
                failed[message.message_id] = RuntimeError(f"row {row.n} fails")
        return failed or None

    for n in range(2):
        await aws.send(queue.url, {"n": n}, "row", group="g")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[0.2])
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.dead_lettered == 1 and consumer.in_flight == 0, timeout=30)
        counters = consumer.counters
    assert seen == {0: [1, 2, 3], 1: [1, 2]}  # B: ran twice (its one failure), then never again
    assert counters.succeeded == 1  # B once: a member only waiting is not a success
    assert queue.dlq_url
    [dead] = await aws.drain(queue.dlq_url)
    assert '"n": 0' in dead["Body"] or '"n":0' in dead["Body"]


async def test_a_batch_handlers_own_cancelled_error_is_a_failure_and_its_messages_run_again(
    aws: Aws,
) -> None:
    queue = await aws.queue(max_receive_count=5)
    calls: list[int] = []
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    async def rows(payloads: list[Row]) -> None:
        calls.append(len(payloads))
        if len(calls) == 1:
            raise asyncio.CancelledError()  # e.g. an inner task it cancelled, let out

    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "row")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1])
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 3 and consumer.in_flight == 0, timeout=30)
        assert consumer.counters.failed == 3
    assert sum(calls) == 6  # failed once each, given back after the backoff, run again
    assert await aws.total(queue.url) == 0


async def test_a_plain_function_batch_past_max_processing_time_runs_once_and_its_result_counts(
    aws: Aws,
) -> None:
    # A thread cannot be stopped: its messages stay leased (extended) while it runs and
    # are never run a second time beside it; when it returns, they are deleted.
    queue = await aws.queue(visibility=2, max_receive_count=2)
    calls: list[int] = []
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    def rows(payloads: list[Row]) -> None:
        calls.append(len(payloads))
        time.sleep(4)

    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "row")
    settings = settings_for(
        aws.endpoint, queue, max_processing_time=1, visibility_timeout=2, heartbeat_interval=0.6
    )
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 3 and consumer.in_flight == 0, timeout=30)
        assert consumer.counters.failed == 0
        assert consumer.counters.received == 3
    assert sum(calls) == 3
    assert await aws.total(queue.url) == 0
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_a_single_plain_function_past_max_processing_time_is_not_run_twice(aws: Aws) -> None:
    queue = await aws.queue(visibility=2, max_receive_count=2)
    calls: list[int] = []
    router = Router()

    @router.handler("row")
    def row(payload: Row) -> None:
        calls.append(payload.n)
        time.sleep(3)

    await aws.send(queue.url, {"n": 1}, "row")
    settings = settings_for(
        aws.endpoint, queue, max_processing_time=1, visibility_timeout=2, heartbeat_interval=0.6
    )
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 1 and consumer.in_flight == 0, timeout=30)
    assert calls == [1]
    assert await aws.total(queue.url) == 0


class _FlakyStore(MemoryStore):
    """A memory store that cannot be reached while ``down``."""

    down = True

    async def claim(self, record: Record, now: float) -> Record | None:
        if self.down:
            raise ConnectionError("store unreachable")
        return await super().claim(record, now)


async def test_an_unreachable_idempotency_store_makes_messages_wait_without_spending_attempts(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # maxReceiveCount 2: with the store down for ~5 s, a failure per run would dead-letter
    # the message without its handler ever running. It waits, leased, and runs once.
    queue = await aws.queue(max_receive_count=2)
    runs: list[int] = []
    router = Router()

    @router.handler("pay", idempotent=True)
    async def pay(payload: dict[str, int], message: Message) -> None:
        runs.append(message.receive_count)

    store = _FlakyStore()
    monkeypatch.setattr("worker.runtime.supervisor.MemoryStore", lambda: store)
    await aws.send(queue.url, {"n": 1}, "pay")
    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.waiting >= 3, timeout=20)
        assert runs == []
        assert consumer.counters.failed == 0
        store.down = False
        await eventually(lambda: consumer.counters.succeeded == 1 and consumer.in_flight == 0, timeout=30)
        assert consumer.counters.received == 1  # waited leased: never given back
    assert runs == [1]
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_an_unreachable_s3_makes_an_offloaded_message_wait_without_spending_attempts(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = await aws.queue(max_receive_count=2)
    runs: list[str] = []
    router = Router()

    @router.handler("blob")
    async def blob(payload: dict[str, str]) -> None:
        runs.append(payload["data"])

    down = [True]
    real_fetch = PayloadStore.fetch

    async def fetch(self: PayloadStore, pointer: PayloadPointer) -> tuple[bytes, dict[str, str]]:
        if down[0]:
            raise ConnectionError("s3 unreachable")
        return await real_fetch(self, pointer)

    monkeypatch.setattr(PayloadStore, "fetch", fetch)
    bucket = "payloads-wait"
    async with PayloadStore.connect(settings_for(aws.endpoint, queue).aws) as store:
        await (await store.client()).call("create_bucket", Bucket=bucket)
        pointer = await store.put('{"data": "kept"}', bucket=bucket, readers="one")
    await aws.sqs.send_message(
        QueueUrl=queue.url,
        MessageBody=pointer.body(),
        MessageAttributes={
            "type": {"DataType": "String", "StringValue": "blob"},
            "ExtendedPayloadSize": {"DataType": "Number", "StringValue": "16"},
        },
    )
    async with running(settings_for(aws.endpoint, queue), router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.waiting >= 3, timeout=20)
        assert runs == []
        down[0] = False
        await eventually(lambda: consumer.counters.succeeded == 1 and consumer.in_flight == 0, timeout=30)
        assert consumer.counters.received == 1
        assert consumer.counters.failed == 0
    assert runs == ["kept"]
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_a_redelivery_of_a_message_still_running_here_is_not_run_beside_it(
    aws: Aws, proxy: Proxy
) -> None:
    # Extensions hang (black-holed): the running message's 2 s visibility runs out and SQS
    # hands it to this worker again. The new delivery waits for the run; the run's outcome
    # is settled with the new receipt handle (the one SQS honours): deleted, run once.
    await asyncio.to_thread(
        proxy.faults, blackhole_ops={"ChangeMessageVisibilityBatch": 50}, blackhole_op_seconds=30
    )
    queue = await aws.queue(visibility=2, max_receive_count=5)
    runs: list[int] = []
    router = Router()

    @router.handler("slow")
    async def slow(payload: dict[str, int], message: Message) -> None:
        runs.append(message.receive_count)
        await asyncio.sleep(5)

    await aws.send(queue.url, {"n": 1}, "slow")
    settings = settings_for(
        proxy.url, queue, visibility_timeout=2, heartbeat_interval=1, wait_time_seconds=1, pollers=1
    )
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.redelivered_running >= 1, timeout=20)
        await asyncio.to_thread(proxy.faults)  # extensions work again
        await eventually(lambda: consumer.counters.succeeded == 1 and consumer.in_flight == 0, timeout=30)
        await asyncio.sleep(3)  # (a second run would have started by now)
    assert runs == [1]
    assert await aws.total(queue.url) == 0


async def test_a_shutdown_during_the_workers_own_dlq_move_finishes_the_move_once(
    aws: Aws, proxy: Proxy
) -> None:
    # The DLQ copy's SendMessage takes 2 s; the grace ends after 0.5 s. The move is not cut
    # short: the copy lands once and the original is deleted (nothing left running, no
    # second copy after a redelivery).
    queue = await aws.queue(max_receive_count=3)
    router = Router()

    @router.handler("bad")
    async def bad(payload: dict[str, int]) -> None:
        from worker import PermanentFailure

        raise PermanentFailure("never")

    await aws.send(queue.url, {"n": 1}, "bad")
    settings = settings_for(proxy.url, queue, shutdown_grace=0.5, shutdown_flush=5)
    await asyncio.to_thread(proxy.faults, op_latency={"SendMessage": 2.0})
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.rejected == 1, timeout=20, every=0.05)
        assert consumer.counters.dead_lettered == 0  # the move is on its way as the stop begins
    await asyncio.to_thread(proxy.faults)
    assert consumer.counters.dead_lettered == 1
    assert consumer.in_flight == 0
    assert await aws.total(queue.url) == 0
    assert queue.dlq_url
    assert len(await aws.drain(queue.dlq_url)) == 1
