"""A circuit breaker per dependency: stop running messages whose run needs a dependency that
is down, instead of spending their attempts on it.

SQS raises a message's receive count at every receive, whatever happens next; a message
that fails during an outage walks to the DLQ in ``maxReceiveCount`` receives. A breaker
that is open keeps its routes' messages leased and waiting (no attempt spent) and, once
every route of a queue is open, keeps the queue from receiving at all.

States::

    CLOSED --(N consecutive failures, or a failure ratio over the window,
              or DependencyUnavailable at once)--> OPEN
    OPEN   --(open_for elapsed, or the retry_after the dependency gave)--> HALF_OPEN
    HALF_OPEN --(the one probe succeeds)--> CLOSED
    HALF_OPEN --(the probe fails)--> OPEN, for twice as long (up to max_open_for)

Pure state: the clock is injected; every transition is reported once to ``on_change``.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from worker.observe.logs import get_logger


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    """Consecutive failures that open the breaker."""
    ratio: float = 0.5
    """A failure ratio over ``window`` seconds that opens it (with at least ``min_calls``)."""
    window: float = 30.0
    min_calls: int = 20
    open_for: float = 10.0
    """Seconds open before one probe is let through (doubled after a failed probe)."""
    max_open_for: float = 30.0


Change = Callable[[str, State, State, str], None]
"""``on_change(dependency, old, new, why)``."""


class Breaker:
    """One dependency's breaker."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Change | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._consecutive = 0
        self._calls: collections.deque[tuple[float, bool]] = collections.deque()
        self._failed_in_window = 0
        self._opened_at = 0.0
        self._open_for = self.policy.open_for
        self._probing = False

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() >= self._opened_at + self._open_for:
            self._move(State.HALF_OPEN, "open time over: one probe")
        return self._state

    @property
    def reopens_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_for - self._clock())

    @property
    def blocks(self) -> bool:
        """Nothing may start now: open, or half-open with its probe running."""
        state = self.state
        return state is State.OPEN or (state is State.HALF_OPEN and self._probing)

    def allow(self) -> bool:
        """May a message that needs this dependency run now? Half-open, one at a time: the
        caller that gets True holds the probe and must report how it went (``succeeded``,
        ``failed``, ``unavailable``) or give it back (``release``)."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """The probe did not run (its message went elsewhere): another may probe."""
        self._probing = False

    def succeeded(self) -> None:
        self._record(False)
        self._consecutive = 0
        if self._state is State.HALF_OPEN:
            self._open_for = self.policy.open_for
            self._move(State.CLOSED, "probe succeeded")

    def failed(self) -> None:
        self._record(True)
        self._consecutive += 1
        if self._state is State.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self.policy.max_open_for)
            self._open("probe failed")
            return
        if self._state is not State.CLOSED:
            return
        if self._consecutive >= self.policy.failures:
            self._open(f"{self._consecutive} consecutive failures")
            return
        calls = len(self._calls)
        if calls >= self.policy.min_calls and self._failed_in_window / calls >= self.policy.ratio:
            self._open(f"{self._failed_in_window} of {calls} calls failed in {self.policy.window:g}s")

    def unavailable(self, retry_after: float | None = None) -> None:
        """The dependency said it is down (``DependencyUnavailable``): open at once, for
        ``retry_after`` seconds when it said how long."""
        if retry_after is not None:
            self._open_for = min(max(retry_after, 1.0), self.policy.max_open_for)
        elif self._state is State.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self.policy.max_open_for)
        if self._state is State.OPEN:
            self._opened_at = self._clock()
            return
        self._open("dependency unavailable")

    def _open(self, why: str) -> None:
        self._opened_at = self._clock()
        self._move(State.OPEN, why)

    def _record(self, failed: bool) -> None:
        now = self._clock()
        calls = self._calls
        calls.append((now, failed))
        self._failed_in_window += failed
        horizon = now - self.policy.window
        while calls and calls[0][0] < horizon:
            _, old = calls.popleft()
            self._failed_in_window -= old

    def _move(self, new: State, why: str) -> None:
        old, self._state = self._state, new
        if new is not State.HALF_OPEN:
            self._probing = False  # a probe still running when it re-opened holds nothing
        if new is State.CLOSED:
            self._calls.clear()
            self._failed_in_window = 0
            self._consecutive = 0
        if old is not new and self._on_change is not None:
            self._on_change(self.name, old, new, why)


class Breakers:
    """The process's breakers, one per dependency name, made on first use: a dependency
    shared by several queues' handlers has one breaker. Each transition is one log line and
    counted; the state is a gauge (0 closed, 1 open, 2 half-open)."""

    _VALUES: ClassVar[dict[State, int]] = {State.CLOSED: 0, State.OPEN: 1, State.HALF_OPEN: 2}

    def __init__(
        self, policy: BreakerPolicy, metrics: Any, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._metrics = metrics
        self._clock = clock
        self._all: dict[str, Breaker] = {}

    def get(self, name: str) -> Breaker:
        breaker = self._all.get(name)
        if breaker is None:
            breaker = self._all[name] = Breaker(name, self.policy, clock=self._clock, on_change=self._changed)
            self._metrics.breaker_state.labels(name).set(0)
        return breaker

    def __iter__(self) -> Iterator[Breaker]:
        return iter(list(self._all.values()))

    def blocked(self, dependencies: Iterable[tuple[str, ...]]) -> float | None:
        """When every one of these routes' dependency sets has a blocking breaker (open, or
        half-open with its probe running; a route without dependencies is never blocked):
        the seconds until the first of them may let one through; else None."""
        soonest: float | None = None
        for names in dependencies:
            route_wait: float | None = None
            for name in names:
                breaker = self._all.get(name)
                if breaker is not None and breaker.blocks:
                    wait = max(breaker.reopens_in, 0.05)  # (half-open, probing: look again soon)
                    route_wait = wait if route_wait is None else max(route_wait, wait)
            if route_wait is None:
                return None
            soonest = route_wait if soonest is None else min(soonest, route_wait)
        return soonest

    def _changed(self, name: str, old: State, new: State, why: str) -> None:
        self._metrics.breaker_state.labels(name).set(self._VALUES[new])
        self._metrics.breaker_transitions.labels(name, new.value).inc()
        log = get_logger()
        event = {
            State.OPEN: "breaker_opened",
            State.HALF_OPEN: "breaker_half_open",
            State.CLOSED: "breaker_closed",
        }
        (log.info if new is State.CLOSED else log.warning)(
            event[new], dependency=name, was=old.value, why=why
        )
