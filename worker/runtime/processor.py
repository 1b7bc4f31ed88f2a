"""One run of the step chain for one message or one batch, to an ``Outcome`` per message.

The same path for every message: single and batch handlers, standard and FIFO queues, the
worker, the testing kit and the Lambda entry point. The steps (``worker.runtime.steps``)
do the work; this module turns what each message came to into its outcome, in one place
(``_conclude``), and logs and counts it once:

=======================  ===========================================================
the message's run        outcome
=======================  ===========================================================
returns                  ``succeeded``: deleted
raises ``Retry(d)``      ``failed`` with ``d`` seconds before the next attempt
raises PermanentFailure  ``rejected``: to the dead-letter queue at once, with the reason
unknown/missing type,    ``rejected``, with the reason logged once
bad body, bad payload
S3 or the idempotency    ``waiting``: not the handler's failure; it waits, leased, and
store unreachable        spends no attempt
raises anything else     ``failed`` with the queue's backoff for the attempt number
(its own CancelledError
included)
runs too long            async: cancelled at ``max_processing_time`` (over the whole
                         chain): ``failed`` (``waiting`` while S3 or the store was
                         answering); a plain function's thread cannot be stopped: its
                         result counts when it returns
shutdown past the grace  async: cancelled, ``cancelled`` (made visible at once);
                         plain function: kept leased while it runs, ``abandoned`` at the
                         final deadline (left to lapse)
=======================  ===========================================================

A batch handler returns ``None`` (all succeeded) or the failed messages by id, each with
its exception, which means for that message what it would for a single one. What happens
to the message then is ``worker.runtime.rules``; nothing here talks to SQS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from typing import Any

from worker.messages.outcomes import DependencyUnavailable, PermanentFailure, Retry
from worker.messages.routing import Route
from worker.observe.logs import ContextBinder, get_logger
from worker.runtime import steps
from worker.runtime.call import Abandoned, Call, Item, Next, Overdue, Step
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease
from worker.runtime.memory import Recent
from worker.runtime.rules import (
    ABANDONED,
    CANCELLED,
    REPLAYED,
    SUCCEEDED,
    Action,
    Decision,
    Outcome,
    decide,
    wait_for,
)
from worker.runtime.steps.claim import DEPENDENCY as STORE
from worker.runtime.steps.payload import DEPENDENCY as S3

MEMORY = 10_000
_MESSAGE_CONTEXT = ContextBinder("queue", "message_id", "type", "receive_count", "group_id")
"""What every log line about a message carries (handler code's lines included)."""
_BATCH_CONTEXT = ContextBinder("queue", "type", "batch")
_DEPENDENCY_OF_STAGE = {"payload": S3, "claim": STORE, "limits": "flow control"}
"""A deadline that passes in these steps is the dependency's fault, not the handler's."""
_REASONS = {
    "message_failed": "error",
    "message_timeout": "timeout",
    "message_retry_requested": "retry_requested",
    "message_rejected": "rejected",
}


class Processor:
    def __init__(self, ctx: QueueContext) -> None:
        self.ctx = ctx
        self.queue = ctx.key
        self.registry = ctx.registry
        self.settings = ctx.settings
        self._groups = ctx.metrics.group_messages if ctx.group_metrics else None
        self.log = get_logger().bind()
        self._children: dict[tuple[str, str], Any] = {}
        self.steps: list[Step] = steps.build(ctx)
        self._run_chain = _chain(self.steps)
        self._failed: Recent[str] = Recent(MEMORY)
        self.rejected: Recent[str] = Recent(MEMORY)
        """Ids rejected by this process: a redelivery is neither run nor logged again."""

    def backoff(self, attempt: int) -> int:
        return self.ctx.policy.backoff_for(attempt)

    async def run(self, route: Route | None, leases: list[Lease]) -> list[Item]:
        """Run the chain once for ``leases`` (one message, or a batch of ``route``'s type);
        an item per lease, in order, with its outcome and decision. Never raises (shutdown
        included)."""
        tracing = self.ctx.tracing
        if tracing is None:
            return await self._run(route, leases)
        if route is None or route.batch is None:
            lease = leases[0]
            m = lease.message
            with tracing.process(lease.trace, m.message_id, m.type, lease.attempt) as span:
                items = await self._run(route, leases)
                outcome = items[0].outcome or SUCCEEDED
                tracing.outcome(span, outcome.kind, outcome.reason)
                return items
        with tracing.process_batch(
            route.message_type, [lease.trace for lease in leases], len(leases)
        ) as span:
            items = await self._run(route, leases)
            outcomes = [item.outcome or SUCCEEDED for item in items]
            worst = next((o for o in outcomes if o.kind in ("failed", "rejected")), None)
            tracing.outcome(
                span, "succeeded" if worst is None else worst.kind, "" if worst is None else worst.reason
            )
            return items

    async def run_one(self, lease: Lease) -> Outcome:
        """``run`` for one message (the testing kit, the Lambda entry point)."""
        items = await self.run(None, [lease])
        assert items[0].outcome is not None
        return items[0].outcome

    async def _run(self, route: Route | None, leases: list[Lease]) -> list[Item]:
        items = []
        for lease in leases:
            lease.runs += 1
            message, attempt = lease.message, lease.attempt
            if attempt != message.receive_count:
                # Retried in place: the handler sees which attempt this is.
                message = dataclasses.replace(message, receive_count=attempt)
            item = Item(lease, message, attempt)
            reason = self.rejected.get(message.message_id)
            if reason is not None:  # rejected here before: neither run nor logged again
                item.outcome = Outcome("rejected", 0, reason)
                item.decision = decide(item.outcome, attempt, self.ctx.policy)
            items.append(item)
        call = Call(route, [i for i in items if i.outcome is None], time.monotonic(), self._conclude)
        if call.live:
            if len(call.live) == 1 and (route is None or route.batch is None):
                self._bind(call.live[0])
            else:
                _BATCH_CONTEXT.bind(self.queue, route.message_type if route else None, len(call.live))
            try:
                await self._run_chain(call)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        task.uncancel()  # taken back: the outcome says what it was
                for item in list(call.live):
                    call.conclude(item, exc)
            else:
                failures: dict[str, BaseException] = (
                    call.value if call.batch and isinstance(call.value, dict) else {}
                )
                for item in list(call.live):
                    call.conclude(item, failures.get(item.message.message_id))
        for item in items:
            if item.outcome is None or item.decision is None:  # (a step's skip: deleted)
                item.outcome = item.outcome or SUCCEEDED
                item.decision = decide(item.outcome, item.attempt, self.ctx.policy)
        return items

    def _bind(self, item: Item) -> None:
        m = item.message
        _MESSAGE_CONTEXT.bind(self.queue, m.message_id, m.type, m.receive_count, m.group_id)

    # -- the one rule from what happened to an outcome ----------------------------------------
    def _conclude(self, item: Item, exc: BaseException | None, call: Call) -> Outcome:
        """What ``exc`` (None: success) means for ``item``'s message, and what happens to it
        then (``item.decision``); logged once, with the decision."""
        if call.batch or len(call.items) > 1:
            self._bind(item)
        outcome = self._outcome(item, exc, call)
        if outcome.kind != "waiting":
            item.lease.waiting_since = None  # a wait's bound counts one stretch of waiting
        if item.decision is None:
            item.decision = decide(outcome, item.attempt, self.ctx.policy)
        return outcome

    def _outcome(self, item: Item, exc: BaseException | None, call: Call) -> Outcome:
        message, started = item.message, call.started
        if exc is None:
            label = call.route.message_type if call.route is not None else self.type_label(message)
            return self._succeeded(item, started, label, call.replayed)
        if isinstance(exc, Overdue):
            dependency = _DEPENDENCY_OF_STAGE.get(call.stage)
            if dependency is not None:
                exc = DependencyUnavailable(dependency, "no answer within max_processing_time")
        if isinstance(exc, DependencyUnavailable):
            return self._waiting(item, exc, started)
        if isinstance(exc, Abandoned):
            return ABANDONED
        if isinstance(exc, asyncio.CancelledError):
            if self.ctx.halt.grace_over:
                self.log.warning("message_cancelled", duration=_since(started))
                return CANCELLED
            # The handler's own CancelledError (an inner task it cancelled): a failure.
            outcome = Outcome("failed", self.backoff(item.attempt), "CancelledError raised by the handler")
            return self._failed_with(item, started, outcome, "message_failed", exc_info=True, call=call)
        if isinstance(exc, PermanentFailure):
            self.rejected.add(message.message_id, exc.reason)
            outcome = Outcome("rejected", 0, exc.reason)
            return self._failed_with(item, started, outcome, "message_rejected")
        if isinstance(exc, Retry):
            outcome = Outcome("failed", int(exc.delay), exc.reason or str(exc))
            return self._failed_with(item, started, outcome, "message_retry_requested")
        if isinstance(exc, Overdue):
            limit = self.settings.max_processing_time
            why = f"ran longer than max_processing_time ({limit:g}s)"
            return self._failed_with(
                item, started, Outcome("failed", self.backoff(item.attempt), why), "message_timeout"
            )
        outcome = Outcome("failed", self.backoff(item.attempt), f"{type(exc).__name__}: {exc}"[:500])
        return self._failed_with(item, started, outcome, "message_failed", exc_info=exc, call=call)

    def _succeeded(self, item: Item, started: float, label: str, replayed: bool) -> Outcome:
        """``label``: the type of the route that ran."""
        message = item.message
        self.ctx.counters.succeeded += 1
        duration = _since(started)
        self._child("succeeded", label).inc()
        self._child("duration", label).observe(duration)
        if self._groups is not None and message.group_id is not None:
            self._groups.labels(self.queue, message.group_id, "succeeded").inc()
        if replayed:
            self._child("replayed", label).inc()
            self.log.info("message_replayed", duration=duration, message_id=message.message_id)
            return REPLAYED
        self.log.info("message_succeeded", duration=duration, message_id=message.message_id)
        return SUCCEEDED

    def _waiting(self, item: Item, exc: DependencyUnavailable, started: float) -> Outcome:
        """A dependency is down: the message waits, leased, no attempt spent, for as long
        as the dependency said (an open breaker's time), else 1, 2, 4 .. 30 s; past
        ``breaker.max_wait`` of waiting it is given back to the queue instead."""
        lease = item.lease
        lease.waits += 1
        now = time.monotonic()
        if lease.waiting_since is None:
            lease.waiting_since = now
        given = exc.retry_after
        delay = wait_for(lease.waits - 1) if given is None else max(1, min(math.ceil(given), 30))
        self.ctx.counters.waiting += 1
        self.ctx.metrics.waiting.labels(self.queue, exc.dependency).inc()
        waited = now - lease.waiting_since
        if waited >= self.ctx.max_wait:
            self.log.warning(
                "message_wait_given_up",
                dependency=exc.dependency,
                detail=exc.detail,
                waited=round(waited, 1),
                waits=lease.waits,
            )
            item.decision = Decision(Action.RELEASE)
            return Outcome("waiting", 0, str(exc))
        (self.log.warning if lease.waits == 1 else self.log.debug)(
            "message_waiting",
            dependency=exc.dependency,
            detail=exc.detail,
            retry_in=delay,
            waits=lease.waits,
            duration=_since(started),
        )
        outcome = Outcome("waiting", delay, str(exc))
        item.decision = Decision(Action.WAIT, delay)
        return outcome

    def _failed_with(
        self,
        item: Item,
        started: float,
        outcome: Outcome,
        event: str,
        *,
        exc_info: bool | BaseException = False,
        call: Call | None = None,
    ) -> Outcome:
        message = item.message
        counters = self.ctx.counters
        counters.failed += 1
        if outcome.kind == "rejected":
            counters.rejected += 1
        duration = _since(started)
        label = self.type_label(message)
        if self._failed.add(message.message_id, ""):  # once per message, whatever its attempts
            self.ctx.metrics.failed.labels(self.queue, label, _REASONS[event]).inc()
            if self._groups is not None and message.group_id is not None:
                self._groups.labels(self.queue, message.group_id, outcome.kind).inc()
        self._child("duration", label).observe(duration)
        if exc_info is not False and call is not None:
            if call.traced:
                exc_info = False  # the same exception: its traceback was logged once
            call.traced = True
        decision = item.decision = decide(outcome, item.attempt, self.ctx.policy)
        item.lease.failures += 1  # failed for this message: its next run in place is its next attempt
        action = decision.action
        self.log.warning(
            event,
            duration=duration,
            attempt=item.attempt,
            attempts_max=self.ctx.policy.max_receive_count,  # the console's "n of m" (not in JSON)
            reason=outcome.reason,
            retry_in=decision.delay if action in (Action.RETRY, Action.WAIT) else None,
            dead_letter_next=decision.last_try or action is Action.DEAD_LETTER,
            exc_info=exc_info,
        )
        return outcome

    def _child(self, metric: str, label: str) -> Any:
        child = self._children.get((metric, label))
        if child is None:
            child = getattr(self.ctx.metrics, metric).labels(self.queue, label)
            self._children[(metric, label)] = child
        return child

    def type_label(self, message: Any) -> str:
        return self.ctx.type_label(message)


def _chain(chain: list[Step]) -> Next:
    """The steps as one callable: each step's ``call_next`` is the rest of the chain. Each
    link is a ``partial`` of the step, so a call costs one coroutine per step, no more."""

    async def end(call: Call) -> None:
        return None

    run: Next = end
    for step in reversed(chain):
        run = functools.partial(step, call_next=run)
    return run


def _since(started: float) -> float:
    return round(time.monotonic() - started, 4)
