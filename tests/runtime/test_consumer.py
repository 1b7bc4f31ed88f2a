"""Consumer behaviour against LocalStack: FIFO order per group, parallel groups,
backpressure on messages in flight."""

from __future__ import annotations

import asyncio

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router


async def test_fifo_order_per_group_holds_under_failures_while_groups_run_in_parallel(aws: Aws) -> None:
    queue = await aws.queue(fifo=True, max_receive_count=5)
    groups, per_group = 4, 8
    done: dict[str, list[int]] = {f"g{g}": [] for g in range(groups)}
    running_now: dict[str, int] = {}
    overlap_in_group = 0
    max_groups_at_once = 0
    router = Router()

    @router.handler("step")
    async def step(payload: dict[str, int], message: Message) -> None:
        nonlocal overlap_in_group, max_groups_at_once
        group = message.group_id
        assert group is not None
        if running_now.get(group):
            overlap_in_group += 1
        running_now[group] = running_now.get(group, 0) + 1
        max_groups_at_once = max(max_groups_at_once, sum(1 for v in running_now.values() if v))
        try:
            await asyncio.sleep(0.1)
            if group == "g1" and payload["seq"] == 2 and message.receive_count == 1:
                raise RuntimeError("transient failure in the middle of a group")
            done[group].append(payload["seq"])
        finally:
            running_now[group] -= 1

    for seq in range(per_group):
        for g in range(groups):
            await aws.send(queue.url, {"seq": seq}, "step", group=f"g{g}")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1], max_in_flight=40, pollers=2)
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.succeeded == groups * per_group, timeout=40)
    assert overlap_in_group == 0
    assert max_groups_at_once >= 2
    for group, seqs in done.items():
        assert seqs == list(range(per_group)), group
    assert stats.failed == 1
    # Retried in place: g1's later messages were held, never given back or dead-lettered.
    assert stats.released == 0
    assert stats.dead_lettered == 0
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_pollers_never_hold_more_than_max_in_flight(aws: Aws) -> None:
    queue = await aws.queue()
    router = Router()
    active = 0
    peak = 0

    @router.handler("work")
    async def work(payload: dict[str, int]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        active -= 1

    await aws.send_many(queue.url, [{"n": i} for i in range(60)], "work")
    settings = settings_for(aws.endpoint, queue, pollers=4, max_in_flight=12, batch_size=10)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        in_flight_seen = 0
        while consumer.counters.succeeded < 60:
            in_flight_seen = max(in_flight_seen, consumer.in_flight)
            # Not received while no slot is free: SQS still shows them as visible.
            await asyncio.sleep(0.02)
    assert peak <= 12
    assert in_flight_seen <= 12
    assert peak >= 10  # and the bound is used
