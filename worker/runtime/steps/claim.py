"""The idempotency claim of a single-message idempotent route (``worker.runtime.idempotency``).

The claim is taken before middleware runs, completed when the chain succeeded, released
when it failed or was cancelled, left to run out with the lease when a thread is
abandoned. A store that cannot be reached is not the handler's failure: the message waits
(``DependencyUnavailable``) without spending an attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from worker.messages.outcomes import DependencyUnavailable, Retry
from worker.runtime.call import Abandoned, Call, Next
from worker.runtime.idempotency import Idempotency

DEPENDENCY = "idempotency store"


class ClaimStep:
    stage = "claim"

    def __init__(self, idempotency: Idempotency) -> None:
        self._idempotency = idempotency

    async def __call__(self, call: Call, call_next: Next) -> None:
        route = call.route
        if route is None or call.batch or not route.idempotent:
            await call_next(call)
            return
        item = call.live[0]
        call.stage = self.stage
        try:
            claim = await self._idempotency.begin(item.lease, item.attempt)
        except Retry:
            raise
        except Exception as exc:
            raise DependencyUnavailable(DEPENDENCY, f"{type(exc).__name__}: {exc}"[:300]) from exc
        item.claim = claim
        self._idempotency.mark(claim)  # what ``replayed()`` says in the chain
        call.replayed = claim.replay
        try:
            await call_next(call)
        except Abandoned:
            self._idempotency.abandoned(claim)
            raise
        except BaseException:
            await _write(self._idempotency.failed(claim))
            raise
        await _write(self._idempotency.succeeded(claim, claim.value))


async def _write(write: Coroutine[Any, Any, None]) -> None:
    """A record's completion or release (bounded by the store's retry budget; never
    raises): a shutdown cancel does not cut it short, the write goes on while the
    message's outcome is returned (its record is right, or runs out with the lease)."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is None or not current.cancelling():
            raise
        current.uncancel()
