"""Visibility extension for every live lease of a queue, built to keep up.

Every ``tick`` the heartbeat takes the leases that are due (their visibility was granted
``interval`` or more ago and no extension is in flight), most urgent first, and extends
them with ChangeMessageVisibilityBatch, ten per call, up to ``max_calls`` calls at once.
A call is tried once, with a timeout below the visibility its most urgent lease has left
(``call_timeout``); a failed or timed-out call is not retried as such: its leases are due
again at the next tick and go out in a fresh request, so an entry of a lease settled
meanwhile is never sent again. The visibility granted counts from the moment the request
was sent.

Capacity: a lease is due every ``interval`` seconds, so at ``L`` seconds per call the
heartbeat keeps ``10 * max_calls * interval / L`` messages alive (``QueueSettings`` checks
``max_in_flight`` against it at 1 s per call).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worker.aws import STALE_RECEIPT_CODES, error_code
from worker.observe.logs import get_logger
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, Leases, State

BATCH = 10
MIN_CALL_TIMEOUT = 0.5
MAX_CALL_TIMEOUT = 10.0
SLOWEST_DECAY = 0.95
"""Per call, how much of the slowest recent call's time ``Heartbeat.slowest`` keeps."""
log = get_logger()


def call_timeout(left: float, slowest: float) -> float:
    """The time limit of a call whose most urgent lease has ``left`` seconds of visibility,
    when recent calls took up to ``slowest`` seconds to answer.

    Half of what is left, so that a call lost on the way is given up with time for another
    one; but only while that leaves room for two calls as slow as the recent ones. Past
    that, a second call could not arrive in time anyway, and cutting the first short at
    half would fail every call once calls take longer than half: a slight overload (a slow
    server, the heartbeat at its capacity) would turn into every lease lapsing. Then the
    call may take all the time left. Always within [MIN_CALL_TIMEOUT, MAX_CALL_TIMEOUT]."""
    limit = left / 2 if left / 2 >= 2 * slowest else left
    return min(MAX_CALL_TIMEOUT, max(MIN_CALL_TIMEOUT, limit))


def next_slowest(took: float, slowest: float) -> float:
    """``Heartbeat.slowest`` after a call that took ``took`` seconds: a slower call raises it
    at once, a faster one lowers it by ``SLOWEST_DECAY`` (after 14 fast calls it is about
    half: one slow moment is remembered for a few rounds, not for good)."""
    return max(took, slowest * SLOWEST_DECAY)


class Heartbeat:
    def __init__(
        self, ctx: QueueContext, leases: Leases, interval: float | None = None, max_calls: int | None = None
    ) -> None:
        """``interval`` and ``max_calls``: default the queue's ``extend_every`` and
        ``heartbeat_calls``."""
        self._sqs = ctx.client
        queue = self._queue = ctx.key
        self._url = ctx.url
        self._leases = leases
        interval = ctx.settings.extend_every if interval is None else interval
        max_calls = max_calls or ctx.settings.heartbeat_calls
        counters, metrics = ctx.counters, ctx.metrics
        self._interval = interval
        self._tick = min(0.5, interval / 4)
        self._calls = asyncio.Semaphore(max_calls)
        self._counters = counters
        self._extensions = metrics.extensions.labels(queue)
        self._lapses = metrics.lease_overdue.labels(queue)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.slowest = 0.0
        """The slowest recent call's time (seconds): a slower call raises it at once, every
        other call lowers it by ``SLOWEST_DECAY``. A call that timed out counts with its
        time limit: when every call is slower than half the visibility left, the next one,
        the lease's last chance, gets all of it."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self._queue}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.extend_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep beating: the next tick tries again
                log.error("visibility_extend_error", queue=self._queue, error=repr(exc)[:300])

    def due(self, now: float) -> list[Lease]:
        """Leases to extend now, most urgent (least visibility left) first."""
        due = []
        for lease in self._leases.live():
            if lease.expires_at < now:
                self._lapsed_by_clock(lease, now)
            if lease.wants_extension(now, self._interval):
                due.append(lease)
        due.sort(key=lambda lease: lease.expires_at)
        return due

    async def extend_due(self) -> None:
        """Start calls for every due lease, as many as ``max_calls`` allows; returns once
        they are under way (a full semaphore makes it wait for a free call)."""
        due = self.due(time.monotonic())
        i = 0
        while i < len(due):
            await self._calls.acquire()
            # Each lease is asked again now, as the request is built: while this waited for
            # a free call, it may have been settled, or its visibility change sent.
            now = time.monotonic()
            chunk: list[Lease] = []
            while i < len(due) and len(chunk) < BATCH:
                lease = due[i]
                i += 1
                if lease.wants_extension(now, self._interval):
                    chunk.append(lease)
            if not chunk:
                self._calls.release()
                continue
            for lease in chunk:
                lease.extension_sent()
            task = asyncio.create_task(self._extend(chunk))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _extend(self, chunk: list[Lease]) -> None:
        sent_at = time.monotonic()
        granted: set[int] = set()
        try:
            timeout = call_timeout(chunk[0].left(sent_at), self.slowest)
            response = await self._answered(
                sent_at,
                timeout,
                QueueUrl=self._url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": lease.receipt_handle,
                        "VisibilityTimeout": lease.visibility,
                    }
                    for i, lease in enumerate(chunk)
                ],
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "visibility_extend_retry",
                queue=self._queue,
                entries=len(chunk),
                error=error_code(exc),
                detail=str(exc)[:200],
                left=round(chunk[0].left(), 2),
            )
        else:
            failed = {int(f["Id"]): f for f in response.get("Failed") or []}
            for i, lease in enumerate(chunk):
                failure = failed.get(i)
                if failure is None:
                    granted.add(i)
                    continue
                code = str(failure.get("Code", ""))
                if not lease.live:
                    continue  # settled while the call was in flight: nothing to say
                if code in STALE_RECEIPT_CODES:
                    # Extending stops. A running handler keeps its slot; the settle (sent,
                    # or to come) is still tried, and SQS's answer to it ends the lease.
                    lease.lost = True
                    if lease.state is State.SETTLING and lease.target is None:
                        continue  # its delete reached SQS first: the usual race, no news
                log.warning(
                    "visibility_extend_failed",
                    queue=self._queue,
                    message_id=lease.message.message_id,
                    group_id=lease.message.group_id,
                    code=code,
                    detail=str(failure.get("Message", ""))[:200],
                )
        finally:
            for i, lease in enumerate(chunk):
                lease.extension_done(sent_at, i in granted)
            self._calls.release()
        if granted:
            self._counters.extended += len(granted)
            self._extensions.inc(len(granted))

    async def _answered(self, sent_at: float, limit: float, **params: Any) -> dict[str, Any]:
        """The call, its time counted in ``slowest`` (an error answer and a timeout too)."""
        try:
            return await self._sqs.once("change_message_visibility_batch", limit, **params)
        finally:
            self.slowest = next_slowest(time.monotonic() - sent_at, self.slowest)

    def _lapsed_by_clock(self, lease: Lease, now: float) -> None:
        if lease.overdue:
            return
        lease.overdue = True
        self._counters.overdue += 1
        self._lapses.inc()
        log.warning(
            "lease_overdue",
            queue=self._queue,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            late=round(-lease.left(now), 2),
            state=lease.state.value,
        )
