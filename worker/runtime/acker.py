"""Buffered acknowledgement: DeleteMessageBatch and ChangeMessageVisibilityBatch.

Entries are flushed when ten are waiting or ``flush_interval`` after the first one, and all
of them on ``close()``. Entry ids inside one request are positional (``"0"``..``"9"``), so
they are unique even when one message was received twice. Entries that fail inside a batch
are retried unless the failure says the receipt handle is no longer valid: that is logged
(the message will be delivered again), never hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from worker.aws import STALE_RECEIPT_CODES, AwsClient
from worker.messages.envelope import Message
from worker.observe.logs import get_logger
from worker.runtime.counters import QueueCounters

BATCH = 10
MAX_ATTEMPTS = 5
log = get_logger()


@dataclass(slots=True)
class _Entry:
    message: Message
    visibility: int | None  # None: delete
    attempt: int = 1


class Acker:
    def __init__(
        self, sqs: AwsClient, queue: str, url: str, counters: QueueCounters, flush_interval: float = 0.05
    ) -> None:
        self._sqs = sqs
        self._queue = queue
        self._url = url
        self._counters = counters
        self._interval = flush_interval
        self._deletes: list[_Entry] = []
        self._changes: list[_Entry] = []
        self._pending = asyncio.Event()
        self._full = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(4)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"acker:{self._queue}")

    def delete(self, message: Message) -> None:
        self._add(self._deletes, _Entry(message, None))

    def change_visibility(self, message: Message, seconds: int) -> None:
        self._add(self._changes, _Entry(message, max(0, min(43_200, int(seconds)))))

    async def change_visibility_now(self, messages: list[Message], seconds: int) -> None:
        """Change visibility of ``messages`` in order, in as few requests as possible, now
        (not buffered): a FIFO group's failed message and its followers."""
        for start in range(0, len(messages), BATCH):
            chunk = [_Entry(m, max(0, min(43_200, int(seconds)))) for m in messages[start : start + BATCH]]
            await self._send(chunk)

    @property
    def pending(self) -> int:
        return len(self._deletes) + len(self._changes)

    def _add(self, buffer: list[_Entry], entry: _Entry) -> None:
        buffer.append(entry)
        self._pending.set()
        if len(buffer) >= BATCH:
            self._full.set()

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if len(self._deletes) < BATCH and len(self._changes) < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._interval)
            self._flush_buffers(full_only=False)

    def _flush_buffers(self, full_only: bool) -> None:
        for buffer in (self._deletes, self._changes):
            while buffer and (len(buffer) >= BATCH or not full_only):
                chunk = buffer[:BATCH]
                del buffer[:BATCH]
                task = asyncio.create_task(self._send(chunk))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        self._full.clear()
        if not self._deletes and not self._changes:
            self._pending.clear()

    async def _send(self, chunk: list[_Entry]) -> None:
        deleting = chunk[0].visibility is None
        async with self._limit:
            try:
                if deleting:
                    response = await self._sqs.call(
                        "delete_message_batch",
                        QueueUrl=self._url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": e.message.receipt_handle}
                            for i, e in enumerate(chunk)
                        ],
                    )
                else:
                    response = await self._sqs.call(
                        "change_message_visibility_batch",
                        QueueUrl=self._url,
                        Entries=[
                            {
                                "Id": str(i),
                                "ReceiptHandle": e.message.receipt_handle,
                                "VisibilityTimeout": e.visibility,
                            }
                            for i, e in enumerate(chunk)
                        ],
                    )
            except Exception as exc:
                # Transient errors were already retried for two minutes; the messages
                # will reappear after their visibility timeout and be handled again.
                log.error(
                    "ack_batch_failed",
                    queue=self._queue,
                    operation="delete" if deleting else "change_visibility",
                    entries=len(chunk),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                if deleting:
                    self._counters.delete_failed += len(chunk)
                return
        self._handle_failed(chunk, response.get("Failed") or [], deleting)

    def _handle_failed(self, chunk: list[_Entry], failed: list[dict[str, Any]], deleting: bool) -> None:
        for failure in failed:
            entry = chunk[int(failure["Id"])]
            code = str(failure.get("Code", ""))
            fields = {
                "queue": self._queue,
                "message_id": entry.message.message_id,
                "code": code,
                "detail": str(failure.get("Message", ""))[:200],
                "attempt": entry.attempt,
            }
            if code in STALE_RECEIPT_CODES or entry.attempt >= MAX_ATTEMPTS:
                if deleting:
                    self._counters.delete_failed += 1
                    # The message will be delivered again: say so loudly.
                    log.warning("delete_failed", **fields, redelivery_expected=True)
                else:
                    log.info("visibility_change_failed", **fields)
                continue
            entry.attempt += 1
            log.info("ack_entry_retry", **fields, operation="delete" if deleting else "change_visibility")
            self._add(self._deletes if deleting else self._changes, entry)

    async def close(self) -> None:
        """Flush everything still buffered and wait for every request in flight."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._deletes or self._changes or self._inflight:
            self._flush_buffers(full_only=False)
            if self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
