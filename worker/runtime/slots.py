"""The bound on messages in flight that a queue's pollers share (backpressure).

A slot is taken before ReceiveMessage and given back when the message's lease ends: when
SQS has confirmed its delete or its visibility change, not when the handler returns. So
slow deletes slow receiving, and the messages waiting for a delete are bounded too. The
limit may change while running (``resize``: adaptive concurrency, ``runtime/limiter.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Slots:
    """``acquire(n, wait)`` takes ``n`` slots as soon as they are free, or, once ``wait``
    seconds have passed, whatever is free then (at least one): a full batch keeps
    requests per message low under load, and free slots never sit idle for longer than
    ``wait`` while a few slow messages hold the rest."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()
        self._clock = clock
        self._slot_seconds = 0.0
        self._since = clock()

    def slot_seconds(self) -> float:
        """Slots in use integrated over time since the start (slot-seconds): the adaptive
        limiter's measure of how long messages hold their slots."""
        self._account()
        return self._slot_seconds

    def _account(self) -> None:
        now = self._clock()
        self._slot_seconds += self.used * (now - self._since)
        self._since = now

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    def resize(self, limit: int) -> None:
        """A new limit (the adaptive limiter's). Lowered below the slots in use, no slot is
        taken until enough leases have ended; raised, waiting pollers take the new slots."""
        grew = limit > self.limit
        self.limit = limit
        if grew:
            self._freed.set()

    async def acquire(self, wanted: int, wait: float = 0.0) -> int:
        wanted = max(1, min(wanted, self.limit))
        if self.free < wanted and wait > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while self.free < wanted and (left := deadline - loop.time()) > 0:
                self._freed.clear()
                try:
                    async with asyncio.timeout(left):
                        await self._freed.wait()
                except TimeoutError:
                    break
        while self.free < 1:
            self._freed.clear()
            await self._freed.wait()
        took = min(wanted, self.free)
        self._account()
        self.used += took
        return took

    def release(self, count: int = 1) -> None:
        if count <= 0:
            return
        self._account()
        self.used -= count
        if self.used < 0:  # pragma: no cover - a bookkeeping bug must not stall the pollers
            self.used = 0
        self._freed.set()
