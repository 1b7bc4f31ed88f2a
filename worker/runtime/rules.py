"""The outcome rule: what happens to a message after one run of its step chain.

One pure function, ``decide``, turns (the run's outcome, the message's own attempt number,
the queue's policy) into one ``Decision``; standard and FIFO queues, single and batch
handlers all settle by it, so the rule lives here and nowhere else.

=============  ====================================  =========================================
outcome        standard queue                        FIFO queue (the group waits in place)
=============  ====================================  =========================================
succeeded      ``DELETE``                            ``DELETE``
failed (d)     ``RETRY`` in d seconds; SQS's         ``WAIT`` d seconds and run it again in
               redrive moves it after                place; ``DEAD_LETTER`` (by the worker)
               maxReceiveCount deliveries            once its attempts reach maxReceiveCount
rejected       ``DEAD_LETTER`` at once (no DLQ:      ``DEAD_LETTER`` at once (no DLQ: ``WAIT``
               ``RETRY`` on the backoff)             on the backoff)
waiting (d)    ``WAIT`` d seconds, leased: a dependency of the worker's (S3, the idempotency
               store) is unreachable; the handler did not fail, so no attempt is spent
cancelled      ``RELEASE``: shutdown past the grace, visible again at once
abandoned      ``KEEP``: a plain-function thread still runs at the final deadline; the lease
               is left to lapse, never released while the thread runs
=============  ====================================  =========================================

An attempt is counted for a message only when a run failed *for that message*: a FIFO
follower held back behind a failing message, or a batch member that succeeded, is not.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["succeeded", "failed", "rejected", "waiting", "cancelled", "abandoned"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run of a message's step chain came to (``worker.runtime.processor``)."""

    kind: Kind
    visibility: int = 0
    """For ``failed`` and ``waiting``: seconds until the next attempt."""
    reason: str = ""


SUCCEEDED = Outcome("succeeded")
REPLAYED = Outcome("succeeded", 0, "replayed: an earlier run of its idempotency key completed")
SKIPPED = Outcome("succeeded", 0, "offloaded payload missing; skipped (payloads.ignore_missing)")
CANCELLED = Outcome("cancelled")
ABANDONED = Outcome("abandoned")


class Action(enum.Enum):
    DELETE = "delete"
    RETRY = "retry"
    """Visible again in ``Decision.delay`` seconds (ChangeMessageVisibility)."""
    DEAD_LETTER = "dead_letter"
    """Moved to the DLQ by the worker, then deleted."""
    RELEASE = "release"
    """Visible again at once."""
    WAIT = "wait"
    """Kept leased and run again here after ``Decision.delay`` seconds."""
    KEEP = "keep"
    """Left alone: the lease lapses by itself."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: int = 0
    last_try: bool = False
    """For ``RETRY``: this was the message's last attempt before SQS's redrive moves it."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A queue's retry policy, as the rule needs it."""

    fifo: bool
    max_receive_count: int | None
    """The redrive policy's maxReceiveCount; None: the queue has no DLQ."""
    backoff: Sequence[float] = (10.0, 60.0, 300.0)
    jitter: float = 0.0

    def backoff_for(self, attempt: int) -> int:
        """Seconds before attempt ``attempt + 1``: the schedule's entry for ``attempt`` (its
        last repeating), with up to ``jitter`` more."""
        schedule = self.backoff
        base = schedule[min(max(attempt, 1), len(schedule)) - 1]
        return round(base * (1 + random.uniform(0, self.jitter))) if self.jitter else round(base)

    def exhausted(self, attempt: int) -> bool:
        """``attempt`` was the message's last before the DLQ."""
        return self.max_receive_count is not None and attempt >= self.max_receive_count


def decide(outcome: Outcome, attempt: int, policy: Policy) -> Decision:
    """What happens to a message whose run came to ``outcome``; ``attempt`` is the number
    of that run among the message's attempts (SQS's receive count plus its failures in
    place)."""
    kind = outcome.kind
    if kind == "succeeded":
        return Decision(Action.DELETE)
    if kind == "waiting":
        return Decision(Action.WAIT, outcome.visibility)
    if kind == "cancelled":
        return Decision(Action.RELEASE)
    if kind == "abandoned":
        return Decision(Action.KEEP)
    has_dlq = policy.max_receive_count is not None
    if kind == "rejected":
        if has_dlq:
            return Decision(Action.DEAD_LETTER)
        delay = policy.backoff_for(attempt)
        return Decision(Action.WAIT if policy.fifo else Action.RETRY, delay)
    # failed
    if policy.fifo:
        if policy.exhausted(attempt):
            return Decision(Action.DEAD_LETTER)
        return Decision(Action.WAIT, outcome.visibility)
    return Decision(Action.RETRY, outcome.visibility, last_try=policy.exhausted(attempt))


def wait_for(waits: int, cap: float = 30.0) -> int:
    """Seconds before a message waiting on a dependency runs again, after ``waits`` waits:
    1, 2, 4, ... at most ``cap``."""
    return int(min(cap, 2 ** max(0, waits)))
