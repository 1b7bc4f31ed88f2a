"""Settling against LocalStack and the fault proxy: a lease holds its slot and its
extensions until SQS confirms the delete; slow deletes slow receiving; failed entries come
back after a backoff; a stop during an outage ends at its deadline."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bench.run import Proxy
from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router
from worker.aws import AwsClient
from worker.messages.envelope import parse_message
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Leases, State


async def test_a_message_received_twice_is_deleted_without_batch_id_clash(aws: Aws) -> None:
    """Two receipts of one message in one DeleteMessageBatch: ids stay unique."""
    queue = await aws.queue()
    await aws.sqs.send_message(QueueUrl=queue.url, MessageBody="{}")
    first = (await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=0))["Messages"][0]
    await asyncio.sleep(1)  # LocalStack makes it visible again a little late
    second = (await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=30))["Messages"][0]
    assert first["MessageId"] == second["MessageId"]
    acker = Acker(AwsClient(aws.sqs), "dup", queue.url, QueueCounters(), Metrics(), flush_interval=0.01)
    ended: list[Any] = []
    leases = Leases(ended.append)
    acker.start()
    for raw in (first, second):
        lease = leases.open(parse_message(raw), raw, time.monotonic(), 30)
        lease.settle_delete()
        acker.submit(lease)
    assert await acker.close(time.monotonic() + 10) == 0
    assert len(ended) == 2
    assert {lease.state for lease in ended} <= {State.SETTLED, State.LAPSED}
    assert await aws.total(queue.url) == 0


async def test_slot_and_extensions_are_kept_until_the_delete_is_confirmed(aws: Aws, proxy: Proxy) -> None:
    # Deletes take 5 s, the visibility is 3 s: without extensions while the delete is
    # pending, the message would be handed out again and run twice.
    await asyncio.to_thread(proxy.faults, op_latency={"DeleteMessageBatch": 5})
    queue = await aws.queue(visibility=3)
    runs: Counter[str] = Counter()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int], message: Message) -> None:
        runs[message.message_id] += 1

    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "quick")
    cfg = settings_for(
        proxy.url, queue, visibility_timeout=3, heartbeat_interval=1, max_in_flight=5, batch_size=5
    )
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: len(runs) == 5, timeout=20)
        await asyncio.sleep(1)
        assert consumer.in_flight == 5  # handled, delete pending: still leased
        assert consumer.slots.free == 0  # so nothing more is received meanwhile
        await eventually(lambda: consumer.in_flight == 0, timeout=20)
        assert consumer.counters.overdue == 0
    assert max(runs.values()) == 1
    assert await aws.total(queue.url) == 0


async def test_slow_deletes_slow_receiving(aws: Aws, proxy: Proxy) -> None:
    # Every delete takes 2 s and only 10 messages may be in flight (handled or waiting for
    # their delete): 40 no-op messages need at least four delete rounds.
    await asyncio.to_thread(proxy.faults, op_latency={"DeleteMessageBatch": 2})
    queue = await aws.queue()
    seen = 0
    peak = 0
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        nonlocal seen

        seen += 1

    await aws.send_many(queue.url, [{"n": i} for i in range(40)], "quick")
    cfg = settings_for(proxy.url, queue, max_in_flight=10, pollers=2)
    started = time.monotonic()
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]

        async def done() -> bool:
            nonlocal peak
            peak = max(peak, consumer.in_flight)
            return consumer.counters.succeeded == 40 and consumer.in_flight == 0

        await eventually(done, timeout=60, every=0.05)
    assert peak <= 10
    assert time.monotonic() - started >= 4 * 2 - 0.5


async def test_failed_delete_entries_come_back_after_a_backoff(aws: Aws, proxy: Proxy) -> None:
    await asyncio.to_thread(proxy.faults, batch_entry_fail_rate=1.0)
    queue = await aws.queue()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        pass

    await aws.send(queue.url, {"n": 1}, "quick")
    cfg = settings_for(proxy.url, queue)
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 1, timeout=20)
        before = (await asyncio.to_thread(proxy.counts))["ops"].get("DeleteMessageBatch", 0)
        await asyncio.sleep(1.5)
        during = (await asyncio.to_thread(proxy.counts))["ops"].get("DeleteMessageBatch", 0) - before
        assert during <= 4  # 0.2, 0.4, 0.8 s ... not a retry every few milliseconds
        assert consumer.in_flight == 1  # still leased, still extended
        await asyncio.to_thread(proxy.faults)
        await eventually(lambda: consumer.in_flight == 0, timeout=20)
    assert await aws.total(queue.url) == 0


async def test_a_stop_during_an_outage_ends_at_its_deadline(aws: Aws, proxy: Proxy) -> None:
    queue = await aws.queue()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        await proxy_blackholed.wait()

    proxy_blackholed = asyncio.Event()
    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "quick")
    cfg = settings_for(proxy.url, queue, shutdown_grace=1, shutdown_flush=2)
    worker_ctx = running(cfg, router)
    worker = await worker_ctx.__aenter__()
    await eventually(lambda: worker.consumers[0].in_flight == 5, timeout=20)
    await asyncio.to_thread(proxy.faults, blackhole_seconds=60)
    proxy_blackholed.set()
    stopped = time.monotonic()
    await worker_ctx.__aexit__(None, None, None)
    assert time.monotonic() - stopped < 1 + 2 + 2  # not 2 minutes of retries per batch
    await asyncio.to_thread(proxy.faults)
