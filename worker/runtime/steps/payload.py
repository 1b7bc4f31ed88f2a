"""The offloaded body: fetched from S3 before anything else reads the message.

A pointer that is malformed, or whose object is gone, is the message's own problem
(rejected, with ``payloads.ignore_missing`` skipped). S3 that cannot be reached, or that
refuses, is not: the message waits for it (``DependencyUnavailable``), leased, without
spending an attempt.
"""

from __future__ import annotations

import asyncio

from worker.messages.outcomes import DependencyUnavailable, PermanentFailure
from worker.messages.payloads import reserved_attribute
from worker.runtime.call import Call, Item, Next
from worker.runtime.context import QueueContext
from worker.runtime.rules import SKIPPED

DEPENDENCY = "s3"


class PayloadStep:
    stage = "payload"

    def __init__(self, ctx: QueueContext) -> None:
        self._store = ctx.payloads
        self._types = ctx.types

    async def __call__(self, call: Call, call_next: Next) -> None:
        offloaded = [
            item
            for item in call.live
            if item.message.payload is not None or reserved_attribute(item.message.attributes) is not None
        ]
        if offloaded:
            call.stage = self.stage
            await asyncio.gather(*(self._resolve(call, item) for item in offloaded))
        if call.live:
            await call_next(call)

    async def _resolve(self, call: Call, item: Item) -> None:
        if self._store is None:
            call.conclude(
                item,
                PermanentFailure(
                    "the message's body is offloaded to S3 and this worker has no payload store"
                ),
            )
            return
        try:
            resolved = await self._store.resolve(item.message, self._types)
        except PermanentFailure as exc:
            call.conclude(item, exc)
            return
        except Exception as exc:
            call.conclude(item, DependencyUnavailable(DEPENDENCY, f"{type(exc).__name__}: {exc}"[:300]))
            return
        if resolved is None:  # its object is gone and payloads.ignore_missing is on
            item.outcome = SKIPPED
            call.live.remove(item)
            return
        item.message = resolved
