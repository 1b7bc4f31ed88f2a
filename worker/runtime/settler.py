"""What happens to a message after its handler ran: the one place that settles leases.

A success is deleted; a failure goes back with its retry delay (the redrive policy moves it
to the DLQ after maxReceiveCount failed deliveries); a rejection is moved to the DLQ by the
worker at once (``deadletter.py``); without a DLQ, failures and rejections follow the
backoff schedule. Messages that will not run here are released (visible at once, in
order). Everything goes through the lease and the acker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from worker.messages.envelope import Message
from worker.observe.logs import get_logger
from worker.runtime.acker import Acker
from worker.runtime.call import Item
from worker.runtime.context import QueueContext
from worker.runtime.deadletter import DeadLetters
from worker.runtime.lease import Lease, State
from worker.runtime.rules import Action, Decision, Outcome
from worker.runtime.target import QueueTarget

log = get_logger()


class Settler:
    def __init__(
        self,
        ctx: QueueContext,
        target: QueueTarget,
        acker: Acker,
        dead_letters: DeadLetters,
        type_label: Callable[[Message], str],
    ) -> None:
        self._target = target
        self._acker = acker
        self._dead_letters = dead_letters
        self._type_label = type_label
        self._policy = ctx.policy
        self._payloads = ctx.payloads
        self._counters = ctx.counters
        metrics = ctx.metrics
        self._released = metrics.released.labels(target.key)
        self._taken_over = metrics.redelivered_deleted.labels(target.key)
        self._retried = metrics.retried
        self._dead_lettered = metrics.dead_lettered

    async def execute(self, item: Item) -> Decision | None:
        """Carry out ``item``'s decision (``worker.runtime.rules``); a ``WAIT`` decision
        when the message must wait here instead (a FIFO message whose DLQ move failed), else
        None. A DLQ move is not cut short by the shutdown's cancel: the copy is sent once
        and its original deleted, or neither."""
        decision, lease = item.decision, self.newest(item.lease)
        assert decision is not None
        assert item.outcome is not None
        action = decision.action
        if action is Action.DELETE:
            self.settle_success(lease, item.message)
        elif action is Action.RETRY:
            self.retry_later(lease, decision)
        elif action is Action.RELEASE:
            # Past the grace at shutdown, or waited on a dependency past breaker.max_wait.
            self.release([lease], "waited too long" if item.outcome.kind == "waiting" else "shutdown")
        elif action is Action.DEAD_LETTER:
            moved = asyncio.ensure_future(self.dead_letter(lease, item.outcome))
            try:
                ok = await asyncio.shield(moved)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()
                ok = await moved
            if not ok:
                # No DLQ, or the move failed. A standard queue's message is made visible at
                # once (the redrive policy moves it); a FIFO message waits here (its group
                # behind it) and is tried again.
                if not self._target.fifo:
                    self.retry_later(lease, Decision(Action.RETRY, 0, last_try=True))
                    return None
                return Decision(Action.WAIT, self._policy.backoff_for(lease.attempt))
        return None  # WAIT: the caller runs it again; KEEP: left to lapse

    def newest(self, lease: Lease) -> Lease:
        """The newest delivery of ``lease``'s message (``Lease.successor``: SQS delivered it
        again while it ran here); the earlier ones end quietly (superseded)."""
        while lease.successor is not None:
            earlier, lease = lease, lease.successor
            self._acker.supersede(earlier)
        return lease

    def retry_later(self, lease: Lease, decision: Decision) -> None:
        label = self._type_label(lease.message)
        (self._dead_lettered if decision.last_try else self._retried).labels(self._target.key, label).inc()
        log.info(
            "message_retry_scheduled",
            queue=self._target.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            retry_in=decision.delay,
            dead_letter_next=decision.last_try,
        )
        self.settle(lease, decision.delay)

    def already_handled(self, lease: Lease) -> bool:
        """True when ``lease`` is a new delivery of a message handled here whose delete was
        still pending (``Acker.pending_delete``) or may not have landed
        (``Acker.unsure_delete``): it is deleted with its new receipt handle and does not
        run again."""
        earlier = self._acker.deliveries.pending_delete(lease)
        if earlier is not None:
            why = "pending"
            # Its offloaded body (if it may go) goes once this delete lands; taken from the
            # earlier lease first, so that lease's end does not find it.
            lease.discard, earlier.discard = earlier.discard, None
            self._acker.supersede(earlier)
        else:
            unsure = self._acker.deliveries.unsure_delete(lease)
            if unsure is None:
                return False
            why, lease.discard = unsure  # a body kept as its delete was unsure goes now
        self._counters.redelivered_deleted += 1
        self._taken_over.inc()
        log.info(
            "message_redelivered_while_deleting",
            queue=self._target.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            receive_count=lease.message.receive_count,
            earlier_delete=why,
        )
        self.settle(lease, None)
        return True

    def settle_success(self, lease: Lease, handled: Message) -> None:
        """Delete a handled message (``handled``: as its handler saw it); once SQS confirms
        it, its offloaded body goes too when it may (``Lease.discard``)."""
        if (
            handled.payload is not None
            and self._payloads is not None
            and self._payloads.should_discard(handled)
        ):
            lease.discard = handled
        self.settle(lease, None)

    def settle(self, lease: Lease, visibility: int | None) -> None:
        if lease.state is not State.RUNNING:
            return  # ended already (its receipt lapsed)
        if visibility is None:
            lease.settle_delete()
        else:
            lease.settle_visibility(visibility)
        self._acker.submit(lease)

    async def dead_letter(self, lease: Lease, outcome: Outcome) -> bool:
        """Move the message to the DLQ and delete it; False when there is no DLQ or the
        move failed (the caller backs off and tries again later)."""
        if not await self._dead_letters.move(lease, outcome.reason):
            return False
        self._counters.dead_lettered += 1
        self._dead_lettered.labels(self._target.key, self._type_label(lease.message)).inc()
        log.warning(
            "message_dead_lettered",
            queue=self._target.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            reason=outcome.reason,
            attempts=lease.attempt - 1,  # (its failures counted already)
        )
        self.settle(lease, None)
        return True

    def release(self, leases: list[Lease], reason: str) -> None:
        """Give back messages that will not run here: visible at once, in order."""
        for lease in leases:
            if lease.state is not State.RUNNING:
                continue
            self.settle(lease, 0)
            self._counters.released += 1
            self._released.inc()
            log.info(
                "message_released",
                queue=self._target.key,
                message_id=lease.message.message_id,
                group_id=lease.message.group_id,
                reason=reason,
            )
