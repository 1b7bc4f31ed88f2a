"""The bound on messages in flight that a queue's pollers share (backpressure)."""

from __future__ import annotations

import asyncio


class Slots:
    """Counts messages received and not yet finished; pollers take slots before receiving.

    ``acquire(n)`` waits until ``n`` slots are free (``n`` is capped at the limit) and takes
    them, so each receive asks for a full batch when it can and nothing sits in memory
    waiting for a slot while its visibility timeout burns.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.limit - self.used

    async def acquire(self, wanted: int) -> int:
        wanted = max(1, min(wanted, self.limit))
        while self.free < wanted:
            self._freed.clear()
            await self._freed.wait()
        self.used += wanted
        return wanted

    def release(self, count: int = 1) -> None:
        if count <= 0:
            return
        self.used -= count
        if self.used < 0:  # pragma: no cover - a bookkeeping bug must not stall the pollers
            self.used = 0
        self._freed.set()
