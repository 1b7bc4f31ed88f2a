"""Prometheus metrics, on a registry of the worker's own (served at /metrics).

Message types of unknown messages are reported as ``unknown``, so that bad input cannot
blow up label cardinality.

The registry also carries the process (``process_*``: CPU, memory, open files), platform
(``python_info``) and garbage-collector (``python_gc_*``) collectors. ``_created`` series
are switched off (``disable_created_metrics``, which is process-wide: it applies to every
registry in the process, handler code's included). ``init_queue`` creates every series of
a queue at 0 at start-up, so dashboards and ``rate()``/``increase()`` alerts see a series
before its first event: per message type the queue routes, and for ``unknown`` the series
an unknown message can reach (received, rejected, retried, dead-lettered, duration).
``group_messages`` (per message group; on with ``health.group_metrics``) has no series
until a group's first outcome: its groups are not known in advance.

``NullMetrics`` is what ``worker run`` uses when the health server is off: nobody can read
the metrics then, so every series is a no-op and prometheus_client is not even imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

NS = "sqs_worker"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds to an hour: a worker keeping up is at the low end, a backlog at the high one."""
UNKNOWN = "unknown"
"""The type label of messages whose type no handler serves (one value, whatever they say)."""
FAILURE_REASONS = ("error", "timeout", "retry_requested", "rejected")
RUNTIME_OPERATIONS = (
    "receive_message",
    "delete_message_batch",
    "change_message_visibility_batch",
    "send_message",
)
"""The SQS calls the runtime makes while consuming (their ``ok`` series start at 0)."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        self._api_children: dict[tuple[str, str], Any] = {}
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped upstream)
        r = self.registry = registry or CollectorRegistry()
        if registry is None:  # a registry given is used as it is (it may have them already)
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
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
        self.group_messages = Counter(
            "group_messages",
            "Handler outcomes (succeeded, failed, rejected) of messages with a MessageGroupId, per "
            "group: fair queues' tenants, FIFO groups (only with health.group_metrics)",
            ["queue", "group", "outcome"],
            namespace=NS,
            registry=r,
        )
        self.replayed = Counter(
            "messages_replayed",
            "Messages of idempotent handlers settled without running: an earlier run of their key completed",
            qt,
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
        self.lag = Histogram(
            "message_lag_seconds",
            "End-to-end lag: seconds from the message's SentTimestamp to its handler's start "
            "(once per delivery; negative clock skew counts as 0)",
            qt,
            buckets=LAG_BUCKETS,
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
        self.in_flight_limit = Gauge(
            "in_flight_limit",
            "The in-flight limit now (adaptive or fixed)",
            ["queue"],
            namespace=NS,
            registry=r,
        )
        self.pollers = Gauge("pollers", "Pollers running now", ["queue"], namespace=NS, registry=r)
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
        self.requests_by_queue = Counter(
            "queue_requests",
            "SQS requests the worker made for a queue, by operation (each attempt; its DLQ moves and "
            "start-up lookups included)",
            ["queue", "operation"],
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
        self.waiting = Counter(
            "messages_waiting",
            "Runs that waited, leased, on a dependency of the worker's (S3 for an offloaded "
            "body, the idempotency store) instead of failing: no attempt spent",
            ["queue", "dependency"],
            namespace=NS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "breaker_state",
            "A dependency's circuit breaker: 0 closed, 1 open (its routes' messages wait, "
            "leased), 2 half-open (one probe message runs)",
            ["dependency"],
            namespace=NS,
            registry=r,
        )
        self.breaker_transitions = Counter(
            "breaker_transitions",
            "Circuit breaker transitions, by the state entered",
            ["dependency", "state"],
            namespace=NS,
            registry=r,
        )
        self.redelivered_deleted = Counter(
            "redelivered_while_deleting",
            "Messages SQS delivered again while their delete was still pending here (retried "
            "through an outage): deleted with the new receipt handle, the handler not run again",
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
        child = self._api_children.get((operation, outcome))
        if child is None:
            child = self._api_children[(operation, outcome)] = self.api_calls.labels(operation, outcome)
        child.inc()

    def queue_requests(self, queue: str) -> Callable[[str], None] | None:
        """What counts ``queue``'s SQS requests: called with the operation of each request
        (``AwsClient.counting``). Its children are resolved once per operation."""
        children: dict[str, Any] = {}
        counter = self.requests_by_queue

        def record(operation: str) -> None:
            child = children.get(operation)
            if child is None:
                child = children[operation] = counter.labels(queue, operation)
            child.inc()

        return record

    def init_queue(self, queue: str, types: Iterable[str]) -> None:
        """Create every series of ``queue`` at 0: per message type in ``types`` (and
        ``unknown`` where it can occur), per failure reason. ``queue`` is the label the
        runtime records with (the queue's configuration key)."""
        for child in (
            self.in_flight,
            self.free_slots,
            self.in_flight_limit,
            self.pollers,
            self.extensions,
            self.receive_latency,
            self.released,
            self.delete_failed,
            self.lease_overdue,
            self.poller_restarts,
        ):
            child.labels(queue)
        for label in types:
            for metric in (
                self.received,
                self.succeeded,
                self.replayed,
                self.retried,
                self.dead_lettered,
                self.duration,
                self.lag,
            ):
                metric.labels(queue, label)
            for reason in FAILURE_REASONS:
                self.failed.labels(queue, label, reason)
        # An unknown type is received and rejected, never run: only what can happen to it.
        for metric in (self.received, self.retried, self.dead_lettered, self.duration):
            metric.labels(queue, UNKNOWN)
        self.failed.labels(queue, UNKNOWN, "rejected")
        for operation in RUNTIME_OPERATIONS:
            self.api_calls.labels(operation, "ok")
            self.requests_by_queue.labels(queue, operation)


class _Null:
    """A metric, or a labelled child of one, that records nothing."""

    def labels(self, *args: object, **kwargs: object) -> _Null:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_NULL = _Null()


class NullMetrics(Metrics):
    """Every metric of ``Metrics``, recording nothing (for a worker whose metrics nobody
    can scrape: no health server). prometheus_client is never imported."""

    def __init__(self) -> None:  # no registry, no collectors
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _NULL

    def api_call(self, operation: str, outcome: str) -> None:
        pass

    def queue_requests(self, queue: str) -> Callable[[str], None] | None:
        return None  # AwsClient.counting(None): no view, not even a call per request

    def init_queue(self, queue: str, types: Iterable[str]) -> None:
        pass
