"""Forming batches for a batch handler across receives (standard queues).

Messages of one batch type collect here until ``max_size`` are waiting or ``max_wait``
seconds have passed since the first; then the batch is handed on. Their leases stay live
meanwhile (the heartbeat extends them), and each holds its slot, so waiting messages count
against ``max_in_flight`` (a ``max_size`` above it is reached by ``max_wait`` instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from worker.messages.routing import Route
from worker.runtime.lease import Lease


class Batcher:
    def __init__(self, route: Route, run: Callable[[Route, list[Lease]], None]) -> None:
        assert route.batch is not None
        self._route = route
        self._spec = route.batch
        self._run = run
        self._waiting: list[Lease] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, lease: Lease) -> None:
        self._waiting.append(lease)
        if len(self._waiting) >= self._spec.max_size:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._spec.max_wait, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            batch = self._waiting[: self._spec.max_size]
            del self._waiting[: self._spec.max_size]
            self._run(self._route, batch)
