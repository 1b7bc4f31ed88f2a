"""Rates, caps of runs at once and slow mode (worker/runtime/flow.py, steps/limits.py),
through the processor's step chain, server-free: messages start no faster and no more at
once than their limits allow; waiting spends no attempt."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from worker import Message, Router
from worker.messages.envelope import parse_message
from worker.messages.routing import Registry
from worker.runtime.context import QueueContext
from worker.runtime.flow import TokenBucket
from worker.runtime.lease import Lease, Leases
from worker.runtime.processor import Processor
from worker.settings import QueueSettings
from worker.testing import sqs_message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_starts_a_burst_then_paces_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == 0.1  # the fourth waits a tenth of a second
    assert bucket.take() == 0.2  # and the fifth queues behind it
    assert bucket.within(1.0) == 8  # what may start within a second from now (-2 + 10)
    clock.now += 10
    assert bucket.within(0) == 3  # never more than the burst
    bucket.give_back()
    assert bucket.within(0) == 3


class Running:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.per_group: dict[str | None, int] = {}
        self.most_per_group: dict[str | None, int] = {}
        self.started: list[float] = []

    async def run(self, message: Message, seconds: float = 0.05) -> None:
        group = message.group_id
        self.started.append(time.monotonic())
        self.now += 1
        self.per_group[group] = self.per_group.get(group, 0) + 1
        self.most = max(self.most, self.now)
        self.most_per_group[group] = max(self.most_per_group.get(group, 0), self.per_group[group])
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1
            self.per_group[group] -= 1


def _processor(router: Router, **settings: Any) -> Processor:
    queue = QueueSettings(handlers=["<t>"], retry_backoff=[5], retry_jitter=0, **settings)
    return Processor(QueueContext.standalone("q", queue, Registry.of(router), max_receive_count=5))


def _lease(body: Any = None, message_type: str = "t", group: str | None = None) -> Lease:
    raw = sqs_message(body if body is not None else {}, type=message_type, group_id=group)
    return Leases(lambda lease: None).open(parse_message(raw), raw, time.monotonic(), 30)


async def _all(processor: Processor, leases: list[Lease]) -> list[str]:
    runs = await asyncio.gather(*(processor.run(None, [lease]) for lease in leases))
    return [items[0].outcome.kind for items in runs if items[0].outcome is not None]


async def test_max_concurrency_and_its_config_override() -> None:
    running = Running()
    router = Router()

    @router.handler("t", max_concurrency=3)
    async def t(body: Any, message: Message) -> None:
        await running.run(message)

    assert await _all(_processor(router), [_lease() for _ in range(9)]) == ["succeeded"] * 9
    assert running.most == 3
    running.most = 0
    overridden = _processor(router, routes={"t": {"max_concurrency": 1}})
    assert await _all(overridden, [_lease() for _ in range(4)]) == ["succeeded"] * 4
    assert running.most == 1


async def test_max_per_group_keeps_one_tenant_from_taking_every_run() -> None:
    running = Running()
    router = Router()

    @router.handler("t")
    async def t(body: Any, message: Message) -> None:
        await running.run(message, 0.1)

    processor = _processor(router, max_per_group=2)
    noisy = [_lease(group="noisy") for _ in range(8)]
    quiet = [_lease(group=f"quiet-{i}") for i in range(3)]
    started = time.monotonic()
    task = asyncio.gather(*(processor.run(None, [lease]) for lease in noisy + quiet))
    await asyncio.sleep(0.05)
    assert running.per_group.get("noisy") == 2  # the rest of its messages wait, leased
    assert all(running.per_group.get(f"quiet-{i}") == 1 for i in range(3))  # the others run now
    await task
    assert running.most_per_group["noisy"] == 2
    assert time.monotonic() - started >= 0.4  # 8 noisy in pairs of 0.1 s
    assert all(lease.failures == 0 for lease in noisy)


async def test_a_rate_paces_starts_after_its_burst() -> None:
    running = Running()
    router = Router()

    @router.handler("t", rate=20, burst=2)
    async def t(body: Any, message: Message) -> None:
        await running.run(message, 0)

    assert await _all(_processor(router), [_lease() for _ in range(12)]) == ["succeeded"] * 12
    span = running.started[-1] - running.started[0]
    assert 0.45 <= span <= 0.8, span  # 2 at once, then 10 at 20/s: 0.5 s


async def test_slow_mode_runs_one_at_a_time_after_failures_until_a_success() -> None:
    running = Running()
    router = Router()
    failing = [True]

    @router.handler("t")
    async def t(body: Any, message: Message) -> None:
        await running.run(message, 0.05)
        if failing[0]:
            raise ConnectionError("down")

    processor = _processor(router, slow_mode_after=2)
    with structlog.testing.capture_logs() as logs:
        assert await _all(processor, [_lease() for _ in range(2)]) == ["failed", "failed"]
        running.most = 0
        assert await _all(processor, [_lease() for _ in range(4)]) == ["failed"] * 4
        assert running.most == 1  # slow mode: one at a time
        failing[0] = False
        assert await _all(processor, [_lease() for _ in range(3)]) == ["succeeded"] * 3
        running.most = 0
        assert await _all(processor, [_lease() for _ in range(4)]) == ["succeeded"] * 4
    assert running.most == 4  # ended by the success
    events = [e["event"] for e in logs if e["event"].startswith("slow_mode")]
    assert events == ["slow_mode_started", "slow_mode_ended"]


def test_no_limits_no_step() -> None:
    router = Router()

    @router.handler("t")
    async def t(body: Any) -> None: ...

    steps = [type(step).__name__ for step in _processor(router).steps]
    assert "LimitsStep" not in steps
    assert "LimitsStep" in [type(step).__name__ for step in _processor(router, max_per_group=1).steps]


def test_a_bucket_refuses_a_rate_it_cannot_keep_and_its_burst_is_at_least_one() -> None:
    import pytest

    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(0)
    assert TokenBucket(5).burst == 5  # the burst defaults to the rate
    assert TokenBucket(0.5).burst == 1  # never less than one message
    clock = Clock()
    bucket = TokenBucket(2, burst=1, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() == 0.5
    bucket.give_back()
    assert bucket.within(0) == 0  # -1 + 1: no token now
    clock.now += 0.5
    assert bucket.within(0) == 1


def test_slow_mode_counts_each_failure_once_and_after_one_means_one() -> None:
    from worker.runtime.flow import SlowMode

    slow = SlowMode(after=3)
    assert [slow.failed() for _ in range(4)] == [False, False, True, False]  # starts once
    assert slow.on
    assert slow.succeeded()
    assert not slow.on
    assert not slow.succeeded()  # already off
    assert [slow.failed() for _ in range(3)] == [False, False, True]  # counted from zero again
    one = SlowMode(after=1)
    assert one.failed()
    assert one.on
    off = SlowMode(after=0)
    assert not off.failed()
    assert not off.on
