"""The end-to-end lag metric: from the message's SentTimestamp to its handler's start,
once per delivery (a run in place again does not count twice)."""

from __future__ import annotations

import time
from typing import Any

from worker.runtime.call import Call, Next
from worker.runtime.context import QueueContext


class LagStep:
    stage = "lag"

    def __init__(self, ctx: QueueContext) -> None:
        self._lag = ctx.metrics.lag
        self._queue = ctx.key
        self._children: dict[str, Any] = {}

    async def __call__(self, call: Call, call_next: Next) -> None:
        assert call.route is not None
        label = call.route.message_type
        now = time.time()
        for item in call.live:
            sent = item.message.sent_timestamp_ms
            if item.lease.runs == 1 and sent is not None:
                child = self._children.get(label)
                if child is None:
                    child = self._children[label] = self._lag.labels(self._queue, label)
                child.observe(max(0.0, now - sent / 1000))  # a clock behind the sender's: 0
        await call_next(call)
