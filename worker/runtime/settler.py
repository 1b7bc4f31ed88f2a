"""What happens to a message after its handler ran: the one place that settles leases.

A success is deleted; a failure goes back with its retry delay (the redrive policy moves it
to the DLQ after maxReceiveCount failed deliveries); a rejection is moved to the DLQ by the
worker at once (``deadletter.py``); without a DLQ, failures and rejections follow the
backoff schedule. Messages that will not run here are released (visible at once, in
order). Everything goes through the lease and the acker.
"""

from __future__ import annotations

from worker.messages.envelope import Message
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.counters import QueueCounters
from worker.runtime.deadletter import DeadLetters
from worker.runtime.lease import Lease, State
from worker.runtime.processor import Outcome, Processor
from worker.runtime.target import QueueTarget

log = get_logger()


class Settler:
    def __init__(
        self,
        target: QueueTarget,
        acker: Acker,
        dead_letters: DeadLetters,
        processor: Processor,
        counters: QueueCounters,
        metrics: Metrics,
    ) -> None:
        self._target = target
        self._acker = acker
        self._dead_letters = dead_letters
        self._processor = processor
        self._counters = counters
        self._released = metrics.released.labels(target.key)
        self._taken_over = metrics.redelivered_deleted.labels(target.key)
        self._retried = metrics.retried
        self._dead_lettered = metrics.dead_lettered
        self.discards: dict[Lease, Message] = {}
        """Handled offloaded messages whose delete is not confirmed yet."""

    async def apply(self, lease: Lease, outcome: Outcome) -> None:
        """What happens to a standard queue's message after its handler ran."""
        kind = outcome.kind
        if kind == "succeeded":
            self.settle_success(lease)
        elif kind == "cancelled":
            self.release([lease], "shutdown")
        elif kind == "abandoned":
            return  # the thread still runs: the lease is left to lapse, never released
        elif kind == "rejected" and await self.dead_letter(lease, outcome):
            return
        else:
            self.retry_later(lease, outcome)

    def retry_later(self, lease: Lease, outcome: Outcome) -> None:
        visibility = outcome.visibility
        if outcome.kind == "rejected" and self._target.max_receive_count is None:
            # No DLQ to move it to: back off instead of spinning.
            visibility = self._processor.backoff(lease.message.receive_count)
        # (With a DLQ whose move failed, visible at once: the redrive policy moves it.)
        max_count = self._target.max_receive_count
        last_try = max_count is not None and lease.message.receive_count >= max_count
        label = self._processor.type_label(lease.message)
        (self._dead_lettered if last_try else self._retried).labels(self._target.key, label).inc()
        log.info(
            "message_retry_scheduled",
            queue=self._target.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            retry_in=visibility,
            dead_letter_next=last_try,
        )
        self.settle(lease, visibility)

    def exhausted(self, lease: Lease, outcome: Outcome) -> bool:
        if outcome.kind == "rejected":
            return True
        max_count = self._target.max_receive_count
        return max_count is not None and lease.message.receive_count + lease.attempts - 1 >= max_count

    def already_handled(self, lease: Lease) -> bool:
        """True when ``lease`` is a new delivery of a message handled here whose delete was
        still pending (``Acker.pending_delete``) or may not have landed
        (``Acker.unsure_delete``): it is deleted with its new receipt handle and does not
        run again."""
        earlier = self._acker.pending_delete(lease)
        if earlier is not None:
            why = "pending"
            message = self.discards.pop(earlier, None)
            if message is not None:
                self.discards[lease] = message  # its offloaded body goes once this delete lands
            self._acker.supersede(earlier)  # (after the move: its end must not find the body)
        else:
            unsure = self._acker.unsure_delete(lease)
            if unsure is None:
                return False
            why = unsure
            if lease.message.payload is not None:
                self.discards[lease] = lease.message  # kept as its delete was unsure; goes now
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

    def settle_success(self, lease: Lease) -> None:
        """Delete a handled message; once SQS confirms it, its offloaded payload (if any)
        may be deleted too (``discards``, read by the consumer when the lease ends)."""
        if lease.message.payload is not None:
            self.discards[lease] = lease.message
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
        self._dead_lettered.labels(self._target.key, self._processor.type_label(lease.message)).inc()
        log.warning(
            "message_dead_lettered",
            queue=self._target.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            reason=outcome.reason,
            attempts=lease.message.receive_count + lease.attempts - 1,
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
