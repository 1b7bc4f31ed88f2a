"""Receiving: FIFO receives carry a ReceiveRequestAttemptId kept across retries; no receive
starts once a stop was requested; the visibility counts from the request's start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import Aws, TestQueue, settings_for
from worker.aws import AwsClient
from worker.messages.envelope import Message
from worker.observe.metrics import Metrics
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Lease, Leases
from worker.runtime.poller import Poller
from worker.runtime.slots import Slots


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


def poller(
    aws: Aws, url: str, fifo: bool, sqs: AwsClient, stopping: list[bool]
) -> tuple[Poller, list[Lease]]:
    queue = TestQueue(url.rsplit("/", 1)[-1], url, "")
    settings = settings_for(aws.endpoint, queue, wait_time_seconds=1, visibility_timeout=30).queues["q"]
    got: list[Lease] = []
    slots = Slots(settings.max_in_flight)
    p = Poller(
        lambda: stopping[0],
        sqs,
        "q",
        url,
        fifo,
        settings,
        slots,
        Leases(lambda lease: slots.release()),
        QueueCounters(),
        "type",
        got.extend,
        Metrics(),
        lambda message: "t",
    )
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
