"""What every role of one queue shares, built once: ``QueueContext``.

The supervisor builds one per configured queue (``for_queue``); the testing kit and the
Lambda entry point build theirs with ``standalone``, so all three run messages through
the same processor and the same steps. A role's constructor takes the context plus its
own collaborators.

``Halt`` is the shutdown's explicit signal to running handlers: the task cancel that
interrupts an async handler at the grace carries no meaning by itself (a handler may
cancel its own inner tasks); ``Halt.grace_over`` says it was the shutdown.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.aws import AwsClient
from worker.messages.envelope import Message
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Route
from worker.messages.types import DEFAULT_RULES, TypeRules
from worker.observe.metrics import Metrics
from worker.runtime.counters import QueueCounters
from worker.runtime.rules import Policy
from worker.settings import QueueSettings, TypeSettings

if TYPE_CHECKING:
    from worker.messages.payload_store import PayloadStore
    from worker.observe.tracing import Tracing
    from worker.runtime.breaker import Breakers
    from worker.runtime.flow import TokenBucket
    from worker.runtime.idempotency import Idempotency


class Halt:
    """The shutdown, as running handlers see it: ``grace_over`` once ``shutdown_grace``
    ended (async handlers are cancelled then; their messages are released), ``final`` at
    ``shutdown_grace + shutdown_flush`` (a plain-function thread still running is left
    behind; its message reappears after its visibility timeout)."""

    def __init__(self) -> None:
        self.grace_over = False
        self._final: asyncio.Event | None = None

    @property
    def final(self) -> asyncio.Event:
        if self._final is None:
            self._final = asyncio.Event()
        return self._final

    def end_grace(self) -> None:
        self.grace_over = True

    def end(self) -> None:
        self.grace_over = True
        self.final.set()


@dataclass(slots=True)
class QueueContext:
    key: str
    """The queue's configuration key (log lines and metric labels)."""
    settings: QueueSettings
    registry: Registry
    policy: Policy
    executor: Executor
    metrics: Metrics
    counters: QueueCounters = field(default_factory=QueueCounters)
    resources: Resources = field(default_factory=Resources)
    payloads: PayloadStore | None = None
    tracing: Tracing | None = None
    idempotency: Idempotency | None = None
    group_metrics: bool = False
    """Also count outcomes per MessageGroupId (``health.group_metrics``)."""
    halt: Halt = field(default_factory=Halt)
    sqs: AwsClient | None = None
    """The queue's SQS client, counting this queue's requests (None without a queue)."""
    url: str = ""
    types: TypeRules = DEFAULT_RULES
    """Where this queue's messages carry their type (``QueueSettings.types``)."""
    breakers: Breakers | None = None
    """The process's circuit breakers (``worker.runtime.breaker``; None: none kept)."""
    start_rate: TokenBucket | None = None
    """The queue's rate (``QueueSettings.rate``), set by the limits step: the pollers
    receive no more than it lets start within about a second."""
    max_wait: float = 900.0
    """Seconds a message waits, leased, on a dependency before it is given back
    (``breaker.max_wait``)."""

    def route_of(self, message_type: str | None) -> Route | None:
        """The one place a message finds its handler (``route_for``)."""
        return route_for(self.registry, self.settings.types, message_type)

    @property
    def routes(self) -> list[Route]:
        """Every route a message of this queue can take: its types' and the default's."""
        routes = list(self.registry.routes.values())
        default = self.route_of(None)
        return routes if default is None or default in routes else [*routes, default]

    def type_label(self, message: Message) -> str:
        """The ``type`` label of metrics for ``message``: its type when a handler serves
        it, the default route's when the default handler does, else ``unknown`` (a label
        per unknown type would have no bound)."""
        if message.type is not None and self.registry.get(message.type) is not None:
            return message.type
        route = self.route_of(message.type)
        return route.message_type if route is not None else "unknown"

    @property
    def client(self) -> AwsClient:
        assert self.sqs is not None, "a role that calls SQS needs a context with a client"
        return self.sqs

    @classmethod
    def link(
        cls,
        sqs: AwsClient,
        key: str = "q",
        url: str = "url",
        counters: QueueCounters | None = None,
        metrics: Metrics | None = None,
        **settings: object,
    ) -> QueueContext:
        """A context for roles that talk to one queue, without a worker around them (tests,
        embedding): ``settings`` are ``QueueSettings`` fields."""
        queue_settings = QueueSettings(handlers=["<link>"], **settings)  # type: ignore[arg-type]
        ctx = cls.standalone(key, queue_settings, Registry({}))
        ctx.sqs, ctx.url = sqs, url
        ctx.counters = counters or QueueCounters()
        ctx.metrics = metrics or Metrics()
        return ctx

    @classmethod
    def standalone(
        cls,
        key: str,
        settings: QueueSettings,
        registry: Registry,
        *,
        fifo: bool = False,
        max_receive_count: int | None = None,
        resources: Resources | None = None,
        executor: Executor | None = None,
        type_attribute: str = "type",
    ) -> QueueContext:
        """A context without a queue behind it (the testing kit, the Lambda entry point)."""
        return cls(
            key,
            settings,
            registry,
            policy_of(settings, fifo, max_receive_count),
            executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="handler"),
            Metrics(),
            resources=resources or Resources(),
            types=rules_of(settings, type_attribute),
        )


def route_for(registry: Registry, types: TypeSettings, message_type: str | None) -> Route | None:
    """A message's route: its type's; else, for a message without a type (or of a type no
    handler serves, when the queue says so), the default handler: the route of
    ``types.default``, else a router's ``@router.default()``."""
    route = registry.get(message_type)
    if route is not None:
        return route
    if message_type is not None and types.unknown != "default" and not registry.default_takes_unknown:
        return None
    return registry.get(types.default) if types.default else registry.default


def rules_of(settings: QueueSettings, type_attribute: str) -> TypeRules:
    """A queue's type rules: its ``types`` settings, the attribute defaulting to the
    worker's ``message_type_attribute``."""
    types = settings.types
    return TypeRules(types.attribute or type_attribute, tuple(types.sources), types.field)


def policy_of(settings: QueueSettings, fifo: bool, max_receive_count: int | None) -> Policy:
    return Policy(fifo, max_receive_count, tuple(settings.retry_backoff), settings.retry_jitter)
