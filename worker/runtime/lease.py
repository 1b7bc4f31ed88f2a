"""The message lease: the one owner of a received message's visibility.

A lease is created when ReceiveMessage returns the message and ends when SQS has confirmed
what happens to it: the delete went through (``SETTLED``), its visibility was changed for a
retry or a release (``RELEASED``), or its receipt handle stopped working (``LAPSED``: SQS
will deliver it again). Until then the lease holds one of the queue's slots and keeps being
extended, also while the delete is waiting or being retried, so finished work is never
handed to another consumer before its delete is confirmed.

States::

    RUNNING --settle_delete()------> SETTLING(delete) --confirmed--> SETTLED
    RUNNING --settle_visibility(s)-> SETTLING(change) --confirmed--> RELEASED
    any live state --receipt handle no longer valid-----------------> LAPSED
    SETTLING(delete) --the message was delivered again-------------> SUPERSEDED

(``SUPERSEDED``: SQS handed the message out again while its delete was still pending, so
the newer delivery's lease deletes it, with the receipt handle SQS honours now; see
``Acker.pending_delete``.)

Rules the heartbeat and the acker follow by asking the lease, never by keeping state of
their own:

* an extension is sent only for a live lease (``wants_extension``), and never for one
  whose visibility change is in flight: the change sets the visibility itself (while the
  change waits to be sent, the lease is still extended, so a slow change cannot let the
  visibility run out before it lands);
* a visibility change is sent only while no extension of the same lease is in flight
  (``ready_to_send``), so a late extension cannot re-hide a message that was just given a
  retry delay or made visible;
* both ask at the moment they build a request, never earlier (a request that waited for a
  free call asks again), so the two senders of a queue's visibility requests never have
  two requests for one lease in flight, and the change always comes last;
* the visibility granted by an extension counts from the moment the request was sent.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from worker.messages.envelope import Message


class State(enum.Enum):
    RUNNING = "running"
    SETTLING = "settling"
    SETTLED = "settled"
    RELEASED = "released"
    LAPSED = "lapsed"
    SUPERSEDED = "superseded"


LIVE = frozenset({State.RUNNING, State.SETTLING})


class Lease:
    __slots__ = (
        "_on_end",
        "discard",
        "expires_at",
        "extending",
        "failures",
        "granted_at",
        "lost",
        "message",
        "overdue",
        "raw",
        "runs",
        "sending",
        "state",
        "successor",
        "target",
        "trace",
        "visibility",
        "waiting_since",
        "waits",
    )

    def __init__(
        self,
        message: Message,
        raw: dict[str, Any],
        granted_at: float,
        visibility: int,
        on_end: Callable[[Lease], None],
    ) -> None:
        self.message = message
        self.raw = raw
        """The ReceiveMessage entry as SQS returned it (body and attributes, for the DLQ)."""
        self.visibility = visibility
        self.granted_at = granted_at
        """When the request that granted the current visibility was sent (monotonic)."""
        self.expires_at = granted_at + visibility
        self.state = State.RUNNING
        self.target: int | None = None
        """While SETTLING: None to delete, else the visibility (seconds) to set."""
        self.extending = False
        """An extension request for this lease is in flight."""
        self.sending = False
        """A settle request for this lease is in flight."""
        self.lost = False
        """SQS refused an extension as stale while the handler runs: extending stops; the
        settle is still tried, and its answer ends the lease."""
        self.overdue = False
        """Its visibility ran out while it was live (the heartbeat did not keep up)."""
        self.trace: Any = None
        """The message's creation span context when tracing is on (``worker.observe.tracing``)."""
        self.runs = 0
        """Runs of its step chain during this delivery (retries in place run it again)."""
        self.failures = 0
        """Runs of this delivery that failed for this message (FIFO retries in place): its
        attempt number is SQS's receive count plus these."""
        self.discard: Message | None = None
        """Set when its handler succeeded and its offloaded body may go with it (the message
        as resolved, ``PayloadStore.should_discard``): the object is deleted once SQS has
        confirmed the delete in time (``SETTLED``, not remembered as unsure), and only then.
        Never set for a DLQ move or a copy that came through SNS."""
        self.successor: Lease | None = None
        """A newer delivery of its message that SQS made while this one still ran here (its
        visibility ran out): it is not run beside it; this run's decision is carried out
        with the newer receipt handle, the one SQS honours now (``Settler.execute``)."""
        self.waits = 0
        """Runs of this delivery that waited on an unreachable dependency (spend nothing)."""
        self.waiting_since: float | None = None
        """When it first waited (monotonic): a wait is bounded (``breaker.max_wait``)."""
        self._on_end = on_end

    @property
    def receipt_handle(self) -> str:
        return self.message.receipt_handle

    @property
    def attempt(self) -> int:
        """The number of the message's next (or current) attempt: its receive count plus
        its failures in place (``worker.runtime.rules``)."""
        return self.message.receive_count + self.failures

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def left(self, now: float | None = None) -> float:
        """Seconds until SQS makes the message visible again, as far as we know."""
        return self.expires_at - (time.monotonic() if now is None else now)

    # -- the heartbeat's side ---------------------------------------------------------------
    def wants_extension(self, now: float, interval: float) -> bool:
        if self.lost:
            return False
        if self.state is State.RUNNING:
            pass
        elif self.state is not State.SETTLING or (self.target is not None and self.sending):
            return False  # ended, or its visibility change is on its way and sets it itself
        return not self.extending and now - self.granted_at >= interval

    def extension_sent(self) -> None:
        self.extending = True

    def extension_done(self, sent_at: float, granted: bool) -> None:
        """An extension request sent at ``sent_at`` came back (``granted``) or failed."""
        self.extending = False
        if granted and self.live and sent_at > self.granted_at:
            self.granted_at = sent_at
            self.expires_at = sent_at + self.visibility

    # -- the processor's side ---------------------------------------------------------------
    def settle_delete(self) -> None:
        self._settle(None)

    def settle_visibility(self, seconds: float) -> None:
        self._settle(max(0, min(43_200, int(seconds))))

    def _settle(self, target: int | None) -> None:
        if self.state is not State.RUNNING:
            raise RuntimeError(f"lease of {self.message.message_id} settled twice ({self.state.value})")
        self.state = State.SETTLING
        self.target = target

    # -- the acker's side -------------------------------------------------------------------
    @property
    def ready_to_send(self) -> bool:
        if self.state is not State.SETTLING or self.sending:
            return False
        return self.target is None or not self.extending

    def confirmed(self) -> None:
        """SQS confirmed the settle request: the lease ends."""
        self._end(State.SETTLED if self.target is None else State.RELEASED)

    def lapsed(self) -> None:
        """The receipt handle no longer works: SQS will deliver the message again."""
        self._end(State.LAPSED)

    def superseded(self) -> None:
        """A newer delivery of the message took over its pending delete."""
        self._end(State.SUPERSEDED)

    def _end(self, state: State) -> None:
        if not self.live:
            return
        self.state = state
        self.sending = False
        self._on_end(self)


class Leases:
    """The live leases of one queue. A lease's end frees its slot (``on_end``)."""

    def __init__(self, on_end: Callable[[Lease], None]) -> None:
        self._live: dict[int, Lease] = {}
        self._on_end = on_end

    def open(self, message: Message, raw: dict[str, Any], granted_at: float, visibility: int) -> Lease:
        lease = Lease(message, raw, granted_at, visibility, self._ended)
        self._live[id(lease)] = lease
        return lease

    def _ended(self, lease: Lease) -> None:
        if self._live.pop(id(lease), None) is not None:
            self._on_end(lease)

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[Lease]:
        return list(self._live.values())
