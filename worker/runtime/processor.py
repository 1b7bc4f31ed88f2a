"""One run of a message's handler, to exactly one ``Outcome``.

=======================  ===========================================================
handler                  outcome
=======================  ===========================================================
returns                  ``succeeded``: the message is deleted
raises ``Retry(d)``      ``failed`` with ``d`` seconds before the next attempt
raises PermanentFailure  ``rejected``: to the dead-letter queue at once, with the reason
unknown/missing type,    ``rejected``, with the reason logged once
bad body, bad payload
raises anything else     ``failed`` with the queue's backoff for the attempt number
(its own CancelledError
included)
async, runs too long     cancelled at ``max_processing_time`` (10 ms or a thousandth of
                         it late at most, whichever is more): ``failed``
shutdown past the grace  async: cancelled, ``cancelled`` (made visible at once);
                         plain function: the thread cannot be stopped, so the lease is
                         kept while it runs and its result counts when it returns
=======================  ===========================================================

What happens to the message then is the consumer's business (``worker.runtime.consumer``);
nothing here talks to SQS.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.payloads import reserved_attribute
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Route
from worker.observe.logs import ContextBinder, get_logger
from worker.observe.metrics import Metrics
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Lease
from worker.settings import QueueSettings

if TYPE_CHECKING:
    from worker.messages.payload_store import PayloadStore
    from worker.observe.tracing import Tracing
    from worker.runtime.idempotency import Claim, Idempotency

MEMORY = 10_000
_MESSAGE_CONTEXT = ContextBinder("queue", "message_id", "type", "receive_count", "group_id")
"""What every log line about a message carries (handler code's lines included)."""
_BATCH_CONTEXT = ContextBinder("queue", "type", "batch")
Kind = Literal["succeeded", "failed", "rejected", "cancelled", "abandoned"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    visibility: int = 0
    """For ``failed``: seconds until the next attempt."""
    reason: str = ""


SUCCEEDED = Outcome("succeeded")
REPLAYED = Outcome("succeeded", 0, "replayed: an earlier run of its idempotency key completed")
SKIPPED = Outcome("succeeded", 0, "offloaded payload missing; skipped (payloads.ignore_missing)")
CANCELLED = Outcome("cancelled")
ABANDONED = Outcome("abandoned")


class _Memory:
    """The last ``MEMORY`` message ids seen for something, with a note (bounded)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, str] = OrderedDict()

    def add(self, message_id: str, note: str = "") -> bool:
        """Remember ``message_id``; True when it was new."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = note
        if len(self._ids) > MEMORY:
            self._ids.popitem(last=False)
        return True

    def get(self, message_id: str) -> str | None:
        return self._ids.get(message_id)


class Processor:
    def __init__(
        self,
        queue: str,
        settings: QueueSettings,
        registry: Registry,
        counters: QueueCounters,
        executor: Executor,
        metrics: Metrics,
        resources: Resources | None = None,
        payloads: PayloadStore | None = None,
        tracing: Tracing | None = None,
        idempotency: Idempotency | None = None,
        *,
        group_metrics: bool = False,
    ) -> None:
        """``group_metrics``: also count outcomes per MessageGroupId (``health.group_metrics``)."""
        self.queue = queue
        self._groups = metrics.group_messages if group_metrics else None
        self.idempotency = idempotency
        """Records of idempotent handlers' runs (None when no store is configured)."""
        self.tracing = tracing
        """Spans per handler run when tracing is on (``worker.observe.tracing``)."""
        self.resources = resources or Resources()
        self.payloads = payloads
        """Where offloaded bodies (the extended-client format) are read from; None: an
        offloaded message is rejected with its reason."""
        self.settings = settings
        self.registry = registry
        self.counters = counters
        self.executor = executor
        self.metrics = metrics
        # Resolved once: the per-message path should not look loggers or labels up again.
        self.log = get_logger().bind()
        self._children: dict[tuple[str, str], Any] = {}
        self._deadlines = _Deadlines(settings.max_processing_time)
        self._failed = _Memory()
        self.rejected = _Memory()
        """Ids rejected by this process: a redelivery is neither run nor logged again."""

    def backoff(self, attempt: int) -> int:
        schedule = self.settings.retry_backoff
        base = schedule[min(max(attempt, 1), len(schedule)) - 1]
        return round(base * (1 + random.uniform(0, self.settings.retry_jitter)))

    def _attempt(self, lease: Lease) -> tuple[Message, int]:
        """Count a run of ``lease``; the message as the handler sees it (its attempt number)."""
        message = lease.message
        lease.attempts += 1
        attempt = message.receive_count + lease.attempts - 1
        if attempt != message.receive_count:
            # Retried in place (FIFO): the handler sees which attempt this is.
            message = dataclasses.replace(message, receive_count=attempt)
        return message, attempt

    def _bind(self, message: Message) -> None:
        _MESSAGE_CONTEXT.bind(
            self.queue, message.message_id, message.type, message.receive_count, message.group_id
        )

    async def run(self, lease: Lease) -> Outcome:
        """Run the handler once for ``lease``'s message; never raises (shutdown included)."""
        tracing = self.tracing
        if tracing is None:
            return await self._run(lease)
        m = lease.message
        with tracing.process(lease.trace, m.message_id, m.type, m.receive_count + lease.attempts) as span:
            outcome = await self._run(lease)
            tracing.outcome(span, outcome.kind, outcome.reason)
            return outcome

    async def _run(self, lease: Lease) -> Outcome:
        message, attempt = self._attempt(lease)
        self._bind(message)
        started = time.monotonic()
        reason = self.rejected.get(message.message_id)
        if reason is not None:
            return Outcome("rejected", 0, reason)
        claim: Claim | None = None
        try:
            if message.payload is not None or reserved_attribute(message.attributes) is not None:
                resolved = await self._resolve(message)
                if resolved is None:  # its object is gone and payloads.ignore_missing is on
                    return SKIPPED
                message = resolved
            route = self.registry.get(message.type)
            if route is None:
                reason = f"unknown message type {message.type!r}" if message.type else "message has no type"
                raise PermanentFailure(reason)
            if lease.attempts == 1:
                self._observe_lag(message, route.message_type, time.time())
            if self.idempotency is not None:
                claim = await self.idempotency.begin(lease, attempt) if route.idempotent else None
                self.idempotency.mark(claim)  # what ``replayed()`` says in the chain
            if self.registry.middlewares:
                await self._chain(route, message, started, claim)
            else:  # the chain is the handler alone: call it without building one
                await self._handler(route, message, started, claim)
        except _Abandoned:
            if claim is not None and self.idempotency is not None:
                self.idempotency.abandoned(claim)
            return ABANDONED
        except asyncio.CancelledError:
            if self._shutting_down():
                await self._release(claim)
                self.log.warning("message_cancelled", duration=self._since(started))
                return CANCELLED
            # The handler's own CancelledError (an inner task it cancelled): a failure.
            await self._release(claim)
            outcome = Outcome("failed", self.backoff(attempt), "CancelledError raised by the handler")
            return self._failed_with(message, started, outcome, "message_failed", exc_info=True)
        except Exception as exc:
            await self._release(claim)
            return self._outcome_of(exc, message, attempt, started)
        if claim is not None and self.idempotency is not None:
            await self._store_write(self.idempotency.succeeded(claim, claim.value))
            if claim.replay:
                self._child("replayed", route.message_type).inc()
        return self._succeeded(message, started, route.message_type, claim is not None and claim.replay)

    async def _release(self, claim: Claim | None) -> None:
        if claim is not None and self.idempotency is not None:
            await self._store_write(self.idempotency.failed(claim))

    async def _store_write(self, write: Coroutine[Any, Any, None]) -> None:
        """An idempotency record's completion or release (bounded by the store's retry
        budget; never raises): a shutdown cancel does not cut it short, the write goes on
        while the message's outcome is returned (its record is right, or runs out with the
        lease)."""
        task = asyncio.ensure_future(write)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                raise
            current.uncancel()

    async def _handler(self, route: Route, message: Message, started: float, claim: Claim | None) -> Any:
        """The innermost call of the chain: the handler, or an earlier run's stored result
        when its key was completed (the handler does not run again)."""
        if claim is None:
            args = route.arguments(message, self.resources)
            if route.is_async:
                return await self._run_async(route, args)
            return await self._run_sync(route, args, started)
        if claim.replay:
            return claim.result()
        assert self.idempotency is not None
        args = route.arguments(message, self.resources, claim.record(self.idempotency))
        if route.is_async:
            claim.value = await self._run_async(route, args)
        else:
            claim.value = await self._run_sync(route, args, started)
        return claim.value  # stored as the handler returned it, whatever middleware makes of it

    async def _resolve(self, message: Message) -> Message | None:
        """An offloaded message with its stored body (PermanentFailure when it cannot be)."""
        if self.payloads is None:
            raise PermanentFailure(
                "the message's body is offloaded to S3 and this worker has no payload store"
            )
        return await self.payloads.resolve(message)

    def _succeeded(self, message: Message, started: float, label: str, replayed: bool = False) -> Outcome:
        """``label``: the type of the route that ran (its ``type_label``)."""
        self.counters.succeeded += 1
        duration = self._since(started)
        self._child("succeeded", label).inc()
        self._child("duration", label).observe(duration)
        if self._groups is not None and message.group_id is not None:
            self._groups.labels(self.queue, message.group_id, "succeeded").inc()
        if replayed:
            self.log.info("message_replayed", duration=duration, message_id=message.message_id)
            return REPLAYED
        self.log.info("message_succeeded", duration=duration, message_id=message.message_id)
        return SUCCEEDED

    @staticmethod
    def _shutting_down() -> bool:
        """This task was cancelled from outside (shutdown past its grace): take it back."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()
            return True
        return False

    def _outcome_of(self, exc: BaseException, message: Message, attempt: int, started: float) -> Outcome:
        """What a handler's exception means for its message (logged once)."""
        if isinstance(exc, PermanentFailure):
            self.rejected.add(message.message_id, exc.reason)
            return self._failed_with(message, started, Outcome("rejected", 0, exc.reason), "message_rejected")
        if isinstance(exc, Retry):
            outcome = Outcome("failed", int(exc.delay), exc.reason or str(exc))
            return self._failed_with(message, started, outcome, "message_retry_requested")
        if isinstance(exc, _Overdue):
            limit = self.settings.max_processing_time
            outcome = Outcome(
                "failed", self.backoff(attempt), f"ran longer than max_processing_time ({limit:g}s)"
            )
            return self._failed_with(message, started, outcome, "message_timeout")
        outcome = Outcome("failed", self.backoff(attempt), f"{type(exc).__name__}: {exc}"[:500])
        return self._failed_with(message, started, outcome, "message_failed", exc_info=exc)

    async def run_batch(self, route: Route, leases: list[Lease]) -> list[Outcome]:
        """``_run_batch`` inside its span when tracing is on."""
        tracing = self.tracing
        if tracing is None:
            return await self._run_batch(route, leases)
        creations = [lease.trace for lease in leases]
        with tracing.process_batch(route.message_type, creations, len(leases)) as span:
            outcomes = await self._run_batch(route, leases)
            worst = next((o for o in outcomes if o.kind in ("failed", "rejected")), None)
            tracing.outcome(
                span, "succeeded" if worst is None else worst.kind, "" if worst is None else worst.reason
            )
            return outcomes

    async def _run_batch(self, route: Route, leases: list[Lease]) -> list[Outcome]:
        """One call of a batch handler for ``leases`` (all of ``route``'s type); an outcome
        per lease, in order. Bodies that do not decode are rejected one by one and left out
        of the call; the handler's result names the failed ones."""
        started = time.monotonic()
        outcomes: list[Outcome] = [SUCCEEDED] * len(leases)
        members: list[tuple[int, Message, int]] = []
        payloads: list[Any] = []
        for i, lease in enumerate(leases):
            message, attempt = self._attempt(lease)
            try:
                if message.payload is not None or reserved_attribute(message.attributes) is not None:
                    resolved = await self._resolve(message)
                    if resolved is None:
                        outcomes[i] = SKIPPED
                        continue
                    message = resolved
                payloads.append(route.payload(message))
            except Exception as exc:  # undecodable body, unreadable offloaded payload
                self._bind(message)
                outcomes[i] = self._outcome_of(exc, message, attempt, started)
                continue
            members.append((i, message, attempt))
        if not members:
            return outcomes
        _BATCH_CONTEXT.bind(self.queue, route.message_type, len(members))
        args = route.batch_arguments(payloads, [m for _, m, _ in members], self.resources)
        now = time.time()
        for i, message, _ in members:
            if leases[i].attempts == 1:
                self._observe_lag(message, route.message_type, now)
        try:
            async with asyncio.timeout(self.settings.max_processing_time) as limit:
                if route.is_async:
                    result = await route.fn(*args)
                else:
                    # Counted while it runs, like a single plain-function handler: the CLI
                    # must not wait at exit for a thread past the final deadline.
                    call = functools.partial(_in_thread, contextvars.copy_context(), route.fn, args)
                    result = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        except asyncio.CancelledError:
            if not self._shutting_down():
                raise
            self.log.warning("batch_cancelled", size=len(members), duration=self._since(started))
            for i, _, _ in members:
                outcomes[i] = CANCELLED
            return outcomes
        except Exception as exc:
            failure: BaseException = _Overdue() if isinstance(exc, TimeoutError) and limit.expired() else exc
            for i, message, attempt in members:
                self._bind(message)
                outcomes[i] = self._outcome_of(failure, message, attempt, started)
            return outcomes
        failed: dict[str, BaseException] = result if isinstance(result, dict) else {}
        for i, message, attempt in members:
            self._bind(message)
            reported = failed.get(message.message_id)
            outcomes[i] = (
                self._succeeded(message, started, route.message_type)
                if reported is None
                else self._outcome_of(reported, message, attempt, started)
            )
        return outcomes

    async def _chain(self, route: Route, message: Message, started: float, claim: Claim | None) -> Any:
        """The middleware chain around the handler (first registered outermost); returns
        what the handler (or the stored result of a replay) returned through it."""
        call: Callable[[], Awaitable[Any]] = functools.partial(self._handler, route, message, started, claim)
        for middleware in reversed(self.registry.middlewares):
            call = functools.partial(middleware, message, call)
        return await call()

    async def _run_async(self, route: Route, args: tuple[Any, ...]) -> Any:
        """``route.fn`` under ``max_processing_time``: what ``asyncio.timeout`` does, with
        the timer shared by every handler due in the same grain (``_Deadlines``)."""
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        deadlines = self._deadlines
        slot = deadlines.enter(task)
        try:
            result = await route.fn(*args)
        except asyncio.CancelledError:
            # Ours (the deadline passed) unless it was also cancelled from outside.
            if deadlines.leave(task, slot) and task.uncancel() <= cancelling:
                raise _Overdue() from None
            raise
        except TimeoutError:
            if deadlines.leave(task, slot):  # the handler turned our cancel into this
                task.uncancel()
                raise _Overdue() from None
            raise
        except BaseException:
            if deadlines.leave(task, slot):
                task.uncancel()
            raise
        if deadlines.leave(task, slot):  # it swallowed the cancel and returned
            task.uncancel()
        return result

    async def _run_sync(self, route: Route, args: tuple[Any, ...], started: float) -> Any:
        """A plain function in the thread pool. A thread cannot be stopped, so its message
        stays leased while it runs: cancelled at shutdown, the coroutine goes on waiting
        for the thread (the result still counts) until it is cancelled a second time."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, functools.partial(_in_thread, ctx, route.fn, args))
        cancelled = overdue = False
        while True:
            try:
                limit = None if overdue else self.settings.max_processing_time - (time.monotonic() - started)
                async with asyncio.timeout(limit):
                    return await asyncio.shield(future)
            except TimeoutError:
                if future.done():
                    raise
                overdue = True
                self.log.warning(
                    "message_overdue", duration=self._since(started), detail="thread still running"
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or not task.cancelling() or future.done():
                    raise
                task.uncancel()
                if cancelled:
                    # The final deadline: leave the lease alone; the message reappears
                    # after its visibility timeout, never while the thread still runs.
                    self.log.warning("handler_thread_abandoned", duration=self._since(started))
                    raise _Abandoned() from None
                cancelled = True
                self.log.info("handler_thread_still_running", duration=self._since(started))

    def _failed_with(
        self,
        message: Message,
        started: float,
        outcome: Outcome,
        event: str,
        *,
        exc_info: bool | BaseException = False,
    ) -> Outcome:
        self.counters.failed += 1
        if outcome.kind == "rejected":
            self.counters.rejected += 1
        duration = self._since(started)
        label = self.type_label(message)
        if self._failed.add(message.message_id):  # once per message, whatever its attempts
            self.metrics.failed.labels(self.queue, label, _REASONS[event]).inc()
            if self._groups is not None and message.group_id is not None:
                self._groups.labels(self.queue, message.group_id, outcome.kind).inc()
        self._child("duration", label).observe(duration)
        self.log.warning(
            event,
            duration=duration,
            retry_in=outcome.visibility if outcome.kind == "failed" else None,
            reason=outcome.reason,
            exc_info=exc_info,
        )
        return outcome

    def _observe_lag(self, message: Message, label: str, now: float) -> None:
        """End-to-end lag: from the message's SentTimestamp to ``now``, its handler's start
        (once per delivery; a clock behind the sender's counts as 0)."""
        if message.sent_timestamp_ms is not None:
            self._child("lag", label).observe(max(0.0, now - message.sent_timestamp_ms / 1000))

    def _child(self, metric: str, label: str) -> Any:
        child = self._children.get((metric, label))
        if child is None:
            child = getattr(self.metrics, metric).labels(self.queue, label)
            self._children[(metric, label)] = child
        return child

    def type_label(self, message: Message) -> str:
        known = message.type is not None and self.registry.get(message.type) is not None
        return message.type if known and message.type else "unknown"

    @staticmethod
    def _since(started: float) -> float:
        return round(time.monotonic() - started, 4)


_threads_running = 0
_threads_lock = threading.Lock()


def _in_thread(ctx: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run a plain-function handler in a pool thread, counted while it runs."""
    global _threads_running
    with _threads_lock:
        _threads_running += 1
    try:
        return ctx.run(fn, *args)
    finally:
        with _threads_lock:
            _threads_running -= 1


def handler_threads_running() -> int:
    """Plain-function handlers running now (the CLI does not wait for them at exit)."""
    return _threads_running


class _Deadlines:
    """Cancels handler tasks that run past ``seconds``, with one timer per ``grain`` of
    deadlines (rounded up: a thousandth of ``seconds``, at least 10 ms) instead of one per
    handler: ``asyncio.timeout`` costs a timer, its heap entry and its cancellation for
    every message. A timer is never cancelled; one whose handlers all left fires for
    nothing, so there are at most a thousand of them."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._grain = max(0.01, seconds / 1000)
        self._slots: dict[int, set[asyncio.Task[Any]]] = {}
        self._expired: set[asyncio.Task[Any]] = set()

    def enter(self, task: asyncio.Task[Any]) -> int:
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self._seconds) / self._grain)
        tasks = self._slots.get(slot)
        if tasks is None:
            tasks = self._slots[slot] = set()
            loop.call_at(slot * self._grain, self._expire, slot)
        tasks.add(task)
        return slot

    def leave(self, task: asyncio.Task[Any], slot: int) -> bool:
        """``task`` is out of its handler; True when its deadline cancelled it."""
        tasks = self._slots.get(slot)
        if tasks is not None:
            tasks.discard(task)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _expire(self, slot: int) -> None:
        for task in self._slots.pop(slot, ()):
            self._expired.add(task)
            task.cancel()


class _Abandoned(BaseException):
    """A plain-function handler still runs at the final shutdown deadline."""


class _Overdue(TimeoutError):
    """An async handler ran past ``max_processing_time`` and was cancelled."""


_REASONS = {
    "message_failed": "error",
    "message_timeout": "timeout",
    "message_retry_requested": "retry_requested",
    "message_rejected": "rejected",
}
