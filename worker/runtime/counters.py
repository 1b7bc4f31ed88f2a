"""Per-queue counters of this process (the periodic ``queue_summary`` log event reads them).

Not Prometheus metrics (those are ``worker.observe.metrics``) and not the queue's own
statistics as SQS reports them (``worker.ops.queue_stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class QueueCounters:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    """Handler raised, timed out, or the message was rejected (includes ``rejected``)."""
    rejected: int = 0
    """Permanent failures: unknown type, bad body, PermanentFailure."""
    waiting: int = 0
    """Runs that waited on an unreachable dependency (S3, the idempotency store)."""
    released: int = 0
    """Made visible again without a handler outcome (shutdown)."""
    dead_lettered: int = 0
    """Moved to the DLQ by the worker (rejected, or a FIFO message out of attempts)."""
    lapsed: int = 0
    """Leases whose receipt handle stopped working before they were settled."""
    overdue: int = 0
    """Leases whose visibility ran out while live (the heartbeat did not keep up)."""
    extended: int = 0
    """Visibility extensions granted."""
    delete_failed: int = 0
    redelivered_running: int = 0
    """Messages delivered again while still running here: not run beside it; the earlier
    run's outcome was settled with the newer receipt handle."""
    redelivered_deleted: int = 0
    """Messages delivered again while their delete was pending here: deleted, not run again."""
    receives: int = 0
    empty_receives: int = 0
    poller_restarts: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
