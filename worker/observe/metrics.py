"""Prometheus metrics, on a registry of the worker's own (served at /metrics).

Message types of unknown messages are reported as ``unknown``, so that bad input cannot
blow up label cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NS = "sqs_worker"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        qt = ["queue", "type"]
        self.received = Counter("messages_received", "Messages received", qt, namespace=NS, registry=r)
        self.succeeded = Counter("messages_succeeded", "Handlers that returned", qt, namespace=NS, registry=r)
        self.failed = Counter(
            "messages_failed",
            "Messages whose handling failed, by reason (error, timeout, retry_requested, rejected)",
            [*qt, "reason"],
            namespace=NS,
            registry=r,
        )
        self.retried = Counter(
            "messages_retried", "Failed messages left for another attempt", qt, namespace=NS, registry=r
        )
        self.dead_lettered = Counter(
            "messages_dead_lettered",
            "Messages moved to the DLQ by the worker, or failed on their last attempt before redrive",
            qt,
            namespace=NS,
            registry=r,
        )
        self.duration = Histogram(
            "handler_duration_seconds",
            "Handler run time",
            qt,
            buckets=DURATION_BUCKETS,
            namespace=NS,
            registry=r,
        )
        self.in_flight = Gauge(
            "in_flight", "Messages received and not settled", ["queue"], namespace=NS, registry=r
        )
        self.free_slots = Gauge(
            "free_slots",
            "Slots free for receiving (max_in_flight minus slots taken)",
            ["queue"],
            namespace=NS,
            registry=r,
        )
        self.extensions = Counter(
            "visibility_extensions", "Visibility extensions granted", ["queue"], namespace=NS, registry=r
        )
        self.api_calls = Counter(
            "aws_api_calls",
            "AWS API calls by operation and outcome",
            ["operation", "outcome"],
            namespace=NS,
            registry=r,
        )
        self.receive_latency = Histogram(
            "receive_latency_seconds",
            "ReceiveMessage round trip (long polls included)",
            ["queue"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30),
            namespace=NS,
            registry=r,
        )
        self.released = Counter(
            "messages_released",
            "Messages made visible again without a handler outcome (shutdown)",
            ["queue"],
            namespace=NS,
            registry=r,
        )
        self.delete_failed = Counter(
            "delete_failed",
            "Deletes SQS refused for good (receipt handle expired): the message will run again",
            ["queue"],
            namespace=NS,
            registry=r,
        )
        self.lease_overdue = Counter(
            "lease_overdue",
            "Leases whose visibility ran out before an extension or settle (should stay 0)",
            ["queue"],
            namespace=NS,
            registry=r,
        )
        self.tasks = Gauge("asyncio_tasks", "asyncio tasks alive in the worker", namespace=NS, registry=r)
        self.poller_restarts = Counter(
            "poller_restarts",
            "Pollers restarted after an unexpected error",
            ["queue"],
            namespace=NS,
            registry=r,
        )

    def api_call(self, operation: str, outcome: str) -> None:
        self.api_calls.labels(operation, outcome).inc()
