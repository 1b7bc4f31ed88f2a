"""Receiving: FIFO receives carry a ReceiveRequestAttemptId kept across retries; no receive
starts once a stop was requested; the visibility counts from the request's start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Aws, TestQueue, eventually, running, settings_for
from worker import Router
from worker.aws import AwsClient
from worker.messages.envelope import Message
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, Leases
from worker.runtime.limiter import Limiter
from worker.runtime.poller import Poller
from worker.runtime.slots import Slots
from worker.settings import Bounds


class Spy(AwsClient):
    """A real client that remembers the parameters of every call."""

    def __init__(self, client: Any, fail_first: int = 0) -> None:
        super().__init__(client)
        self.params: list[dict[str, Any]] = []
        self.fail_first = fail_first

    async def once(self, operation: str, limit: float | None, **params: Any) -> dict[str, Any]:
        self.params.append(params)
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionResetError("injected: the response was lost")
        return await super().once(operation, limit, **params)


class _Intake:
    """What a consumer gives its pollers, by hand."""

    def __init__(
        self,
        slots: Slots,
        leases: Leases,
        limiter: Limiter | None,
        stopping: list[bool],
        dispatch: Callable[[list[Lease]], None],
        retire: Callable[[], bool] | None,
    ) -> None:
        self.slots, self.leases, self.limiter = slots, leases, limiter
        self._stopping, self.dispatch, self._retire = stopping, dispatch, retire

    @property
    def stopping(self) -> bool:
        return self._stopping[0]

    def retire(self, index: int) -> bool:
        return self._retire is not None and self._retire()


def poller(
    aws: Aws,
    url: str,
    fifo: bool,
    sqs: AwsClient,
    stopping: list[bool],
    slots: Slots | None = None,
    limiter: Limiter | None = None,
    retire: Callable[[], bool] | None = None,
) -> tuple[Poller, list[Lease]]:
    queue = TestQueue(url.rsplit("/", 1)[-1], url, "")
    settings = settings_for(aws.endpoint, queue, wait_time_seconds=1, visibility_timeout=30).queues["q"]
    got: list[Lease] = []
    slots = slots or Slots(settings.in_flight_bounds.high)
    intake = _Intake(slots, Leases(lambda lease: slots.release()), limiter, stopping, got.extend, retire)
    ctx = QueueContext.link(sqs, "q", url)
    ctx.settings = settings
    p = Poller(ctx, intake, fifo)
    return p, got


async def test_fifo_receive_keeps_its_attempt_id_across_a_retry(aws: Aws) -> None:
    queue = await aws.queue(fifo=True)
    await aws.send(queue.url, {"n": 1}, "t", group="g")
    spy = Spy(aws.sqs, fail_first=1)
    p, got = poller(aws, queue.url, True, spy, [False])
    await p.receive_once()
    assert len(got) == 1
    ids = [params.get("ReceiveRequestAttemptId") for params in spy.params]
    assert len(ids) == 2
    assert ids[0]
    assert ids[0] == ids[1]


async def test_standard_receive_sends_no_attempt_id(aws: Aws) -> None:
    queue = await aws.queue()
    spy = Spy(aws.sqs)
    p, _ = poller(aws, queue.url, False, spy, [False])
    await p.receive_once()
    assert "ReceiveRequestAttemptId" not in spy.params[0]


async def test_no_receive_starts_after_stop_was_requested(aws: Aws) -> None:
    queue = await aws.queue()
    spy = Spy(aws.sqs)
    stopping = [True]
    p, _ = poller(aws, queue.url, False, spy, stopping)
    assert await p.receive_once() == 0
    await asyncio.wait_for(p.poll_forever(), 1)
    assert spy.params == []


async def test_visibility_counts_from_when_the_request_was_sent(aws: Aws) -> None:
    queue = await aws.queue()
    spy = Spy(aws.sqs)
    p, got = poller(aws, queue.url, False, spy, [False])
    before = time.monotonic()
    task = asyncio.create_task(p.receive_once())
    await asyncio.sleep(0.3)  # the long poll is waiting
    await aws.send(queue.url, {"n": 1}, "t")
    await task
    assert len(got) == 1
    assert before <= got[0].granted_at < before + 0.3
    assert isinstance(got[0].message, Message)


async def test_a_retired_poller_ends_after_its_receive_with_what_it_got_handed_over(aws: Aws) -> None:
    queue = await aws.queue()
    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "t")
    spy = Spy(aws.sqs)
    asked: list[int] = []

    def go() -> bool:
        asked.append(len(got))
        return True

    p, got = poller(aws, queue.url, False, spy, [False], retire=go)
    await asyncio.wait_for(p.poll_forever(), 10)  # retires after its first receive
    assert len(spy.params) == 1
    assert asked == [len(got)]  # asked only once the receive's messages were handed over
    assert 1 <= len(got) <= 3
    assert all(lease.live for lease in got)  # leased and dispatched, not dropped
    answers = [False, False, True]  # told to stay twice, to go the third time

    def retire() -> bool:
        return answers.pop(0)

    q, _ = poller(aws, queue.url, False, Spy(aws.sqs), [False], retire=retire)
    await asyncio.wait_for(q.poll_forever(), 10)
    assert answers == []


async def test_each_receive_is_reported_to_the_limiter_with_what_was_free(aws: Aws) -> None:
    queue = await aws.queue()
    await aws.send_many(queue.url, [{"n": i} for i in range(4)], "t")
    limiter = Limiter(Bounds(10, 100), Bounds(1, 4), 10, time.monotonic())
    slots = Slots(15)
    await slots.acquire(9)  # 6 free: fewer than a batch
    p, got = poller(aws, queue.url, False, Spy(aws.sqs), [False], slots=slots, limiter=limiter)
    while len(got) < 4:
        await p.receive_once()
    window = limiter._window
    assert window.messages == 4
    assert window.starved == window.receives >= 1
    assert window.full == 0  # asked for 6 each time, got fewer: no backlog
    assert slots.used == 9 + 4  # what came holds its slots; the rest was given back


async def test_a_lease_counts_from_the_receive_response_not_from_the_long_polls_start(aws: Aws) -> None:
    # visibility_timeout below wait_time_seconds: a message that arrives late in a long
    # poll has its whole visibility ahead of it, not a lease that looks lapsed on arrival.
    queue = await aws.queue(visibility=3)
    router = Router()

    @router.handler("work")
    async def work(payload: dict[str, int]) -> None:
        await asyncio.sleep(0.5)

    settings = settings_for(
        aws.endpoint, queue, wait_time_seconds=10, visibility_timeout=3, pollers=1, max_in_flight=10
    )
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await asyncio.sleep(6)  # the long poll has been open for 6 s
        await aws.send(queue.url, {"n": 1}, "work")
        await eventually(lambda: consumer.counters.succeeded == 1 and consumer.in_flight == 0, timeout=20)
        assert consumer.counters.overdue == 0
        assert not consumer.acker.deliveries._unsure  # its delete was confirmed in time
