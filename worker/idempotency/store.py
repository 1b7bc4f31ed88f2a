"""The idempotency record and what a store guarantees.

A record is keyed by ``<queue>:<idempotency key>`` and is either

* ``in_progress``: a handler run holds it (its ``owner`` token) until ``lease_expires``
  (epoch seconds), which follows the message's lease: while the worker lives it is moved
  on as the heartbeat extends the message's visibility; when the worker dies it runs out
  about when SQS makes the message visible again; or
* ``completed``: the handler succeeded (``result``: its return value as JSON, or None)
  and a redelivery settles without running it, until ``expires``.

``claim`` writes an in-progress record unless a live one holds the key. A record no
longer holds it when it has expired, when it is in progress past ``lease_expires``, or when
it is in progress for the *same message* at an earlier delivery and its lease, without
the skew allowed for clocks, has run out (SQS delivers a message again after its
visibility ran out; a standard queue's rare concurrent duplicate is held off).
Every other write is conditional on the owner, so a run that lost its record (taken over)
cannot overwrite the new holder's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["in_progress", "completed"]
IN_PROGRESS: Status = "in_progress"
COMPLETED: Status = "completed"
LEASE_SKEW = 1.0
"""Seconds an in-progress record outlives its lease (clocks of replicas and SQS differ)."""
SWEEP_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    status: Status
    owner: str
    message_id: str
    receive_count: int
    lease_expires: float
    expires: float
    result: str | None = None

    def holds(self, claimant: Record, now: float) -> bool:
        """Whether this record keeps ``claimant`` (an in-progress claim) from taking the key."""
        if self.expires <= now:
            return False
        if self.status == COMPLETED:
            return True
        if self.lease_expires <= now:
            return False
        # The same message at a later delivery, once the lease (without the skew) ran out.
        later = self.message_id == claimant.message_id and self.receive_count < claimant.receive_count
        return not (later and self.lease_expires - LEASE_SKEW <= now)


class IdempotencyStore(Protocol):
    async def claim(self, record: Record, now: float) -> Record | None:
        """Write ``record`` (in progress) unless a live record holds its key: None when
        written, else the holder."""

    async def extend(self, key: str, owner: str, lease_expires: float) -> bool:
        """Move an in-progress record's ``lease_expires`` on; False when ``owner`` no
        longer holds it."""

    async def complete(self, key: str, owner: str, result: str | None, expires: float) -> bool:
        """Mark the record completed; False when ``owner`` no longer holds it. A record the
        owner already completed (in the handler's own transaction) is left as it is."""

    async def release(self, key: str, owner: str) -> None:
        """Remove the record if ``owner`` holds it in progress (the handler failed: it may
        run again). A record the handler completed in its own transaction stays."""

    async def close(self) -> None: ...


class MemoryStore:
    """Records in this process only: for tests and a single process. Replicas, and a
    restarted process, do not see each other's records (use DynamoDB for that)."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self._lock = asyncio.Lock()
        self._swept = 0.0

    async def claim(self, record: Record, now: float) -> Record | None:
        async with self._lock:
            held = self.records.get(record.key)
            if held is not None and held.holds(record, now):
                return held
            self.records[record.key] = record
            if len(self.records) > 100_000 and now - self._swept >= SWEEP_EVERY:
                self._swept = now
                self._expire(now)
            return None

    def _expire(self, now: float) -> None:
        for key in [k for k, r in self.records.items() if r.expires <= now]:
            del self.records[key]

    async def extend(self, key: str, owner: str, lease_expires: float) -> bool:
        held = self.records.get(key)
        if held is None or held.owner != owner or held.status != IN_PROGRESS:
            return False
        self.records[key] = dataclasses.replace(held, lease_expires=lease_expires)
        return True

    async def complete(self, key: str, owner: str, result: str | None, expires: float) -> bool:
        held = self.records.get(key)
        if held is None or held.owner != owner:
            return False
        if held.status == IN_PROGRESS:  # else completed in the handler's own transaction: kept
            self.records[key] = dataclasses.replace(held, status=COMPLETED, result=result, expires=expires)
        return True

    async def release(self, key: str, owner: str) -> None:
        held = self.records.get(key)
        if held is not None and held.owner == owner and held.status == IN_PROGRESS:
            del self.records[key]

    async def close(self) -> None:
        return None
