"""Idempotent handlers: a handler's effects once per message key, whatever SQS redelivers.

For a handler registered with ``idempotent=True`` each run first claims the message's
record in the store (``worker.idempotency``):

* the **key** is the message's ``idempotency-key`` attribute (the producer sets one on
  every message, or the one it was given), else a FIFO message's deduplication id, else
  its message id; records are per queue (``<queue>:<key>``), so the copies a topic fans
  out to several queues each run once;
* claimed: the handler runs; success marks the record completed (with the handler's
  return value as JSON, when it has one) for ``idempotency.expires_after``; failure,
  rejection or a shutdown cancel removes it, so the next attempt runs;
* completed by an earlier run: the handler does not run; the message settles as
  succeeded, and middleware gets the stored result from ``call_next()``
  (``worker.replayed()`` is True inside the chain);
* in progress here: the copy waits for that run (no extra delivery);
* in progress elsewhere (a duplicate of a message another run is handling): the message
  is tried again when that run's record would run out (``Retry``), by then completed or
  free; on its last delivery before the DLQ it waits here instead (its lease kept).

The in-progress record is tied to the message's lease: it runs out when the lease would
(plus ``SKEW``), and while the handler runs, the ``Keeper`` moves it on as the heartbeat
extends the lease. A record whose worker died is taken over once that time has passed, or
at once by the same message's next delivery (SQS only delivers it again after its
visibility ran out), never while its lease lives.

The window that remains is SQS's own: a handler that finished its effect and was killed
before the record was marked completed runs again.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic_core import to_jsonable_python

from worker.idempotency.store import COMPLETED, IN_PROGRESS, LEASE_SKEW, IdempotencyStore, Record
from worker.messages.envelope import IDEMPOTENCY_KEY_ATTRIBUTE, Message
from worker.messages.outcomes import Retry
from worker.messages.records import IdempotencyRecord
from worker.messages.routing import set_replayed
from worker.observe.logs import get_logger
from worker.runtime.lease import Lease

SKEW = LEASE_SKEW
MAX_RESULT = 350_000
"""Largest stored result (bytes of JSON; DynamoDB items hold 400 KB)."""
KEEP_EVERY = 1.0
log = get_logger()


def key_of(message: Message) -> str:
    return message.attributes.get(IDEMPOTENCY_KEY_ATTRIBUTE) or message.dedup_id or message.message_id


@dataclass(slots=True)
class Claim:
    key: str
    owner: str
    lease: Lease
    lease_expires: float
    done: Record | None = None
    """The completed record of an earlier run: a replay."""
    value: Any = None
    """What the handler returned (stored with the completed record)."""
    kept: bool = True
    """The keeper moves its record on (stops when the record was completed or taken over)."""
    in_transaction: bool = False
    """The handler asked for the completion item of its own transaction."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this run's record is completed, released or left (copies in this process
    wait for it instead of being given back)."""

    @property
    def replay(self) -> bool:
        return self.done is not None

    def record(self, idempotency: Idempotency) -> IdempotencyRecord:
        """What the handler may take to complete this claim in its own transaction."""
        return IdempotencyRecord(self.key, self.owner, idempotency.completion_for(self))

    def result(self) -> Any:
        """The earlier run's result (JSON-decoded), or None."""
        if self.done is None or self.done.result is None:
            return None
        return orjson.loads(self.done.result)


class Idempotency:
    """Claims, completes and releases records for one queue, and keeps the in-progress
    ones alive with their leases (``start``/``stop``)."""

    def __init__(
        self,
        store: IdempotencyStore,
        queue: str,
        expires_after: float,
        refresh_before: float,
        max_receive_count: int | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        """The queue's name: records are ``<queue name>:<key>``."""
        self.max_receive_count = max_receive_count
        """The queue's redrive maxReceiveCount (None: no DLQ)."""
        self.expires_after = expires_after
        self.refresh_before = refresh_before
        """Seconds before an in-progress record runs out when the keeper moves it on (half
        the visibility timeout: an extension of the lease has happened by then)."""
        self._held: dict[str, Claim] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned_result = False

    async def begin(self, lease: Lease, attempt: int | None = None) -> Claim:
        """Claim ``lease``'s message. When a run of this process holds its key, wait for it
        to finish (no extra delivery); when a run elsewhere does, raise ``Retry`` until its
        record would run out, or, on its last attempt before the DLQ, wait here for it.
        ``attempt``: the attempt number (a FIFO message retried in place counts its runs;
        default: SQS's receive count)."""
        message = lease.message
        key = f"{self.queue}:{key_of(message)}"
        while True:
            local = self._held.get(key)
            if local is not None:
                await local.finished.wait()  # a run here holds it: then look again
                continue
            now = time.time()
            claim = Claim(key, uuid.uuid4().hex, lease, now + max(0.0, lease.left()) + SKEW)
            self._held[key] = claim  # copies arriving meanwhile wait for this claim
            record = Record(
                key,
                IN_PROGRESS,
                claim.owner,
                message.message_id,
                message.receive_count,
                claim.lease_expires,
                now + self.expires_after,
            )
            try:
                holder = await self.store.claim(record, now)
            except BaseException:
                self._forget(claim)
                raise
            if holder is None or holder.owner == claim.owner:  # ours: a retried write that took
                return claim
            self._forget(claim)
            if holder.status == COMPLETED:
                claim.done = holder
                return claim
            if not self._near_dlq(attempt or message.receive_count) or not lease.live:
                break
            # Given back, this copy could reach the DLQ without having run: wait here for
            # the holder (the heartbeat keeps this lease), then claim again.
            await asyncio.sleep(min(5.0, max(0.5, (holder.lease_expires - now) / 2)))
        wait = min(43_200, max(1, math.ceil(holder.lease_expires - now)))
        raise Retry(
            wait,
            f"idempotency key {key_of(message)!r} is being handled by another run "
            f"(message {holder.message_id}); tried again in {wait}s",
        )

    def _near_dlq(self, attempt: int) -> bool:
        """This is the message's last attempt: given back, SQS (or, for a FIFO message
        retried in place, the worker) moves it to the DLQ."""
        limit = self.max_receive_count
        return limit is not None and attempt >= limit

    def completion_for(self, claim: Claim) -> Callable[[Any], dict[str, Any]] | None:
        """A store with transactions (DynamoDB) builds the completion item a handler puts
        into its own ``TransactWriteItems``; other stores have none."""
        item = getattr(self.store, "completion_item", None)
        if item is None:
            return None

        def completion(result: Any = None) -> dict[str, Any]:
            claim.in_transaction = True
            return dict(item(claim.key, claim.owner, self._encode(result), time.time() + self.expires_after))

        return completion

    @staticmethod
    def mark(claim: Claim | None) -> None:
        """Set what ``replayed()`` says for the chain about to run."""
        set_replayed(claim is not None and claim.replay)

    async def succeeded(self, claim: Claim, result: Any) -> None:
        """The handler returned ``result``: its record is completed (never raises; a record
        that cannot be completed is logged, and a redelivery would run the handler again)."""
        if claim.replay:
            return
        stored = self._encode(result)
        try:
            ok = await self.store.complete(claim.key, claim.owner, stored, time.time() + self.expires_after)
        except Exception as exc:
            log.warning(
                "idempotency_complete_failed", key=claim.key, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            return
        finally:
            self._forget(claim)  # copies waiting here claim again: they find it completed
        if not ok:
            log.warning("idempotency_record_lost", key=claim.key, detail="taken over before completion")

    async def failed(self, claim: Claim) -> None:
        """The handler failed (or was cancelled): the record goes, the next attempt runs."""
        if claim.replay:
            return
        try:
            await self.store.release(claim.key, claim.owner)
        except Exception as exc:
            # It runs out with its lease; the next delivery of the message takes it over.
            log.warning(
                "idempotency_release_failed", key=claim.key, error=f"{type(exc).__name__}: {exc}"[:300]
            )
        finally:
            self._forget(claim)

    def abandoned(self, claim: Claim) -> None:
        """A plain-function handler still runs at the final deadline: the record is left to
        run out with the lease (nothing keeps it any more)."""
        self._forget(claim)

    def _forget(self, claim: Claim) -> None:
        if self._held.get(claim.key) is claim:
            del self._held[claim.key]
        claim.finished.set()

    def _encode(self, result: Any) -> str | None:
        if result is None:
            return None
        try:
            text = orjson.dumps(to_jsonable_python(result)).decode()
        except Exception as exc:
            why = f"not JSON-serialisable ({type(exc).__name__})"
        else:
            if len(text) <= MAX_RESULT:
                return text
            why = f"{len(text):,} bytes of JSON, over {MAX_RESULT:,}"
        if not self._warned_result:
            self._warned_result = True
            log.warning("idempotency_result_not_stored", queue=self.queue, reason=why)
        return None

    # -- the keeper -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name=f"idempotency-keeper-{self.queue}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(KEEP_EVERY)
            await self.keep_due()

    async def keep_due(self) -> None:
        """Move on the in-progress records about to run out whose leases were extended."""
        now = time.time()
        due = []
        for claim in self._held.values():
            if not claim.kept or not claim.lease.live or claim.lease_expires - now > self.refresh_before:
                continue
            until = now + max(0.0, claim.lease.left()) + SKEW
            if until > claim.lease_expires + KEEP_EVERY:
                due.append((claim, until))
        if due:
            await asyncio.gather(*(self._extend(claim, until) for claim, until in due))

    async def _extend(self, claim: Claim, until: float) -> None:
        try:
            ok = await self.store.extend(claim.key, claim.owner, until)
        except Exception as exc:
            log.warning(
                "idempotency_extend_failed", key=claim.key, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            return
        if ok:
            claim.lease_expires = until
            return
        # Copies here still wait for the run to end (it stays in _held); only the keeping stops.
        claim.kept = False
        if not claim.in_transaction:  # else: completed by the handler's own transaction
            log.warning("idempotency_record_lost", key=claim.key, detail="taken over while the handler ran")
