"""The circuit breaker's states, on an injected clock."""

from __future__ import annotations

from worker.runtime.breaker import Breaker, BreakerPolicy


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
