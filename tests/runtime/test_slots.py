"""The in-flight bound: full batches when they come quickly, what fits after a short wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router
from worker.runtime.slots import Slots


async def test_takes_a_full_batch_when_free() -> None:
    slots = Slots(20)
    assert await slots.acquire(10, wait=1) == 10
    assert slots.free == 10


async def test_waits_for_a_full_batch_then_takes_what_fits() -> None:
    slots = Slots(10)
    await slots.acquire(7)
    started = time.monotonic()
    took = await slots.acquire(10, wait=0.2)
    assert took == 3
    assert 0.15 <= time.monotonic() - started < 1
    assert slots.free == 0


async def test_a_full_batch_freed_within_the_wait_is_taken_whole_at_once() -> None:
    slots = Slots(10)
    await slots.acquire(10)
    asyncio.get_running_loop().call_later(0.05, slots.release, 10)
    started = time.monotonic()
    assert await slots.acquire(10, wait=5) == 10
    assert time.monotonic() - started < 2  # as soon as the batch is free, not at the deadline


async def test_without_a_wait_takes_what_fits_at_once() -> None:
    slots = Slots(10)
    await slots.acquire(7)
    started = time.monotonic()
    assert await slots.acquire(10) == 3
    assert time.monotonic() - started < 0.5


async def test_asks_for_at_least_one_and_takes_no_more_than_asked() -> None:
    slots = Slots(5)
    assert await slots.acquire(1) == 1
    assert await slots.acquire(0) == 1
    assert slots.free == 3


async def test_the_last_free_slot_is_taken() -> None:
    slots = Slots(5)
    await slots.acquire(4)
    assert await asyncio.wait_for(slots.acquire(10, wait=0.05), 2) == 1
    assert slots.free == 0


async def test_never_takes_more_than_the_limit_and_waits_for_at_least_one() -> None:
    slots = Slots(5)
    await slots.acquire(5)
    waiter = asyncio.create_task(slots.acquire(10, wait=0.01))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # nothing free: waits however long it takes
    slots.release(2)
    assert await waiter == 2
    assert slots.used == 5


async def test_release_gives_back_exactly_what_it_is_told() -> None:
    slots = Slots(5)
    await slots.acquire(5)
    slots.release()  # a lease's end frees one slot
    assert slots.free == 1
    slots.release(1)
    slots.release(0)
    assert slots.free == 2
    slots.release(3)
    assert slots.free == 5


async def test_an_extra_release_never_raises_the_bound() -> None:
    slots = Slots(3)
    await slots.acquire(2)
    slots.release(5)  # a bookkeeping bug: more given back than was taken
    assert slots.free == 3
    assert await slots.acquire(10) == 3
    assert slots.free == 0


async def test_free_slots_are_used_while_slow_messages_hold_the_rest(aws: Aws) -> None:
    # max_in_flight 20, batch 10: 11 slow messages hold 11 slots; the 9 free ones must
    # take the fast messages at once, not after the slow ones finish.
    queue = await aws.queue()
    release = asyncio.Event()
    fast_done: list[float] = []
    router = Router()

    @router.handler("slow")
    async def slow(payload: dict[str, int]) -> None:
        await release.wait()

    @router.handler("fast")
    async def fast(payload: dict[str, int], message: Message) -> None:
        fast_done.append(time.monotonic())

    await aws.send_many(queue.url, [{"n": i} for i in range(11)], "slow")
    settings = settings_for(aws.endpoint, queue, max_in_flight=20, pollers=2)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.in_flight == 11, timeout=20)
        sent = time.monotonic()
        await aws.send_many(queue.url, [{"n": i} for i in range(9)], "fast")
        await eventually(lambda: len(fast_done) == 9, timeout=10)
        assert max(fast_done) - sent < 5
        release.set()
        await eventually(lambda: consumer.counters.succeeded == 20, timeout=20)


async def test_a_raised_limit_wakes_a_waiting_poller_at_once() -> None:
    slots = Slots(10)
    await slots.acquire(10)
    waiter = asyncio.create_task(slots.acquire(10, wait=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    started = time.monotonic()
    slots.resize(30)
    assert await asyncio.wait_for(waiter, 1) == 10  # a full batch of the new slots
    assert time.monotonic() - started < 0.5
    assert (slots.limit, slots.free) == (30, 10)


async def test_a_lowered_limit_takes_nothing_from_what_is_in_flight() -> None:
    slots = Slots(30)
    await slots.acquire(25)
    slots.resize(10)
    assert (slots.used, slots.free) == (25, 0)  # never negative
    waiter = asyncio.create_task(slots.acquire(10))
    slots.release(10)  # 15 in use: still above the new limit
    await asyncio.sleep(0.05)
    assert not waiter.done()
    slots.release(8)  # 7 in use: 3 free under the new limit
    assert await asyncio.wait_for(waiter, 1) == 3
    assert slots.used == 10


async def test_slot_seconds_integrate_the_slots_in_use_over_time() -> None:
    now = [50.0]
    slots = Slots(20, clock=lambda: now[0])
    now[0] += 3  # nothing in use
    assert slots.slot_seconds() == 0
    await slots.acquire(10)
    now[0] += 0.5
    assert slots.slot_seconds() == pytest.approx(5.0)
    slots.release(4)
    now[0] += 2
    slots.release(6)
    now[0] += 1
    assert slots.slot_seconds() == pytest.approx(5.0 + 12.0)
    slots.resize(5)
    await slots.acquire(5)
    now[0] += 1
    assert slots.slot_seconds() == pytest.approx(17.0 + 5.0)
