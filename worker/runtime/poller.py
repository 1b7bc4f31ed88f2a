"""Long-poll ReceiveMessage for as many messages as there are free slots.

A poller takes its slots before it asks, so a message is only received when it can start
at once; each message received gets its lease at once. With adaptive concurrency each
receive is reported to the limiter, and a poller the limiter no longer wants retires after
its receive. Transient AWS errors are retried (backoff with jitter, forever); anything else
ends ``poll_forever``, and ``supervise`` logs it and starts it again with backoff, so a
poller is never silently lost.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from worker.aws import error_code, is_transient
from worker.messages.envelope import parse_message
from worker.observe.logs import get_logger
from worker.runtime.context import QueueContext
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Lease, Leases
from worker.runtime.limiter import Limiter
from worker.runtime.slots import Slots

SYSTEM_ATTRIBUTES = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
]
"""The system attributes the worker reads (``parse_message``, tracing): asking for ``All``
has SQS send, and botocore parse, the rest for every message."""

log = get_logger()
RESPONSE_SLACK = 1.0
"""Seconds a receive's response is taken to have spent on the way at most: a message's
visibility counts from its arrival less this (never from before the request was sent)."""
RECEIVE_SLACK = 10.0
"""Seconds past ``wait_time_seconds`` before a receive is given up as lost."""


class Intake(Protocol):
    """What a queue's pollers share (the consumer): the slots they take before they ask,
    the leases they open, where received messages go, and whether to go on."""

    slots: Slots
    leases: Leases
    limiter: Limiter | None

    @property
    def stopping(self) -> bool: ...

    def dispatch(self, leases: list[Lease]) -> None: ...

    def retire(self, index: int) -> bool:
        """Asked by poller ``index`` between receives: True when it is one too many."""
        ...


class Poller:
    """Receives for one queue, one long poll at a time, and hands each message to
    ``dispatch`` with its lease open. A receive that was started is always let finish (a
    long poll abandoned mid-flight stays open on the server, which may hand it the next
    messages, hidden from everyone for a visibility timeout); ``stop`` only keeps a new
    one from starting."""

    def __init__(self, ctx: QueueContext, intake: Intake, fifo: bool, index: int = 0) -> None:
        self._intake = intake
        self._sqs = ctx.client
        queue = self._queue = ctx.key
        self._url = ctx.url
        self._fifo = fifo
        self._settings = ctx.settings
        self._slots = intake.slots
        self._leases = intake.leases
        self._counters = ctx.counters
        self._types = ctx.types
        self._breakers = ctx.breakers
        self._ctx = ctx
        self._needs = _dependency_sets(ctx)
        metrics = self._metrics = ctx.metrics
        self._type_label = ctx.type_label
        self._limiter = intake.limiter
        self._index = index
        self._tracing = ctx.tracing
        self._latency = metrics.receive_latency.labels(queue)
        self._received: dict[str, Any] = {}
        self.last_receive_ok: float | None = None
        self.receiving = False

    async def receive_once(self) -> int:
        if self._needs is not None and self._breakers is not None:
            # Every route this queue serves needs a dependency whose breaker is open: a
            # message received now could only wait (and its receive would count).
            closed_for = self._breakers.blocked(self._needs)
            if closed_for is not None:
                await asyncio.sleep(min(max(closed_for, 0.05), 1.0))
                return 0
        batch = self._settings.batch_size
        rate = self._ctx.start_rate
        if rate is not None:
            # No more than can start within about a second: the rest stay in the queue,
            # unreceived (a receive would count against them).
            batch = min(batch, rate.within(1.0))
            if batch == 0:
                await asyncio.sleep(min(1.0, 1.0 / rate.rate))
                return 0
        starved = self._slots.free < batch
        wanted = await self._slots.acquire(batch, self._settings.batch_wait)
        if self._intake.stopping:
            self._slots.release(wanted)
            return 0
        got = 0
        self.receiving = True
        try:
            raw, sent_at = await self._receive(wanted)
            received_at = time.monotonic()
            self.last_receive_ok = received_at
            self._latency.observe(received_at - sent_at)
            visibility = self._settings.visibility_timeout
            # SQS starts a message's visibility when it hands the message out: for a long
            # poll, up to wait_time_seconds after the request was sent. Counted from the
            # response, less the time the response may have spent on the way.
            granted_at = max(sent_at, received_at - RESPONSE_SLACK)
            leases = [
                self._leases.open(parse_message(m, self._types), m, granted_at, visibility) for m in raw
            ]
            got = len(leases)
            try:  # (bookkeeping that fails must not leave the leases open and undispatched)
                if self._tracing is not None and leases:
                    self._traced(leases, sent_at)
                if self._limiter is not None:
                    self._limiter.received(wanted, got, starved)
                self._count(leases)
            finally:
                self._intake.dispatch(leases)
            return got
        finally:
            self.receiving = False
            self._slots.release(wanted - got)

    def _traced(self, leases: list[Lease], sent_at: float) -> None:
        """Each lease gets its message's creation context; the call gets its span."""
        tracing = self._tracing
        assert tracing is not None
        for lease in leases:
            lease.trace = tracing.creation(lease.message.attributes, lease.raw.get("Attributes"))
        tracing.received(sent_at, [lease.trace for lease in leases], len(leases))

    async def _receive(self, wanted: int) -> tuple[list[dict[str, Any]], float]:
        """ReceiveMessage, retrying transient errors with backoff until it works. Returns
        the messages and when the request that got them was sent. FIFO: every attempt of one receive carries the same
        ReceiveRequestAttemptId, so a retry after a lost response gets the same messages
        back instead of leaving them invisible."""
        params: dict[str, Any] = {
            "QueueUrl": self._url,
            "MaxNumberOfMessages": wanted,
            "WaitTimeSeconds": self._settings.wait_time_seconds,
            "VisibilityTimeout": self._settings.visibility_timeout,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
        }
        if self._fifo:
            params["ReceiveRequestAttemptId"] = uuid.uuid4().hex
        failures = 0
        while True:
            sent_at = time.monotonic()
            try:
                response = await self._sqs.once(
                    "receive_message", self._settings.wait_time_seconds + RECEIVE_SLACK, **params
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                delay = min(10.0, 0.2 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "aws_call_retry",
                    operation="receive_message",
                    queue=self._queue,
                    attempt=failures,
                    error=error_code(exc),
                    detail=str(exc)[:200],
                    sleep=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            return list(response.get("Messages") or []), sent_at

    def _count(self, leases: list[Lease]) -> None:
        self._counters.receives += 1
        self._counters.received += len(leases)
        if not leases:
            self._counters.empty_receives += 1
        for lease in leases:
            label = self._type_label(lease.message)
            counter = self._received.get(label)
            if counter is None:
                counter = self._received[label] = self._metrics.received.labels(self._queue, label)
            counter.inc()

    async def poll_forever(self) -> None:
        """Receive until the worker stops, or until ``retire`` says this poller is one too
        many (asked between receives only: a receive is never abandoned)."""
        while not self._intake.stopping:
            await self.receive_once()
            if self._intake.retire(self._index):
                return


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    counters: QueueCounters,
    on_restart: Callable[[], None] | None = None,
    max_backoff: float = 30.0,
) -> None:
    """Run ``run`` until cancelled; log and restart it with backoff when it dies."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > 60:
                failures = 0
            failures += 1
            counters.poller_restarts += 1
            if on_restart:
                on_restart()
            delay = min(max_backoff, 0.5 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            log.error(
                "poller_crashed",
                task=name,
                error=f"{type(exc).__name__}: {exc}"[:500],
                restart_in=round(delay, 2),
                failures=failures,
                exc_info=True,
            )
            await asyncio.sleep(delay)


def _dependency_sets(ctx: QueueContext) -> list[tuple[str, ...]] | None:
    """Each route's dependencies, when every route of the queue has some (else None: a
    route that needs nothing can always run, so the queue always receives)."""
    needs = [route.dependencies for route in ctx.routes]
    return needs if needs and all(needs) else None
