"""The circuit breaker's states, on an injected clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from worker import DependencyUnavailable, Message, PermanentFailure, Router
from worker.messages.envelope import parse_message
from worker.messages.routing import Registry
from worker.observe.metrics import NullMetrics
from worker.runtime.breaker import Breaker, BreakerPolicy, Breakers
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, Leases
from worker.runtime.processor import Processor
from worker.settings import QueueSettings
from worker.testing import sqs_message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: Breaker) -> str:
    return breaker.state.value


def _breaker(**policy: float) -> tuple[Breaker, Clock, list[tuple[str, str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str, str]] = []
    breaker = Breaker(
        "payments",
        BreakerPolicy(**policy),  # type: ignore[arg-type]
        clock=clock,
        on_change=lambda name, old, new, why: changes.append((old.value, new.value, why)),
    )
    return breaker, clock, changes


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    breaker, _, changes = _breaker(failures=3, min_calls=100)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert _state(breaker) == "closed"
    assert breaker.allow()
    breaker.failed()
    assert _state(breaker) == "open"
    assert not breaker.allow()
    assert changes == [("closed", "open", "3 consecutive failures")]


def test_a_failure_ratio_over_the_window_opens_it_and_old_calls_leave_the_window() -> None:
    breaker, clock, changes = _breaker(failures=100, ratio=0.5, window=10, min_calls=4)
    for failed in (True, False, True):
        breaker.failed() if failed else breaker.succeeded()
    assert _state(breaker) == "closed"  # 3 calls: fewer than min_calls
    clock.now += 11  # those three leave the window
    breaker.succeeded()
    breaker.succeeded()
    breaker.failed()
    assert _state(breaker) == "closed"  # 1 of 3 in the window
    breaker.failed()
    assert _state(breaker) == "open"  # 2 of 4
    assert changes == [("closed", "open", "2 of 4 calls failed in 10s")]


def test_open_lets_one_probe_through_after_open_for_and_a_success_closes_it() -> None:
    breaker, clock, changes = _breaker(failures=1, open_for=30)
    breaker.failed()
    clock.now += 29.9
    assert not breaker.allow()
    assert breaker.reopens_in > 0
    clock.now += 0.1
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one at a time
    breaker.succeeded()
    assert _state(breaker) == "closed"
    assert breaker.allow()
    assert [c[1] for c in changes] == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_it_for_twice_as_long_up_to_the_cap() -> None:
    breaker, clock, _ = _breaker(failures=1, open_for=10, max_open_for=25)
    breaker.failed()
    for expected in (20, 25, 25):
        clock.now += 100
        assert breaker.allow()
        breaker.failed()
        assert _state(breaker) == "open"
        assert breaker.reopens_in == expected
    clock.now += 25
    assert breaker.allow()
    breaker.succeeded()
    breaker.failed()  # closed again, with the first open time restored
    assert breaker.reopens_in == 10


def test_a_released_probe_lets_another_through() -> None:
    breaker, clock, _ = _breaker(failures=1, open_for=1)
    breaker.failed()
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_dependency_unavailable_opens_at_once_for_its_retry_after() -> None:
    breaker, clock, changes = _breaker(failures=5, open_for=30, max_open_for=300)
    breaker.unavailable(retry_after=7)
    assert _state(breaker) == "open"
    assert breaker.reopens_in == 7
    clock.now += 5
    breaker.unavailable(retry_after=7)  # said again while open: from now
    assert breaker.reopens_in == 7
    breaker.unavailable(retry_after=10_000)
    assert breaker.reopens_in == 300
    assert changes == [("closed", "open", "dependency unavailable")]


# -- the step: what a call tells its dependencies' breakers ----------------------------------
def _processor_with(router: Any, breakers: Breakers) -> Processor:
    settings = QueueSettings(handlers=["<t>"], retry_backoff=[5], retry_jitter=0)
    ctx = QueueContext.standalone("q", settings, Registry.of(router), max_receive_count=5)
    ctx.breakers = breakers
    return Processor(ctx)


def _lease(body: Any, message_type: str = "charge") -> Lease:
    raw = sqs_message(body, type=message_type)
    return Leases(lambda lease: None).open(parse_message(raw), raw, time.monotonic(), 30)


async def test_a_probe_that_meets_bad_input_gives_the_probe_back_and_a_failed_probe_waits() -> None:
    clock = Clock()
    breakers = Breakers(BreakerPolicy(failures=1, open_for=5, max_open_for=5), NullMetrics(), clock=clock)
    router = Router()
    down = [True]

    @router.handler("charge", dependencies=["payments"])
    async def charge(body: dict[str, Any]) -> None:
        if body.get("bad"):
            raise PermanentFailure("bad order")
        if down[0]:
            raise ConnectionError("refused")

    processor = _processor_with(router, breakers)
    [first] = await processor.run(None, [_lease({"n": 1})])
    assert first.outcome is not None
    assert first.outcome.kind == "failed"  # ran before the breaker knew: an attempt
    payments = breakers.get("payments")
    assert _state(payments) == "open"
    [held] = await processor.run(None, [_lease({"n": 2})])
    assert held.outcome is not None
    assert held.outcome.kind == "waiting"  # open: not run, no attempt
    assert breakers.blocked([("payments",)]) is not None  # the poller would not receive
    clock.now += 5
    [bad] = await processor.run(None, [_lease({"bad": True})])  # the probe, but bad input
    assert bad.outcome is not None
    assert bad.outcome.kind == "rejected"
    assert payments.allow()  # given back: the next message probes
    payments.release()
    [probe] = await processor.run(None, [_lease({"n": 3})])
    assert probe.outcome is not None
    assert probe.outcome.kind == "waiting"  # the probe failed: the dependency's, not the message's
    assert probe.lease.failures == 0
    assert _state(payments) == "open"
    clock.now += 10
    down[0] = False
    [ok] = await processor.run(None, [_lease({"n": 4})])
    assert ok.outcome is not None
    assert ok.outcome.kind == "succeeded"
    assert _state(payments) == "closed"
    assert breakers.blocked([("payments",)]) is None


def test_half_open_with_its_probe_running_blocks_receiving_and_a_free_route_never_does() -> None:
    clock = Clock()
    breakers = Breakers(BreakerPolicy(failures=1, open_for=5, max_open_for=5), NullMetrics(), clock=clock)
    payments = breakers.get("payments")
    payments.failed()
    assert breakers.blocked([("payments",)]) == 5
    assert breakers.blocked([("payments",), ()]) is None  # a route that needs nothing can run
    clock.now += 5
    assert breakers.blocked([("payments",)]) is None  # half-open: one may come in to probe
    assert payments.allow()
    assert breakers.blocked([("payments",)]) == 0.05  # the probe runs: look again soon


def test_a_ratio_below_the_threshold_keeps_it_closed_and_closing_resets_the_counts() -> None:
    breaker, clock, changes = _breaker(failures=3, ratio=0.5, window=100, min_calls=4, open_for=1)
    for _ in range(3):
        breaker.succeeded()
    breaker.failed()
    assert _state(breaker) == "closed"  # 1 of 4: a quarter
    breaker.failed()
    breaker.failed()
    breaker.failed()
    assert _state(breaker) == "open"  # three in a row
    clock.now += 1
    assert breaker.allow()
    breaker.succeeded()
    assert [why for _, _, why in changes][-2:] == ["open time over: one probe", "probe succeeded"]
    breaker.failed()
    breaker.failed()
    assert (
        _state(breaker) == "closed"
    )  # counts start again: two of three in a row, 2 of 2 calls (< min_calls)
    breaker.failed()
    assert _state(breaker) == "open"


def test_unavailable_while_half_open_doubles_the_open_time_and_failed_probes_say_so() -> None:
    breaker, clock, changes = _breaker(failures=1, open_for=4, max_open_for=100)
    breaker.failed()
    clock.now += 4
    assert breaker.allow()
    breaker.unavailable()
    assert breaker.reopens_in == 8
    clock.now += 8
    assert breaker.allow()
    breaker.failed()
    assert changes[-1] == ("half_open", "open", "probe failed")
    assert breaker.reopens_in == 16


def test_blocked_needs_every_route_blocked_and_waits_for_the_soonest() -> None:
    clock = Clock()
    breakers = Breakers(BreakerPolicy(failures=1, open_for=5, max_open_for=50), NullMetrics(), clock=clock)
    a, b = breakers.get("a"), breakers.get("b")
    a.failed()
    clock.now += 2
    b.unavailable(retry_after=10)
    assert breakers.blocked([("a",), ("b",)]) == 3  # the first to let a probe through
    assert breakers.blocked([("a", "b")]) == 10  # a route needing both waits for the later
    assert breakers.blocked([("a",), ("c",)]) is None


def test_each_transition_is_one_log_line_and_the_gauge_follows() -> None:
    from prometheus_client import CollectorRegistry

    from worker.observe.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    clock = Clock()
    breakers = Breakers(BreakerPolicy(failures=1, open_for=1, max_open_for=1), metrics, clock=clock)
    payments = breakers.get("payments")
    gauge = metrics.breaker_state.labels("payments")
    assert gauge._value.get() == 0
    with structlog.testing.capture_logs() as logs:
        payments.failed()
        assert gauge._value.get() == 1
        clock.now += 1
        assert payments.allow()
        assert gauge._value.get() == 2
        payments.succeeded()
    assert gauge._value.get() == 0
    assert [(e["event"], e["dependency"], e["was"], e["why"]) for e in logs] == [
        ("breaker_opened", "payments", "closed", "1 consecutive failures"),
        ("breaker_half_open", "payments", "open", "open time over: one probe"),
        ("breaker_closed", "payments", "half_open", "probe succeeded"),
    ]
    assert metrics.breaker_transitions.labels("payments", "open")._value.get() == 1
    assert list(breakers) == [payments]


def _clocked(failures: int = 1, open_for: float = 5) -> tuple[Breakers, Clock]:
    clock = Clock()
    policy = BreakerPolicy(failures=failures, open_for=open_for, max_open_for=50)
    return Breakers(policy, NullMetrics(), clock=clock), clock


async def test_a_handlers_dependency_unavailable_opens_its_breaker_for_its_time_and_held_wait_it() -> None:
    breakers, clock = _clocked(failures=100)
    router = Router()

    @router.handler("charge", dependencies=["payments", "mailer"])
    async def charge(body: dict[str, Any]) -> None:
        raise DependencyUnavailable("payments", "503", retry_after=7)

    processor = _processor_with(router, breakers)
    [first] = await processor.run(None, [_lease({"n": 1})])
    assert first.decision is not None
    assert (first.decision.action.value, first.decision.delay) == ("wait", 7)
    assert _state(breakers.get("payments")) == "open"
    assert _state(breakers.get("mailer")) == "closed"  # only the one that said so
    assert breakers.get("payments").reopens_in == 7
    clock.now += 3
    [held] = await processor.run(None, [_lease({"n": 2})])
    assert held.decision is not None
    assert (held.decision.action.value, held.decision.delay) == ("wait", 4)  # until the probe may run
    assert held.outcome is not None
    assert held.outcome.reason == "payments unavailable: circuit open"


async def test_a_probe_meeting_another_dependencys_outage_gives_the_probe_back() -> None:
    breakers, clock = _clocked()
    router = Router()

    @router.handler("charge", dependencies=["payments", "mailer"])
    async def charge(body: dict[str, Any]) -> None:
        raise DependencyUnavailable("mailer", "down")

    payments = breakers.get("payments")
    payments.failed()
    clock.now += 5
    processor = _processor_with(router, breakers)
    [item] = await processor.run(None, [_lease({"n": 1})])  # the payments probe
    assert item.outcome is not None
    assert item.outcome.kind == "waiting"
    assert _state(breakers.get("mailer")) == "open"
    assert payments.allow()  # payments was not reached: its probe is free again


async def test_a_failed_probe_says_why_and_waits_the_breakers_time() -> None:
    breakers, clock = _clocked(open_for=5)
    router = Router()

    @router.handler("charge", dependencies=["payments"])
    async def charge(body: dict[str, Any]) -> None:
        raise ConnectionError("refused")

    breakers.get("payments").failed()
    clock.now += 5
    [probe] = await _processor_with(router, breakers).run(None, [_lease({"n": 1})])
    assert probe.outcome is not None
    assert probe.outcome.reason == "payments unavailable: probe failed: ConnectionError: refused"
    assert probe.decision is not None
    assert probe.decision.delay == 10  # open twice as long after a failed probe


async def test_a_handler_past_its_deadline_counts_against_its_dependency() -> None:
    breakers, _ = _clocked(failures=1)
    router = Router()

    @router.handler("charge", dependencies=["payments"])
    async def charge(body: dict[str, Any]) -> None:
        await asyncio.sleep(5)  # the dependency hangs

    settings = QueueSettings(handlers=["<t>"], retry_backoff=[5], retry_jitter=0, max_processing_time=0.1)
    ctx = QueueContext.standalone("q", settings, Registry.of(router), max_receive_count=5)
    ctx.breakers = breakers
    [item] = await Processor(ctx).run(None, [_lease({"n": 1})])
    assert item.outcome is not None
    assert item.outcome.kind == "failed"
    assert _state(breakers.get("payments")) == "open"


async def test_a_batch_counts_as_failed_only_when_every_member_failed() -> None:
    breakers, _ = _clocked(failures=1)
    router = Router()
    fail_all = [False]

    @router.batch_handler("rows", max_size=10, max_wait=0, dependencies=["db"])
    async def rows(payloads: list[dict[str, Any]], messages: list[Message]) -> dict[str, BaseException]:
        failing = messages if fail_all[0] else messages[:1]
        return {m.message_id: ConnectionError("db") for m in failing}

    processor = _processor_with(router, breakers)
    route = processor.ctx.registry.get("rows")
    await processor.run(route, [_lease({"n": i}, "rows") for i in range(3)])
    assert _state(breakers.get("db")) == "closed"  # one of three failed: the db answered
    fail_all[0] = True
    await processor.run(route, [_lease({"n": i}, "rows") for i in range(3)])
    assert _state(breakers.get("db")) == "open"
