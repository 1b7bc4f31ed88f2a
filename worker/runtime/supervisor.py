"""The worker's lifecycle: start-up, main loop, two-stage shutdown.

``Supervisor.run()`` resolves every configured queue (a missing queue or a denied call is a
clear error before anything is received), starts one ``Consumer`` per queue and a periodic
summary, then waits for ``request_stop()``. Shutdown stops polling at once, gives running
handlers ``shutdown_grace`` seconds while their visibility keeps being extended, cancels
what is left (those messages become visible again at once), then flushes pending deletes
and visibility changes. Signals are not handled here: the CLI wires them to
``request_stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from worker.aws import (
    MISSING_QUEUE,
    AwsClient,
    AwsNotFound,
    AwsRefused,
    AwsUnreachable,
    error_code,
    is_transient,
    sqs_client,
    suggest_queue,
)
from worker.errors import ConfigError
from worker.idempotency.store import IdempotencyStore, MemoryStore
from worker.messages.payload_store import PayloadStore
from worker.messages.resources import Resources
from worker.messages.routing import DEFAULT_ROUTE, Registry
from worker.observe import tracing_switch
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.breaker import BreakerPolicy, Breakers
from worker.runtime.consumer import Consumer
from worker.runtime.context import QueueContext, policy_of, rules_of
from worker.runtime.hooks import run_hooks
from worker.runtime.idempotency import Idempotency
from worker.runtime.target import QueueTarget
from worker.settings import QueueSettings, WorkerSettings

if TYPE_CHECKING:
    from worker.observe.health import HealthServer
    from worker.observe.tracing import Tracing

log = get_logger()


async def resolve_queue(
    sqs: AwsClient, key: str, settings: QueueSettings, retry_for: float, where: str = ""
) -> QueueTarget:
    """``where``: the region and endpoint the client calls, for the error of a missing queue."""
    name = settings.queue_name(key)
    try:
        url = settings.url
        if url is None:
            url = str((await sqs.call("get_queue_url", retry_for=retry_for, QueueName=name))["QueueUrl"])
        attributes: dict[str, Any] = (
            await sqs.call("get_queue_attributes", retry_for=retry_for, QueueUrl=url, AttributeNames=["All"])
        ).get("Attributes", {})
    except Exception as exc:
        error = _start_error(exc, f"queues.{key}: queue {name!r}", retry_for)
        if isinstance(error, AwsNotFound):
            hint = await suggest_queue(sqs, name)
            error = AwsNotFound(f"{error} ({where}){hint}" if where else f"{error}{hint}")
        raise error from None
    redrive = json.loads(attributes["RedrivePolicy"]) if attributes.get("RedrivePolicy") else {}
    fifo = attributes.get("FifoQueue") == "true"
    dlq_arn = redrive.get("deadLetterTargetArn")
    dlq_url = await _dead_letter_url(sqs, key, dlq_arn, retry_for) if dlq_arn else None
    target = QueueTarget(
        key=key,
        name=name,
        url=url,
        fifo=fifo,
        max_receive_count=int(redrive["maxReceiveCount"]) if "maxReceiveCount" in redrive else None,
        dead_letter_arn=dlq_arn,
        dead_letter_url=dlq_url,
    )
    if target.max_receive_count is None:
        log.warning(
            "queue_without_dlq",
            queue=key,
            detail="no redrive policy: failed and rejected messages are retried on the backoff "
            "schedule (its last delay repeating) until the queue's retention period drops them",
        )
    return target


def _start_error(exc: Exception, what: str, retry_for: float) -> Exception:
    """The start-up failure ``exc`` means, by kind (exit codes 3, 5, 4); anything else as is."""
    if is_transient(exc):  # throttling and 5xx included: still failing at the time limit
        return AwsUnreachable(f"cannot reach SQS (gave up after aws.startup_timeout {retry_for:g}s): {exc}")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in MISSING_QUEUE:
            return AwsNotFound(f"{what} does not exist")
        return AwsRefused(f"{what}: {code}: {exc}")
    return exc


async def _dead_letter_url(sqs: AwsClient, key: str, arn: str, retry_for: float) -> str:
    """The DLQ's URL from its ARN (``arn:aws:sqs:region:account:name``): the worker moves
    rejected messages there itself."""
    parts = arn.split(":")
    try:
        response = await sqs.call(
            "get_queue_url", retry_for=retry_for, QueueName=parts[-1], QueueOwnerAWSAccountId=parts[4]
        )
    except Exception as exc:
        raise _start_error(exc, f"queues.{key}: its dead-letter queue {arn}", retry_for) from None
    return str(response["QueueUrl"])


async def resolve_queues(settings: WorkerSettings, clients: dict[str, AwsClient]) -> list[QueueTarget]:
    """Every configured queue (``clients``: each one's SQS client), within
    ``aws.startup_timeout`` in all. All at once; each result is taken in configuration
    order, so a failure is the one a resolution one queue after another would report."""
    timeout = settings.aws.startup_timeout
    tasks = [
        asyncio.create_task(resolve_queue(clients[key], key, q, timeout, _where(settings, key)))
        for key, q in settings.queues.items()
    ]
    try:
        async with asyncio.timeout(timeout):
            return [await task for task in tasks]
    except TimeoutError:
        raise AwsUnreachable(f"cannot reach SQS (gave up after aws.startup_timeout {timeout:g}s)") from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _where(settings: WorkerSettings, key: str) -> str:
    """Where ``key``'s queue is looked for: its region and endpoint."""
    aws = settings.aws
    region = settings.queues[key].region_in(aws) or aws.resolved_region() or "no region"
    endpoint = aws.resolved_endpoint("sqs")
    return f"region {region}, endpoint {endpoint}" if endpoint else f"region {region}"


class Supervisor:
    def __init__(
        self,
        settings: WorkerSettings,
        registries: dict[str, Registry],
        metrics: Metrics | None = None,
        tracing: Tracing | Literal["environment"] | None = "environment",
    ) -> None:
        self.settings = settings
        self._tracing_choice = tracing
        """A ``Tracing`` to use, None for none, or "environment": as the OTEL_* variables say."""
        self.tracing: Tracing | None = None
        self.registries = registries
        self.metrics = metrics or Metrics()
        self.health: HealthServer | None = None
        self._started_at: float | None = None
        self._clients: dict[str | None, AwsClient] = {}
        self.consumers: list[Consumer] = []
        self.resources = Resources()
        b = settings.breaker
        self.breakers = Breakers(
            BreakerPolicy(b.failures, b.failure_ratio, b.window, b.min_calls, b.open_for, b.max_open_for),
            self.metrics,
        )
        """One circuit breaker per dependency, shared by every queue of the process."""
        """What start-up hooks provided; handlers receive it by parameter class."""
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.stopping = False
        self._last_summary: dict[str, dict[str, int]] = {}

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        self.stopping = True  # /readyz fails from now on
        self._stop.set()

    def readiness(self, window: float) -> tuple[bool, dict[str, object]]:
        now = time.monotonic()
        queues: dict[str, object] = {}
        ready = self.started.is_set() and not self.stopping
        for c in self.consumers:
            last = c.last_receive_ok or self._started_at or now
            age = round(now - last, 1)
            # Every slot taken means busy, not stalled: no receive can start until one frees.
            ok = c.pollers_alive > 0 and (age <= window or c.busy)
            ready = ready and ok
            queues[c.target.key] = {
                "ready": ok,
                "pollers": c.pollers_alive,
                "last_receive_age": age,
                "busy": c.busy,
            }
        return ready, {"ready": ready, "stopping": self.stopping, "queues": queues}

    def update_gauges(self) -> None:
        self.metrics.tasks.set(len(asyncio.all_tasks()))
        for c in self.consumers:
            self.metrics.in_flight.labels(c.target.key).set(c.in_flight)
            self.metrics.free_slots.labels(c.target.key).set(c.slots.free)

    async def run(self) -> None:
        s = self.settings
        check_idempotency(self.settings, self.registries)
        self.tracing = self._start_tracing()
        executor = ThreadPoolExecutor(max_workers=s.thread_pool_size, thread_name_prefix="handler")
        try:
            if s.health.enabled:
                from worker.observe.health import HealthServer  # aiohttp's server: only when on

                self.health = HealthServer(self, s.health)
                await self.health.start()
                log.info("health_server_started", host=s.health.host, port=self.health.port)
            async with (
                contextlib.AsyncExitStack() as clients,
                PayloadStore.connect(s.aws, s.payloads) as payloads,  # S3 opened on first use
                open_store(s) as store,
            ):
                # One SQS client per region the queues live in (most configurations: one).
                regions: dict[str | None, list[str]] = {}
                for key, q in s.queues.items():
                    regions.setdefault(q.region_in(s.aws), []).append(key)
                default = s.aws.resolved_region()
                for region, keys in regions.items():
                    aws = s.aws if region == default else s.aws.model_copy(update={"region": region})
                    self._clients[region] = await clients.enter_async_context(
                        sqs_client(aws, pool_size=s.pool_size(keys), on_call=self.metrics.api_call)
                    )
                targets = await self._resolve()
                await run_hooks(self.registries, self.resources, "startup")
                if self.tracing is None and self._tracing_choice == "environment":
                    self.tracing = self._start_tracing()  # a provider a start-up hook installed
                self.consumers = [
                    Consumer(self._context(t, executor, payloads, store), t, s.delete_flush_interval)
                    for t in targets
                ]
                for consumer in self.consumers:
                    consumer.start()
                    log.info(
                        "consumer_started",
                        queue=consumer.target.key,
                        url=consumer.target.url,
                        fifo=consumer.target.fifo,
                        pollers=consumer.settings.pollers,
                        max_in_flight=consumer.settings.max_in_flight,
                        max_receive_count=consumer.target.max_receive_count,
                        types=self.registries[consumer.target.key].types,
                    )
                self._started_at = time.monotonic()
                self.started.set()
                summary = asyncio.create_task(self._summaries(), name="summaries")
                try:
                    await self._stop.wait()
                finally:
                    summary.cancel()
                    await self._shutdown()
                    self._log_summary(final=True)
                    await run_hooks(self.registries, self.resources, "shutdown")
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if self.health is not None:
                await self.health.stop()
            if self.tracing is not None and self._tracing_choice == "environment":
                from worker.observe.tracing import shutdown

                await asyncio.to_thread(shutdown)  # the last spans exported (a blocking flush)

    def _context(
        self,
        target: QueueTarget,
        executor: Executor,
        payloads: PayloadStore | None,
        store: IdempotencyStore | None,
    ) -> QueueContext:
        """What every role of ``target``'s consumer shares, built once."""
        s = self.settings
        settings = s.queues[target.key]
        registry = self.registries[target.key]
        idempotency = None
        if store is not None and registry.idempotent:
            idempotency = Idempotency(
                store,
                target.name,  # the queue, not its configuration key: records outlive renames
                s.idempotency.expires_after,
                settings.visibility_timeout / 2,
                target.max_receive_count,
            )
        tracing = self.tracing.for_queue(target.name, target.url) if self.tracing is not None else None
        return QueueContext(
            target.key,
            settings,
            registry,
            policy_of(settings, target.fifo, target.max_receive_count),
            executor,
            self.metrics,
            resources=self.resources,
            payloads=payloads,
            tracing=tracing,
            idempotency=idempotency,
            group_metrics=s.health.group_metrics,
            # Every request of this queue's roles is counted as the queue's.
            sqs=self._client(target.key).counting(self.metrics.queue_requests(target.key)),
            url=target.url,
            types=rules_of(s.queues[target.key], s.message_type_attribute),
            breakers=self.breakers,
            max_wait=s.breaker.max_wait,
        )

    def _start_tracing(self) -> Tracing | None:
        choice = self._tracing_choice
        if choice != "environment":
            return choice
        if not tracing_switch.requested():
            return None  # OpenTelemetry is not even imported
        from worker.observe.tracing import configure

        tracing = configure()
        if tracing is not None:
            log.info("tracing_started")
        return tracing

    def _client(self, key: str) -> AwsClient:
        """The SQS client of the queue's region."""
        return self._clients[self.settings.queues[key].region_in(self.settings.aws)]

    async def _resolve(self) -> list[QueueTarget]:
        """Every configured queue, within ``aws.startup_timeout`` in all."""
        clients = {
            key: self._client(key).counting(self.metrics.queue_requests(key)) for key in self.settings.queues
        }
        return await resolve_queues(self.settings, clients)

    async def _shutdown(self) -> None:
        """Stop receiving and let handlers finish within ``shutdown_grace``; then
        ``shutdown_flush`` more for the last settles to be confirmed, while every lease is
        still extended. Receives in progress are let finish (a long poll left open on the
        server could swallow the next messages), within the same overall deadline."""
        self.stopping = True
        s = self.settings
        started = time.monotonic()
        grace_deadline = started + s.shutdown_grace
        final_deadline = grace_deadline + s.shutdown_flush
        log.info(
            "shutdown_started",
            grace=s.shutdown_grace,
            flush=s.shutdown_flush,
            in_flight={c.target.key: c.in_flight for c in self.consumers},
        )
        _, cancelled = await asyncio.gather(
            asyncio.gather(*(c.stop_polling(final_deadline) for c in self.consumers)),
            asyncio.gather(*(c.drain(grace_deadline, final_deadline) for c in self.consumers)),
        )
        unconfirmed = await asyncio.gather(*(c.close(final_deadline) for c in self.consumers))
        calls: dict[str, int] = {}
        for client in self._clients.values():
            for operation, count in client.calls.items():
                calls[operation] = calls.get(operation, 0) + count
        store = next((c.idempotency.store for c in self.consumers if c.idempotency is not None), None)
        store_calls = getattr(getattr(store, "client", None), "calls", None)
        log.info(
            "shutdown_complete",
            seconds=round(time.monotonic() - started, 2),
            cancelled=sum(cancelled),
            unconfirmed=sum(unconfirmed),
            api_calls=calls,
            **({"idempotency_calls": dict(store_calls)} if store_calls is not None else {}),
        )

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log.summary_interval)
            self._log_summary()

    def _log_summary(self, final: bool = False) -> None:
        for c in self.consumers:
            snap = c.counters.snapshot()
            previous = self._last_summary.get(c.target.key, {})
            totals = {k: snap[k] for k in ("received", "succeeded", "failed", "extended")}
            log.info(
                "queue_summary",
                queue=c.target.key,
                final=final,
                in_flight=c.in_flight,
                free_slots=c.slots.free,
                **{k: snap[k] - previous.get(k, 0) for k in totals},
                totals=totals,
            )
            self._last_summary[c.target.key] = snap


def check_idempotency(settings: WorkerSettings, registries: dict[str, Registry]) -> None:
    """An idempotent handler needs a store: refused before anything starts."""
    if settings.idempotency.store != "none":
        return
    for key, registry in registries.items():
        for route in registry.idempotent:
            raise ConfigError(
                f"{route.source} is idempotent (queue {key}) but idempotency.store is none: "
                "set idempotency.store to dynamodb (memory for a single process)"
            )


@contextlib.asynccontextmanager
async def open_store(settings: WorkerSettings) -> AsyncIterator[IdempotencyStore | None]:
    """The idempotency store ``idempotency.store`` names (None for ``none``)."""
    config = settings.idempotency
    if config.store == "none":
        yield None
    elif config.store == "memory":
        yield MemoryStore()
    else:
        from worker.idempotency.dynamodb import DynamoDBStore

        async with DynamoDBStore.connect(settings.store_aws(), config.table) as store:
            yield store


def load_registries(settings: WorkerSettings) -> dict[str, Registry]:
    """Import every queue's handler modules (raises HandlerError at start, not mid-run),
    and check that a queue's ``types.default`` names a type its handlers serve."""
    registries = {key: Registry.from_modules(q.handlers) for key, q in settings.queues.items()}
    for key, registry in registries.items():
        for message_type in settings.queues[key].routes:
            if registry.get(message_type) is None and message_type != DEFAULT_ROUTE:
                raise ConfigError(
                    f"queues.{key}.routes: no handler of {settings.queues[key].handlers} serves "
                    f"{message_type!r} (types served: {', '.join(registry.types) or 'none'})"
                )
        default = settings.queues[key].types.default
        if default is not None and registry.get(default) is None:
            served = ", ".join(registry.types) or "none"
            raise ConfigError(
                f"queues.{key}.types.default: no handler of {settings.queues[key].handlers} serves "
                f"{default!r} (types served: {served})"
            )
    return registries


def describe_routing(ctx_settings: QueueSettings, registry: Registry, type_attribute: str) -> list[str]:
    """How a queue's messages find their handler, for ``worker check``: the type sources in
    order, each type and its handler, where an untyped or unknown message goes."""
    from worker.runtime.context import route_for, rules_of

    rules = rules_of(ctx_settings, type_attribute)
    types = ctx_settings.types
    lines = [f"  type from: {', then '.join(rules.describe())}"]
    for message_type, route in sorted(registry.routes.items()):
        needs = f" (needs {', '.join(route.dependencies)})" if route.dependencies else ""
        lines.append(f"  {message_type} -> {route.source}{needs}")
    default = route_for(registry, types, None)
    if default is None:
        target = "rejected to the DLQ (no default handler)"
    elif types.default is not None:
        target = f"{types.default} -> {default.source} (types.default)"
    else:
        target = f"{default.source} (@router.default)"
    lines.append(f"  without a type: {target}")
    unknown = route_for(registry, types, "\x00 a type no handler serves")
    lines.append(f"  unknown type: {'the default handler' if unknown is not None else 'rejected to the DLQ'}")
    return lines
