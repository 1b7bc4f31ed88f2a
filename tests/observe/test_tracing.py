"""Traces across SNS and SQS on LocalStack, read back from the SDK's in-memory exporter:
the producer injects its send span's context, the worker continues it (SNS envelope, raw
delivery, X-Ray's AWSTraceHeader), spans follow the messaging conventions, log lines carry
the ids, and a message without room for the context is still sent."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from tests.conftest import Aws, eventually, running, settings_for
from worker import Router
from worker.observe import tracing as tracing_module
from worker.observe.logs import configure_logging
from worker.observe.tracing import Tracing, creation_context, inject
from worker.producer import Producer
from worker.settings import AwsSettings


def _reset_global_provider() -> None:
    # What OpenTelemetry's own tests do: the API lets a process set its provider once.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_global_provider()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def producer_for(aws: Aws) -> Any:
    return Producer.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1"))


@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
async def test_a_trace_goes_from_the_publisher_through_sns_and_sqs_into_the_handler(
    aws: Aws, spans: InMemorySpanExporter, raw: bool
) -> None:
    topic = (await aws.sns.create_topic(Name=f"traced-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    queue = await aws.queue()
    await aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue.arn,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    tracer = trace.get_tracer("checkout-service")
    with tracer.start_as_current_span("checkout") as checkout:
        async with producer_for(aws) as producer:
            await producer.publish(topic, {"order": 1}, "order.placed")
    trace_id = checkout.get_span_context().trace_id

    seen: list[tuple[int, int]] = []
    router = Router()

    @router.handler("order.placed")
    async def placed(payload: dict[str, Any]) -> None:
        ctx = trace.get_current_span().get_span_context()
        seen.append((ctx.trace_id, ctx.span_id))

    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router, tracing=Tracing()) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=15)
        await eventually(lambda: named(spans, f"settle {queue.name}"), timeout=10)

    (send,) = named(spans, f"send {topic.rsplit(':', 1)[1]}")
    assert send.kind is SpanKind.PRODUCER
    assert send.context.trace_id == trace_id
    assert send.attributes is not None
    assert send.attributes["messaging.system"] == "aws_sns"
    assert send.attributes["messaging.operation.type"] == "send"

    (process,) = named(spans, f"process {queue.name}")
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == trace_id  # the trace goes on across the hop
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    attributes = dict(process.attributes or {})
    assert attributes["messaging.system"] == "aws_sqs"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == queue.name
    assert attributes["sqs_worker.message.type"] == "order.placed"
    assert attributes["sqs_worker.outcome"] == "succeeded"
    assert isinstance(attributes["messaging.message.id"], str)
    # The handler ran inside the process span.
    assert seen == [(trace_id, process.context.span_id)]

    (receive,) = named(spans, f"receive {queue.name}")
    assert receive.kind is SpanKind.CLIENT
    assert receive.attributes is not None
    assert receive.attributes["messaging.batch.message_count"] == 1
    assert [link.context.span_id for link in receive.links] == [send.context.span_id]
    settle = named(spans, f"settle {queue.name}")[0]
    assert settle.attributes is not None
    assert settle.attributes["messaging.operation.type"] == "settle"
    assert settle.attributes["messaging.operation.name"] == "delete"
    assert [link.context.trace_id for link in settle.links] == [trace_id]


async def test_an_xray_trace_header_is_continued(aws: Aws, spans: InMemorySpanExporter) -> None:
    queue = await aws.queue()
    await aws.sqs.send_message(
        QueueUrl=queue.url,
        MessageBody=json.dumps({"type": "job"}),
        MessageSystemAttributes={
            "AWSTraceHeader": {
                "DataType": "String",
                "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            }
        },
    )
    router = Router()

    @router.handler("job")
    async def job(payload: dict[str, Any]) -> None:
        return None

    async with running(settings_for(aws.endpoint, queue), router, tracing=Tracing()) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=15)
    (process,) = named(spans, f"process {queue.name}")
    assert process.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793
    assert process.parent is not None
    assert process.parent.span_id == 0x53995C3F42CD8AD8


async def test_failures_mark_the_span_and_log_lines_carry_the_trace(
    aws: Aws, spans: InMemorySpanExporter
) -> None:
    queue = await aws.queue()
    await aws.send(queue.url, {"n": 1}, "boom")
    router = Router()

    @router.handler("boom")
    async def boom(payload: dict[str, Any]) -> None:
        structlog.get_logger().info("about_to_fail")
        raise ValueError("no stock")

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        async with running(settings_for(aws.endpoint, queue), router, tracing=Tracing()) as worker:
            await eventually(lambda: worker.consumers[0].counters.failed >= 1, timeout=15)
    finally:
        configure_logging("info", "json")
    process = named(spans, f"process {queue.name}")[0]
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["sqs_worker.outcome"] == "failed"
    assert process.attributes["error.type"] == "ValueError"
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["event"] in ("about_to_fail", "message_failed")]
    assert len(mine) >= 2
    for line in mine:
        assert line["trace_id"] == format(process.context.trace_id, "032x")
        assert line["span_id"] == format(process.context.span_id, "016x")
    # Lines outside any span carry no ids.
    assert all("trace_id" not in line for line in lines if line["event"] == "consumer_started")


async def test_a_batch_handler_has_one_span_linked_to_every_message(
    aws: Aws, spans: InMemorySpanExporter
) -> None:
    queue = await aws.queue()
    tracer = trace.get_tracer("test")
    sent: list[int] = []
    async with producer_for(aws) as producer:
        for n in range(3):
            with tracer.start_as_current_span(f"origin-{n}") as origin:
                await producer.send(queue.url, {"n": n}, "row")
            sent.append(origin.get_span_context().trace_id)
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=1.0)
    async def rows(payloads: list[dict[str, Any]]) -> None:
        return None

    async with running(settings_for(aws.endpoint, queue), router, tracing=Tracing()) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 3, timeout=15)
    batches = named(spans, f"process {queue.name}")
    linked = sorted(link.context.trace_id for span in batches for link in span.links)
    assert linked == sorted(sent)
    counts = [int(str((span.attributes or {}).get("messaging.batch.message_count"))) for span in batches]
    assert sum(counts) == 3
    assert all(span.parent is None for span in batches)


def test_no_room_no_context_and_one_warning(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test")
    tracing_module._warned_full = False
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        with tracer.start_as_current_span("origin"):
            full = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(9)}
            inject(full, "q", limit=9)
            assert "traceparent" not in full
            inject(dict(full), "q", limit=9)
            roomy = {"type": {"DataType": "String", "StringValue": "t"}}
            inject(roomy, "q", limit=9)
    finally:
        configure_logging("info", "json")
    assert "traceparent" in roomy
    warnings = [line for line in out.getvalue().splitlines() if "trace_context_not_injected" in line]
    assert len(warnings) == 1
    # What was injected reads back as the span it came from.
    parent = creation_context({"traceparent": roomy["traceparent"]["StringValue"]})
    assert parent is not None
    assert parent.is_valid


async def test_a_full_message_is_sent_without_the_context(aws: Aws, spans: InMemorySpanExporter) -> None:
    queue = await aws.queue()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("origin"):
        async with producer_for(aws) as producer:
            await producer.send(queue.url, "x", "t", attributes={f"a{i}": "v" for i in range(9)})
            await producer.send(queue.url, "y", "t")
    got = {m["Body"]: m.get("MessageAttributes", {}) for m in await aws.drain(queue.url)}
    assert len(got["x"]) == 10
    assert "traceparent" not in got["x"]
    assert "traceparent" in got["y"]
    assert "idempotency-key" in got["y"]


async def test_without_a_tracer_provider_nothing_is_injected(aws: Aws) -> None:
    queue = await aws.queue()
    async with producer_for(aws) as producer:
        await producer.send(queue.url, "z", "t")
    (message,) = await aws.drain(queue.url)
    assert set(message["MessageAttributes"]) == {"type", "idempotency-key"}
    assert creation_context({}, {"AWSTraceHeader": "garbage"}) is None
