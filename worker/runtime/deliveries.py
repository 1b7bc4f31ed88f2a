"""What the acker knows of the deletes it sends, by message id, so that a message SQS hands
out again after its handler ran here is deleted instead of run twice: while its delete is
pending (``pending_delete``), and for a while after a delete that may not have landed
(``unsure_delete``: it failed with a stale receipt handle, or SQS confirmed it only once the
lease's visibility could have run out). Only leases that went wrong are remembered."""

from __future__ import annotations

from collections.abc import Callable

from worker.messages.envelope import Message
from worker.runtime.lease import Lease
from worker.runtime.memory import Recent


class Deliveries:
    def __init__(self, cap: int, ttl: float, clock: Callable[[], float]) -> None:
        self._deleting: dict[str, Lease] = {}
        """Leases whose delete is pending, by message id."""
        self._unsure: Recent[tuple[str, Message | None]] = Recent(cap, ttl, clock)
        """Messages handled here whose delete may not have landed: (why, its offloaded body
        if it may go), oldest first."""

    def deleting(self, lease: Lease) -> None:
        """``lease``'s delete is pending from now on."""
        self._deleting[lease.message.message_id] = lease

    def ended(self, lease: Lease) -> None:
        """``lease`` is no longer pending (every end of a lease comes through here)."""
        if self._deleting.get(lease.message.message_id) is lease:
            del self._deleting[lease.message.message_id]

    def remember(self, lease: Lease, why: str) -> None:
        """``lease``'s delete may not have landed (``failed`` or ``confirmed_late``)."""
        self._unsure.remember(lease.message.message_id, (why, lease.discard))

    def pending_delete(self, lease: Lease) -> Lease | None:
        """The lease of an earlier delivery of ``lease``'s message whose delete is still
        pending here, or None. SQS delivered the message again (the delete's retries did not
        land before its visibility ran out, e.g. through an outage): its handler ran
        already, so the caller deletes it with the new receipt handle, the one SQS honours
        now, and ends the earlier lease (``Acker.supersede``)."""
        earlier = self._deleting.get(lease.message.message_id)
        return None if earlier is lease else earlier

    def unsure_delete(self, lease: Lease) -> tuple[str, Message | None] | None:
        """Why the delete of an earlier delivery of ``lease``'s message, handled here and no
        longer pending, may not have landed, or None: ``"confirmed_late"`` (a delete with a
        receipt handle older than the latest delivery's succeeds without deleting) or
        ``"failed"`` (its receipt handle no longer worked). SQS hands such a message out
        again; the caller deletes the new delivery instead of running it. Answered once, for
        a while; with the earlier delivery's offloaded body when it may go (kept meanwhile)."""
        return self._unsure.take(lease.message.message_id)

    def unsure(self, lease: Lease) -> bool:
        """Whether ``lease``'s message is remembered as deleted unsurely, without answering
        for it: its offloaded body must stay for the redelivery."""
        return lease.message.message_id in self._unsure
