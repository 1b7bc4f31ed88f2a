"""Visibility extension against LocalStack: a slow handler must run exactly once."""

from __future__ import annotations

import asyncio

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router


async def test_handler_slower_than_visibility_timeout_runs_exactly_once(aws: Aws) -> None:
    queue = await aws.queue(visibility=2)
    calls: list[str] = []
    router = Router()

    @router.handler("slow")
    async def slow(payload: dict[str, int], message: Message) -> None:
        calls.append(message.message_id)
        await asyncio.sleep(7)  # 3.5x the visibility timeout

    settings = settings_for(aws.endpoint, queue, visibility_timeout=2, heartbeat_interval=0.8, pollers=3)
    message_id = await aws.send(queue.url, {"n": 1}, "slow")
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.succeeded == 1, timeout=20)
        await eventually(lambda: worker.consumers[0].acker.pending == 0)
        await asyncio.sleep(0.5)
    assert calls == [message_id]
    assert stats.extended >= 5  # every 0.8 s over 7 s, batched per queue
    assert stats.received == 1
    assert await aws.total(queue.url) == 0  # deleted


async def test_extensions_are_batched_per_queue(aws: Aws) -> None:
    queue = await aws.queue(visibility=2)
    router = Router()
    done = asyncio.Event()

    @router.handler("slow")
    async def slow(payload: dict[str, int]) -> None:
        await done.wait()

    settings = settings_for(aws.endpoint, queue, visibility_timeout=3, heartbeat_interval=1)
    await aws.send_many(queue.url, [{"n": i} for i in range(20)], "slow")
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.in_flight == 20)
        before = consumer.heartbeat._sqs.calls["change_message_visibility_batch"]
        await asyncio.sleep(3.2)
        worker_calls = consumer.heartbeat._sqs.calls["change_message_visibility_batch"]
        extended = consumer.counters.extended
        done.set()
        await eventually(lambda: consumer.counters.succeeded == 20)
    # 20 messages, ~3 ticks: ~6 batch calls, not ~60 single ones.
    assert extended >= 40
    assert worker_calls - before <= extended / 10 + 3
