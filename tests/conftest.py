"""Shared fixtures: a real SQS/SNS server over HTTP and a worker running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiobotocore.session import get_session

from tests.servers import LocalStack

if TYPE_CHECKING:
    from benchmarks.harness import Proxy
    from worker.observe.tracing import Tracing
from worker.messages.routing import Registry, Router
from worker.runtime.supervisor import Supervisor
from worker.settings import WorkerSettings, load_settings

# Local servers accept any credentials; never real ones in tests.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_k] = _v
for _k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
    os.environ.pop(_k, None)
for _k in [k for k in os.environ if k.startswith("OTEL_")]:
    os.environ.pop(_k, None)


_SHARED: LocalStack | None = None


@pytest.fixture(autouse=True)
def _structlog_config() -> Iterator[None]:
    """No test leaks its logging configuration into the next (an in-process CLI run sets
    the "error" level globally; capture_logs in a later test would then see nothing)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def pytest_configure(config: pytest.Config) -> None:
    """Tests run in parallel (pytest-xdist, ``-n`` in pyproject's addopts): the controller
    starts the one LocalStack they share before the workers start, and they inherit its
    address. A single process (``-n 0``) starts it on first use."""
    global _SHARED
    if hasattr(config, "workerinput") or os.environ.get("SQS_WORKER_TEST_ENDPOINT"):
        return
    if not config.getoption("numprocesses", default=None):
        return
    _SHARED = LocalStack()
    _SHARED.start()
    os.environ["SQS_WORKER_TEST_ENDPOINT"] = _SHARED.endpoint


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SHARED is not None and not hasattr(config, "workerinput"):
        _SHARED.cleanup()


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """LocalStack: the one given in SQS_WORKER_TEST_ENDPOINT, else one started for the session."""
    given = os.environ.get("SQS_WORKER_TEST_ENDPOINT")
    if given:
        yield given
        return
    server = LocalStack()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.cleanup()


@pytest.fixture
async def own_server() -> AsyncIterator[LocalStack]:
    """A LocalStack of the test's own, to kill and restart (it keeps no state across restarts)."""
    server = LocalStack()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


@pytest.fixture
async def proxy(endpoint: str) -> AsyncIterator[Proxy]:
    """The fault proxy (benchmarks/proxy.py) in front of LocalStack: slow calls, throttling,
    black holes. Point a worker at ``proxy.url``."""
    from benchmarks.harness import Proxy

    started = await asyncio.to_thread(Proxy, endpoint)
    try:
        yield started
    finally:
        await asyncio.to_thread(started.stop)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
async def dynamodb_table(moto_endpoint: str) -> AsyncIterator[str]:
    """A fresh idempotency table (``id`` key) on moto's server, DynamoDB over HTTP."""
    async with idempotency_table(moto_endpoint) as name:
        yield name


@contextlib.asynccontextmanager
async def idempotency_table(moto_endpoint: str) -> AsyncIterator[str]:
    name = f"idem-{uuid.uuid4().hex[:10]}"
    async with get_session().create_client(
        "dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1"
    ) as client:
        await client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield name
        await client.delete_table(TableName=name)


@dataclass
class TestQueue:
    __test__ = False

    name: str
    url: str
    arn: str
    dlq_url: str | None = None


class Aws:
    """Direct SQS/SNS access for arranging and checking tests (the worker has its own client)."""

    def __init__(self, endpoint: str, sqs: Any, sns: Any, cloudwatch: Any = None) -> None:
        self.endpoint = endpoint
        self.sqs = sqs
        self.sns = sns
        self.cloudwatch = cloudwatch

    async def queue(
        self,
        *,
        fifo: bool = False,
        max_receive_count: int | None = None,
        visibility: int = 30,
        prefix: str = "t",
    ) -> TestQueue:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        suffix = ".fifo" if fifo else ""
        base: dict[str, str] = {"VisibilityTimeout": str(visibility)}
        if fifo:
            base |= {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        dlq_url = None
        attributes = dict(base)
        if max_receive_count is not None:
            dlq_url = (await self.sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=base))[
                "QueueUrl"
            ]
            dlq_arn = await self.arn(dlq_url)
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            )
        url = (await self.sqs.create_queue(QueueName=name + suffix, Attributes=attributes))["QueueUrl"]
        return TestQueue(name + suffix, url, await self.arn(url), dlq_url)

    async def arn(self, url: str) -> str:
        attrs = await self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    async def send(
        self,
        url: str,
        body: Any,
        message_type: str | None = None,
        group: str | None = None,
        **extra: Any,
    ) -> str:
        params: dict[str, Any] = {
            "QueueUrl": url,
            "MessageBody": body if isinstance(body, str) else json.dumps(body),
            **extra,
        }
        if message_type:
            params["MessageAttributes"] = {"type": {"DataType": "String", "StringValue": message_type}}
        if group:
            params["MessageGroupId"] = group
            params.setdefault("MessageDeduplicationId", uuid.uuid4().hex)
        return str((await self.sqs.send_message(**params))["MessageId"])

    async def send_many(self, url: str, bodies: list[Any], message_type: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            response = await self.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(i),
                        "MessageBody": json.dumps(b),
                        "MessageAttributes": {"type": {"DataType": "String", "StringValue": message_type}},
                    }
                    for i, b in enumerate(chunk)
                ],
            )
            assert not response.get("Failed"), response.get("Failed")
            ids += [e["MessageId"] for e in response["Successful"]]
        return ids

    async def counts(self, url: str) -> dict[str, int]:
        attrs = (
            await self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        )["Attributes"]
        return {
            "visible": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"]),
        }

    async def total(self, url: str) -> int:
        return sum((await self.counts(url)).values())

    async def drain(self, url: str, wait: float = 1) -> list[dict[str, Any]]:
        """Receive (and delete) everything visible now."""
        out: list[dict[str, Any]] = []
        while True:
            r = await self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=int(wait),
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            msgs = r.get("Messages") or []
            if not msgs:
                return out
            out += msgs
            await self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
            )


@contextlib.asynccontextmanager
async def aws_clients(endpoint: str) -> AsyncIterator[Aws]:
    session = get_session()
    async with (
        session.create_client("sqs", endpoint_url=endpoint, region_name="us-east-1") as sqs,
        session.create_client("sns", endpoint_url=endpoint, region_name="us-east-1") as sns,
        session.create_client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1") as cloudwatch,
    ):
        yield Aws(endpoint, sqs, sns, cloudwatch)


@pytest.fixture(scope="session")
async def aws(endpoint: str) -> AsyncIterator[Aws]:
    async with aws_clients(endpoint) as clients:
        yield clients


@pytest.fixture(scope="session")
async def moto(moto_endpoint: str) -> AsyncIterator[Aws]:
    async with aws_clients(moto_endpoint) as clients:
        yield clients


def settings_for(endpoint: str, queue: TestQueue, **queue_overrides: Any) -> WorkerSettings:
    worker_keys = {
        "shutdown_grace",
        "shutdown_flush",
        "delete_flush_interval",
        "thread_pool_size",
        "health",
        "payloads",
        "idempotency",
    }
    top = {k: queue_overrides.pop(k) for k in list(queue_overrides) if k in worker_keys}
    q: dict[str, Any] = {
        "name": queue.name,
        "handlers": ["tests.support.noop"],
        "wait_time_seconds": 1,
        "visibility_timeout": 30,
        "retry_backoff": [1],
        "retry_jitter": 0,
    }
    q.update(queue_overrides)
    return load_settings(
        None,
        {
            "aws": {"endpoint_url": endpoint, "region": "us-east-1", "startup_timeout": 5},
            "queues": {"q": q},
            "log": {"summary_interval": 3600},
            **top,
        },
    )


@contextlib.asynccontextmanager
async def running(
    settings: WorkerSettings, router: Router, tracing: Tracing | None = None, middleware: bool = False
) -> AsyncIterator[Supervisor]:
    """Run a worker in-process with ``router``'s handlers (and, with ``middleware``, its
    middleware) on every queue; stop it on exit. Tracing only when given."""
    registry = Registry.of(router) if middleware else Registry(router.routes)
    supervisor = Supervisor(settings, dict.fromkeys(settings.queues, registry), tracing=tracing)
    task = asyncio.create_task(supervisor.run())
    started = asyncio.create_task(supervisor.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        yield supervisor
    finally:
        supervisor.request_stop()
        await task


async def eventually(
    check: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout: float = 30,
    every: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)
