"""Visibility extension for messages being worked on, batched per queue.

A message is tracked from the moment it is received until its outcome is settled. One task
per queue wakes up often, picks every message whose last extension is ``interval`` old, and
extends them with ChangeMessageVisibilityBatch, ten per call, so a slow handler's message
never becomes visible to another consumer while it runs. The processor caps how long that
lasts (``max_processing_time``).
"""

from __future__ import annotations

import asyncio
import time

from worker.aws import STALE_RECEIPT_CODES, AwsClient
from worker.messages.envelope import Message
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.counters import QueueCounters

log = get_logger()


class Heartbeat:
    def __init__(
        self,
        sqs: AwsClient,
        queue: str,
        url: str,
        visibility_timeout: int,
        interval: float,
        counters: QueueCounters,
        metrics: Metrics,
    ) -> None:
        self._sqs = sqs
        self._queue = queue
        self._url = url
        self._visibility = visibility_timeout
        self._interval = interval
        self._counters = counters
        self._metrics = metrics
        # receipt handle -> (message, time its current visibility was granted)
        self._tracked: dict[str, tuple[Message, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, message: Message, granted_at: float) -> None:
        self._tracked[message.receipt_handle] = (message, granted_at)

    def untrack(self, message: Message) -> None:
        self._tracked.pop(message.receipt_handle, None)

    def __len__(self) -> int:
        return len(self._tracked)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self._queue}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        tick = min(1.0, self._interval / 4)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.extend_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep beating: the next tick tries again
                log.error("visibility_extend_error", queue=self._queue, error=repr(exc)[:300])

    async def extend_due(self) -> None:
        now = time.monotonic()
        due = [m for m, at in self._tracked.values() if now - at >= self._interval]
        if not due:
            return
        for start in range(0, len(due), 10):
            chunk = due[start : start + 10]
            response = await self._sqs.call(
                "change_message_visibility_batch",
                retry_for=self._interval,
                QueueUrl=self._url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m.receipt_handle,
                        "VisibilityTimeout": self._visibility,
                    }
                    for i, m in enumerate(chunk)
                ],
            )
            granted = time.monotonic()
            failed = {int(f["Id"]): f for f in response.get("Failed") or []}
            for i, message in enumerate(chunk):
                if message.receipt_handle not in self._tracked:
                    continue  # finished while the call was in flight
                failure = failed.get(i)
                if failure is None:
                    self._tracked[message.receipt_handle] = (message, granted)
                    self._counters.extended += 1
                    self._metrics.extensions.labels(self._queue).inc()
                    continue
                code = str(failure.get("Code", ""))
                log.warning(
                    "visibility_extend_failed",
                    queue=self._queue,
                    message_id=message.message_id,
                    code=code,
                    detail=str(failure.get("Message", ""))[:200],
                )
                if code in STALE_RECEIPT_CODES:
                    self._tracked.pop(message.receipt_handle, None)
