"""``worker run`` configured by the standard OTEL_* variables alone: spans go over OTLP/HTTP
to a collector (here a small receiver decoding the protobuf requests), under the service
name given; an exporter it cannot use is a one-line error, exit code 2."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.cli.test_cli import run_worker
from tests.conftest import Aws, eventually
from tests.support.process import WorkerProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def spans_of(received: list[ExportTraceServiceRequest]) -> list[tuple[str, str, str]]:
    """(service name, span name, trace id) of every span received."""
    out: list[tuple[str, str, str]] = []
    for request in received:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope in resource_spans.scope_spans:
                out += [(service, s.name, s.trace_id.hex()) for s in scope.spans]
    return out


async def test_worker_run_exports_spans_over_otlp(
    aws: Aws, tmp_path: Path, collector: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = collector
    queue = await aws.queue()
    await aws.send(
        queue.url,
        {"n": 1},
        MessageAttributes={
            "type": {"DataType": "String", "StringValue": "noop"},
            "traceparent": {"DataType": "String", "StringValue": TRACEPARENT},
        },
    )
    config = {
        "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
        "queues": {"jobs": {"name": queue.name, "handlers": ["tests.support.noop"], "wait_time_seconds": 1}},
    }
    worker = WorkerProcess(
        tmp_path,
        config,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "billing-worker",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    ).start()
    try:
        await eventually(lambda: '"message_succeeded"' in worker.log(), timeout=30)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        worker.kill()
    spans = spans_of(received)
    assert ("billing-worker", f"process {queue.name}", TRACE_ID) in spans, spans
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert any(line["event"] == "tracing_started" for line in lines)
    [done] = [line for line in lines if line["event"] == "message_succeeded"]
    assert done["trace_id"] == TRACE_ID


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: unknown exporter"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "exports OTLP over HTTP only",
        ),
    ],
)
def test_an_exporter_it_cannot_use_is_one_line_exit_2(
    env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    config = tmp_path / "w.yaml"
    config.write_text(
        "aws: {endpoint_url: 'http://127.0.0.1:9', region: us-east-1}\n"
        "queues: {jobs: {name: jobs, handlers: [tests.support.noop]}}\n"
    )
    done = run_worker(["run", "-c", str(config)], env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


async def test_worker_send_injects_the_context_of_its_span(aws: Aws) -> None:
    queue = await aws.queue()
    done = await asyncio.to_thread(
        run_worker,
        ["send", queue.name, "--type", "job", "--body", '{"n": 1}', "--endpoint-url", aws.endpoint],
        {"OTEL_TRACES_EXPORTER": "console", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert done.returncode == 0, done.stderr
    [message] = await aws.drain(queue.url)
    traceparent = message["MessageAttributes"]["traceparent"]["StringValue"]
    trace_id = traceparent.split("-")[1]
    # The console exporter printed the send span, of the same trace.
    assert f'"trace_id": "0x{trace_id}"' in done.stdout
    assert f'"name": "send {queue.name}"' in done.stdout
