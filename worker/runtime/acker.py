"""Settling leases: DeleteMessageBatch and ChangeMessageVisibilityBatch.

A lease the processor settled is buffered here and sent in requests of ten of a kind; fewer
than ten go once the oldest of them has waited ``flush_interval``. So leases that settle one
by one (plain functions finishing in their threads, handlers of varying length) still go ten
to a request under load, and a lone one waits no longer than the interval. At most
``max_calls`` requests are in flight at once (a full set of requests makes the next flush
wait: slow deletes slow receiving, because a lease keeps its slot until SQS confirms). A
visibility change waits while an extension of its lease is in flight. Each request is tried
once with a timeout; what fails, whole or per entry, goes back into the buffer after a
backoff that doubles up to ``MAX_BACKOFF``, for as long as the lease lives (the heartbeat
keeps extending a lease whose delete is pending). An entry whose receipt handle no longer
works ends its lease as lapsed and, for a delete, is logged as ``delete_failed`` with
``redelivery_expected``: never hidden. Entry ids are positional, so they are unique even
when one message was received twice.

A handled message SQS may deliver again is known here by its message id, so that the new
delivery is deleted instead of run again: while its delete is pending
(``pending_delete``), and for ``UNSURE_FOR`` seconds after a delete failed with a stale
receipt handle or was confirmed only once the lease's visibility could have run out
(``unsure_delete``). Only leases that went wrong are remembered: nothing per message on
the fast path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from worker.aws import STALE_RECEIPT_CODES, error_code
from worker.observe.logs import get_logger
from worker.runtime.context import QueueContext
from worker.runtime.deliveries import Deliveries
from worker.runtime.lease import Lease, State

BATCH = 10
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0
UNSURE_FOR = 900.0
"""Seconds a message whose delete may not have landed is remembered (``unsure_delete``)."""
UNSURE_MAX = 10_000
"""At most this many such messages are remembered (the oldest go first)."""
log = get_logger()


def _entry(i: int, lease: Lease) -> dict[str, object]:
    """A request entry: a delete's, or a visibility change's (positional ids, so unique even
    when one message was received twice)."""
    entry: dict[str, object] = {"Id": str(i), "ReceiptHandle": lease.receipt_handle}
    if lease.target is not None:
        entry["VisibilityTimeout"] = lease.target
    return entry


def retry_delay(attempt: int) -> float:
    """Seconds before a failed settle is sent again: 0.2, 0.4, 0.8, ... at most 5."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** (attempt - 1))


class Acker:
    def __init__(
        self,
        ctx: QueueContext,
        flush_interval: float = 0.05,
        max_calls: int | None = None,
        call_timeout: float = 10.0,
    ) -> None:
        """``max_calls``: default the queue's ``settle_calls``."""
        self._tracing = ctx.tracing
        self._sqs = ctx.client
        queue = self._queue = ctx.key
        self._url = ctx.url
        self._counters = ctx.counters
        metrics = ctx.metrics
        self._interval = flush_interval
        self._call_timeout = call_timeout
        self._calls = asyncio.Semaphore(max_calls or ctx.settings.settle_calls)
        # (monotonic time submitted, lease), oldest first
        self._deletes: list[tuple[float, Lease]] = []
        self._changes: list[tuple[float, Lease]] = []
        self._open: dict[int, Lease] = {}
        self.deliveries = Deliveries(UNSURE_MAX, UNSURE_FOR, lambda: time.monotonic())
        """What it knows of the deletes it sends, for redeliveries of handled messages."""
        self._retries: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._filled = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._timers: dict[asyncio.TimerHandle, Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._delete_failed = metrics.delete_failed.labels(queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"acker:{self._queue}")

    def submit(self, lease: Lease) -> None:
        """Send what ``lease`` was settled to (it must be SETTLING)."""
        assert lease.state is State.SETTLING
        self._open[id(lease)] = lease
        if lease.target is None:
            self.deliveries.deleting(lease)
        buffer = self._deletes if lease.target is None else self._changes
        buffer.append((time.monotonic(), lease))
        self._wake.set()
        if len(buffer) >= BATCH:
            self._filled.set()

    @property
    def pending(self) -> int:
        """Leases handed to the acker and not yet ended (confirmed or lapsed)."""
        for key in [key for key, lease in self._open.items() if not lease.live]:
            self._forget(self._open[key])
        return len(self._open)

    def supersede(self, earlier: Lease) -> None:
        """End ``earlier`` quietly (SUPERSEDED): a newer delivery deletes its message. Its
        old receipt handle would only fail as stale; a request in flight with it is
        ignored when it comes back."""
        self._forget(earlier)
        earlier.superseded()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            due = self._due_in(time.monotonic())
            if due > 0:
                # Fewer than ten ready: wait until the oldest has waited flush_interval, less
                # when ten arrive sooner. (Leases waiting for an extension are looked at again
                # after the interval: never a loop that does not yield.)
                self._filled.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await self._filled.wait()
            await self._flush()
            if self._deletes or self._changes:
                self._wake.set()  # a partial batch not due yet, or leases not ready: look again

    def _due_in(self, now: float) -> float:
        """Seconds until a flush has something to send: 0 when ten of a kind are ready or
        the oldest ready lease has waited ``flush_interval``."""
        due = self._interval
        for buffer in (self._deletes, self._changes):
            ready = 0
            oldest: float | None = None
            for queued, lease in buffer:
                if lease.ready_to_send:
                    ready += 1
                    if oldest is None:
                        oldest = queued
            if ready >= BATCH:
                return 0.0
            if oldest is not None:
                due = min(due, oldest + self._interval - now)
        return max(0.0, due)

    async def _flush(self, everything: bool = False) -> None:
        """Sends the ready leases ten to a request; fewer than ten only when the oldest of
        them has waited ``flush_interval`` (or ``everything``: a stop)."""
        now = time.monotonic()
        for buffer in (self._deletes, self._changes):
            ready: list[tuple[float, Lease]] = []
            kept: list[tuple[float, Lease]] = []  # live and not ready (an extension in flight)
            for entry in buffer:
                if entry[1].ready_to_send:
                    ready.append(entry)
                elif entry[1].live:
                    kept.append(entry)
            whole = len(ready) - len(ready) % BATCH
            if not everything and whole < len(ready) and now - ready[whole][0] < self._interval:
                # The partial rest is not due: it waits, in order, for more to join it.
                del ready[whole:]
                going = set(map(id, ready))
                kept = [entry for entry in buffer if entry[1].live and id(entry) not in going]
            buffer[:] = kept
            leases = [lease for _, lease in ready]
            for start in range(0, len(leases), BATCH):
                try:
                    await self._calls.acquire()
                except asyncio.CancelledError:
                    # Stopped while waiting for a call's place (the flush loop cancelled by
                    # close, or close's own deadline): back into the buffer, for close to send.
                    buffer.extend(ready[start:])
                    raise
                # Asked again now, as the request is built: while this waited for a free
                # call, an extension of one of them may have been sent (its change waits).
                chunk = [lease for lease in leases[start : start + BATCH] if lease.ready_to_send]
                buffer.extend(e for e in ready[start : start + BATCH] if e[1].live and not e[1].ready_to_send)
                if not chunk:
                    self._calls.release()
                    continue
                for lease in chunk:
                    lease.sending = True
                task = asyncio.create_task(self._send(chunk))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _send(self, chunk: list[Lease]) -> None:
        if self._tracing is None:
            return await self._call(chunk)
        operation = "delete" if chunk[0].target is None else "change_visibility"
        span = self._tracing.settle_span(operation, [lease.trace for lease in chunk])
        try:
            await self._call(chunk)
        finally:
            span.end()
        return None

    async def _call(self, chunk: list[Lease]) -> None:
        deleting = chunk[0].target is None
        try:
            response = await self._sqs.once(
                "delete_message_batch" if deleting else "change_message_visibility_batch",
                self._call_timeout,
                QueueUrl=self._url,
                Entries=[_entry(i, lease) for i, lease in enumerate(chunk)],
            )
        except asyncio.CancelledError:
            for lease in chunk:
                lease.sending = False
            raise
        except Exception as exc:
            log.warning(
                "ack_batch_retry",
                queue=self._queue,
                operation="delete" if deleting else "change_visibility",
                entries=len(chunk),
                error=error_code(exc),
                detail=str(exc)[:200],
            )
            for lease in chunk:
                self._again(lease)
            return
        finally:
            self._calls.release()
        failed = {int(f["Id"]): f for f in response.get("Failed") or []}
        now = time.monotonic()
        for i, lease in enumerate(chunk):
            failure = failed.get(i)
            if failure is None or not lease.live:  # (not live: superseded meanwhile, the one way)
                if deleting and lease.live and (lease.overdue or lease.expires_at <= now):
                    self.deliveries.remember(lease, "confirmed_late")
                self._forget(lease)
                lease.confirmed()
                continue
            code = str(failure.get("Code", ""))
            fields = {
                "queue": self._queue,
                "message_id": lease.message.message_id,
                "group_id": lease.message.group_id,
                "code": code,
                "detail": str(failure.get("Message", ""))[:200],
            }
            if code in STALE_RECEIPT_CODES:
                if deleting:
                    self._counters.delete_failed += 1
                    self._delete_failed.inc()
                    # The message will be delivered again: say so loudly.
                    log.warning("delete_failed", **fields, redelivery_expected=True)
                    self.deliveries.remember(lease, "failed")
                else:
                    log.info("visibility_change_failed", **fields)
                self._forget(lease)
                lease.lapsed()
                continue
            log.info("ack_entry_retry", **fields, attempt=self._retries.get(id(lease), 0) + 1)
            self._again(lease)

    def _forget(self, lease: Lease) -> None:
        self._open.pop(id(lease), None)
        self._retries.pop(id(lease), None)
        self.deliveries.ended(lease)

    def _again(self, lease: Lease) -> None:
        """Back into the buffer after a backoff, while the lease lives."""
        lease.sending = False
        attempt = self._retries.get(id(lease), 0) + 1
        self._retries[id(lease)] = attempt
        delay = retry_delay(attempt)

        def requeue() -> None:
            self._timers.pop(handle, None)
            if lease.live:
                self.submit(lease)

        handle = asyncio.get_running_loop().call_later(delay, requeue)
        self._timers[handle] = lease

    async def close(self, deadline: float) -> int:
        """Send everything still pending until ``deadline`` (monotonic); returns how many
        leases were left unconfirmed (their messages will be delivered again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self.pending and time.monotonic() < deadline:
            for handle, lease in list(self._timers.items()):  # retry now: there is no later
                handle.cancel()
                del self._timers[handle]
                if lease.live:
                    self.submit(lease)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._flush(everything=True)
                    if self._inflight:
                        await asyncio.wait(list(self._inflight), timeout=0.05)
                    else:
                        await asyncio.sleep(0.01)
            except TimeoutError:
                break
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        left = self.pending
        if left:
            log.warning("ack_flush_incomplete", queue=self._queue, unconfirmed=left)
        return left
