"""Traces across SNS and SQS with OpenTelemetry.

The producer (``worker.producer``, ``worker send``/``publish``) writes the W3C trace context
of its send span into the message as the ``traceparent`` and ``tracestate`` message
attributes; SNS carries them to every subscribed queue (in the envelope's
MessageAttributes, or as message attributes with raw delivery). The worker reads the
creation context of a received message from those attributes, else from the
``AWSTraceHeader`` system attribute (X-Ray, set by SQS when the sender is traced by X-Ray
or a Lambda), and opens spans after the OpenTelemetry messaging conventions for SQS:

========================  ========  ==========================================================
span                      kind      what
========================  ========  ==========================================================
``send <queue|topic>``    PRODUCER  one SendMessage(Batch)/Publish(Batch) call of the producer
``receive <queue>``       CLIENT    a ReceiveMessage call that returned messages; linked to
                                    each message's creation context
``process <queue>``       CONSUMER  one handler run (middleware included): child of the
                                    message's creation context and linked to it; a batch
                                    handler's run has one span linked to every message
``settle <queue>``        CLIENT    a DeleteMessageBatch / ChangeMessageVisibilityBatch call
========================  ========  ==========================================================

Tracing is on when a real tracer provider is installed: by the worker from the standard
``OTEL_*`` variables (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ...; the SDK
and the OTLP exporter are the ``tracing`` extra), or by the application itself (a start-up
hook, ``opentelemetry-instrument``). Off, nothing here runs on the message path. With it
on, log lines written inside a span carry ``trace_id`` and ``span_id``.

SQS allows 10 message attributes: when the message has no room left, the context is not
injected (a warning, once per process) rather than the send failing; ``traceparent`` alone
is kept when only ``tracestate`` does not fit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.errors import ConfigError
from worker.observe import logs
from worker.observe.logs import get_logger

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
XRAY_ATTRIBUTE = "AWSTraceHeader"
"""The SQS system attribute with an X-Ray trace header (``Root=1-...;Parent=...;Sampled=1``)."""
MAX_ATTRIBUTES = 10
INSTRUMENTATION = "sqs-worker"

_w3c = TraceContextTextMapPropagator()
_xray = AwsXRayPropagator()
_warned_full = False
log = get_logger()


def active() -> bool:
    """A real tracer provider is installed (not the API's no-op default)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def configure(service_name: str = "sqs-worker") -> Tracing | None:
    """Tracing for the worker, or None when it is off.

    Uses the tracer provider the application installed; else installs the SDK's, exporting
    as the ``OTEL_*`` variables say, when one of ``OTEL_TRACES_EXPORTER`` (``otlp``,
    ``console``, ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. ``OTEL_SDK_DISABLED=true`` turns it off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not active():
        exporter = _exporter_from_environment()
        if exporter is None:
            return None
        _install_provider(exporter, service_name)
    return Tracing()


def _exporter_from_environment() -> Any | None:
    env = os.environ
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if chosen in ("", "otlp") and not (chosen or endpoint):
        return None
    if chosen == "none":
        return None
    source = f"OTEL_TRACES_EXPORTER={chosen}" if chosen else "OTEL_EXPORTER_OTLP_ENDPOINT"
    try:
        if chosen == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        if chosen not in ("", "otlp"):
            raise ConfigError(f"{source}: unknown exporter (expected otlp, console or none)")
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this worker exports OTLP over HTTP only "
                "(set http/protobuf, the collector's port 4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    except ImportError:
        raise ConfigError(
            f"{source} is set but the OpenTelemetry SDK is not installed: pip install 'aio-sqs-worker[tracing]'"
        ) from None


def _install_provider(exporter: Any, service_name: str) -> None:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def shutdown() -> None:
    """Export what is buffered (the SDK provider's own ``shutdown``; no-op otherwise)."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


# -- propagation --------------------------------------------------------------------------------
def inject(attributes: dict[str, Any], destination: str, limit: int = MAX_ATTRIBUTES) -> None:
    """Add the current trace context to SQS/SNS ``MessageAttributes`` (in place) when there
    is one and room for it (at most ``limit`` attributes in all); never raises."""
    global _warned_full
    if TRACEPARENT in attributes:
        return  # the caller set its own
    carrier: dict[str, str] = {}
    _w3c.inject(carrier)
    if not carrier:
        return
    room = limit - len(attributes)
    if room < len(carrier):
        carrier.pop(TRACESTATE, None)
    if room < len(carrier):
        if not _warned_full:
            _warned_full = True
            log.warning(
                "trace_context_not_injected",
                destination=destination,
                reason=f"no message attribute free (it has {len(attributes)} of {MAX_ATTRIBUTES}, one is "
                "kept for an offloaded body's pointer)",
            )
        return
    for name, value in carrier.items():
        attributes[name] = {"DataType": "String", "StringValue": value}


def creation_context(attributes: dict[str, str], system: dict[str, Any] | None = None) -> SpanContext | None:
    """The span context a message was created in: ``traceparent`` (and ``tracestate``) among
    its attributes (SNS envelope attributes included), else the ``AWSTraceHeader`` system
    attribute; None when neither gives a valid one."""
    if TRACEPARENT in attributes:
        ctx = _w3c.extract(attributes)
    else:
        header = (system or {}).get(XRAY_ATTRIBUTE)
        if not header:
            return None
        ctx = _xray.extract({"X-Amzn-Trace-Id": header})
    span = trace.get_current_span(ctx).get_span_context()
    return span if span.is_valid else None


class Tracing:
    """The worker's spans (one per process, given to each queue's consumer)."""

    def __init__(self, tracer: trace.Tracer | None = None, queue: str = "", url: str = "") -> None:
        self.tracer = tracer or trace.get_tracer(INSTRUMENTATION)
        self.queue = queue
        """The queue's name (``messaging.destination.name``) once bound by ``for_queue``."""
        self.url = url
        logs.trace_ids = _current_ids

    def for_queue(self, name: str, url: str) -> Tracing:
        """The spans of one queue's consumer."""
        return Tracing(self.tracer, name, url)

    creation = staticmethod(creation_context)

    def _attributes(self, operation: str, kind: str) -> dict[str, Any]:
        return {
            "messaging.system": "aws_sqs",
            "messaging.destination.name": self.queue,
            "messaging.operation.type": kind,
            "messaging.operation.name": operation,
            "aws.sqs.queue.url": self.url,
        }

    def received(self, started: float, creations: Sequence[SpanContext | None], count: int) -> None:
        """A ReceiveMessage call sent at ``started`` (monotonic) returned ``count`` messages."""
        start_ns = time.time_ns() - int((time.monotonic() - started) * 1e9)
        attributes = self._attributes("receive", "receive")
        attributes["messaging.batch.message_count"] = count
        span = self.tracer.start_span(
            f"receive {self.queue}",
            context=otel_context.Context(),  # a root: the poller is not inside anyone's trace
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=[Link(c) for c in creations if c is not None],
            start_time=start_ns,
        )
        span.end()

    def process(
        self,
        creation: SpanContext | None,
        message_id: str | None,
        message_type: str | None,
        receive_count: int,
    ) -> contextlib.AbstractContextManager[Span]:
        """The span of one handler run, current while it runs (handler code's own spans and
        outgoing calls are its children)."""
        attributes = self._attributes("process", "process")
        if message_id is not None:
            attributes["messaging.message.id"] = message_id
        if message_type:
            attributes["sqs_worker.message.type"] = message_type
        attributes["sqs_worker.receive_count"] = receive_count
        parent = (
            trace.set_span_in_context(NonRecordingSpan(creation))
            if creation is not None
            else otel_context.Context()
        )
        return self._consumer_span(parent, attributes, [creation])

    def process_batch(
        self, message_type: str, creations: Sequence[SpanContext | None], count: int
    ) -> contextlib.AbstractContextManager[Span]:
        """One span for a batch handler's run, a root linked to every message's origin."""
        attributes = self._attributes("process", "process")
        attributes["messaging.batch.message_count"] = count
        attributes["sqs_worker.message.type"] = message_type
        return self._consumer_span(otel_context.Context(), attributes, creations)

    def _consumer_span(
        self,
        parent: otel_context.Context,
        attributes: dict[str, Any],
        creations: Sequence[SpanContext | None],
    ) -> contextlib.AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(
            f"process {self.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(c) for c in creations if c is not None],
            record_exception=False,
            set_status_on_exception=False,
        )

    @staticmethod
    def outcome(span: Span, kind: str, reason: str = "") -> None:
        """Record a handler run's outcome on its span (``failed``/``rejected`` are errors)."""
        span.set_attribute("sqs_worker.outcome", kind)
        if kind in ("failed", "rejected"):
            span.set_status(Status(StatusCode.ERROR, reason[:200]))
            span.set_attribute("error.type", reason.split(":", 1)[0][:100] or kind)

    def settle_span(self, operation: str, creations: Sequence[SpanContext | None]) -> Span:
        """A settle call's span (the caller ends it): ``operation`` is ``delete`` or
        ``change_visibility``."""
        attributes = self._attributes(operation, "settle")
        attributes["messaging.batch.message_count"] = len(creations)
        return self.tracer.start_span(
            f"settle {self.queue}",
            context=otel_context.Context(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=[Link(c) for c in creations if c is not None],
        )


@contextlib.contextmanager
def producer_span(system: str, destination: str, operation: str, count: int) -> Iterator[Span | None]:
    """The producer's span around one send or publish call (None when tracing is off: then
    only an application's own current span, if any, is propagated)."""
    if not active():
        yield None
        return
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": "send",
        "messaging.operation.name": operation,
    }
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    tracer = trace.get_tracer(INSTRUMENTATION)
    with tracer.start_as_current_span(
        f"send {destination}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def _current_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
