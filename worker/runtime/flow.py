"""Flow control's state: token buckets (rates) and slow mode (the caps of runs at once
are counts the limits step keeps). Pure bookkeeping on an injected clock; the waiting is the
limits step's (``worker.runtime.steps.limits``) and the poller's.

A rate is messages *started* per second with a burst: the bucket holds up to ``burst``
tokens, refilled at ``rate`` per second, one per message that starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    def __init__(
        self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self) -> float:
        """Take one token: 0 when it was there, else the seconds until it is (the token is
        taken all the same: the caller starts after that wait, and later callers queue
        behind it)."""
        tokens = self._refill() - 1
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def within(self, seconds: float) -> int:
        """How many could start within ``seconds`` from now (the poller asks for no more)."""
        return max(0, int(self._refill() + seconds * self.rate))

    def give_back(self) -> None:
        """A token taken for a message that did not start after all."""
        self._tokens = min(self.burst, self._tokens + 1)


@dataclass(slots=True)
class SlowMode:
    """After ``after`` consecutive failures of a route, it runs one message at a time until
    one succeeds (NServiceBus's "slow mode"): a gentler brake than a breaker."""

    after: int
    failures: int = 0

    @property
    def on(self) -> bool:
        return self.after > 0 and self.failures >= self.after

    def succeeded(self) -> bool:
        """Record a success; True when it ends slow mode."""
        was = self.on
        self.failures = 0
        return was

    def failed(self) -> bool:
        """Record a failure; True when it starts slow mode."""
        self.failures += 1
        return self.after > 0 and self.failures == self.after
