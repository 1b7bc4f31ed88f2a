"""The closed set of exceptions a handler may raise to steer what happens to its message.

A handler that returns normally has its message deleted. Any other exception is a
transient failure: the message becomes visible again after the queue's retry backoff,
and after the queue's ``maxReceiveCount`` SQS moves it to the dead-letter queue.
"""

from __future__ import annotations

REASON_ATTRIBUTE = "worker.failure_reason"
"""On a message the worker moved to a DLQ itself: why (the rejection's reason)."""
ORIGINAL_ID_ATTRIBUTE = "worker.original_message_id"
"""On a message the worker moved to a DLQ itself: the message id it had in its queue."""


class Retry(Exception):
    """Retry this message after ``delay`` seconds (0-43200) instead of the backoff schedule."""

    def __init__(self, delay: float, reason: str = "") -> None:
        if not 0 <= delay <= 43_200:
            raise ValueError("Retry delay must be between 0 and 43200 seconds")
        super().__init__(reason or f"retry requested in {delay:g}s")
        self.delay = delay
        self.reason = reason


class PermanentFailure(Exception):
    """This message can never succeed: make it visible at once so the redrive policy
    moves it to the dead-letter queue without waiting out the backoff schedule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DependencyUnavailable(Exception):
    """Something the message's run depends on (S3 for an offloaded body, the idempotency
    store, a dependency a handler declares) cannot be reached: not the message's failure.
    The message waits, leased, and runs again when it is back; none of its attempts is
    spent. Raised by a handler, it opens the dependency's circuit breaker at once, for
    ``retry_after`` seconds when given (docs/flow-control.md)."""

    def __init__(self, dependency: str, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(f"{dependency} unavailable: {detail}" if detail else f"{dependency} unavailable")
        self.dependency = dependency
        self.detail = detail
        self.retry_after = retry_after
