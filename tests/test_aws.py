"""AWS errors: the server killed and restarted in the middle of a run; the worker recovers."""

from __future__ import annotations

import asyncio
import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.conftest import Aws, aws_clients, eventually, running, settings_for
from tests.servers import LocalStack
from worker import Router
from worker.aws import is_transient


async def test_server_killed_and_restarted_mid_run_the_worker_recovers(own_server: LocalStack) -> None:
    handled: list[int] = []
    router = Router()

    @router.handler("job")
    async def job(payload: dict[str, int]) -> None:
        await asyncio.sleep(0.3)
        handled.append(payload["n"])

    async with aws_clients(own_server.endpoint) as aws:
        queue = await aws.queue()
        await aws.send_many(queue.url, [{"n": i} for i in range(30)], "job")
        settings = settings_for(own_server.endpoint, queue, max_in_flight=10, pollers=2)
        async with running(settings, router) as worker:
            consumer = worker.consumers[0]
            await eventually(lambda: len(handled) >= 5, timeout=20)
            assert consumer.in_flight > 0
            await asyncio.to_thread(own_server.kill)  # mid-run, handlers running
            receives_at_kill = sum(consumer.pollers[0]._sqs.calls.values())
            await asyncio.sleep(4)
            # Not spinning: a bounded number of attempts while the server was gone.
            assert sum(consumer.pollers[0]._sqs.calls.values()) - receives_at_kill < 60
            await asyncio.to_thread(own_server.start)
            # LocalStack keeps no state: the queue comes back empty under the same URL.
            again = await aws.sqs.create_queue(QueueName=queue.name)
            assert again["QueueUrl"] == queue.url
            before = len(handled)
            await aws.send_many(queue.url, [{"n": 100 + i} for i in range(30)], "job")
            await eventually(lambda: len([n for n in handled if n >= 100]) == 30, timeout=60)
            await asyncio.sleep(1)
            assert all(not t.done() for t in consumer._poller_tasks)  # no poller lost
        assert before >= 5
        assert sorted(n for n in handled if n >= 100) == list(range(100, 130))  # each once


def test_transient_errors_are_classified() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
            "ReceiveMessage",
        )

    assert is_transient(client_error("ThrottlingException", 400))
    assert is_transient(client_error("RequestThrottled", 403))
    assert is_transient(client_error("InternalError", 500))
    assert is_transient(client_error("Whatever", 503))
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(client_error("AWS.SimpleQueueService.NonExistentQueue", 400))
    assert not is_transient(client_error("AccessDenied", 403))
    assert not is_transient(ValueError("bug"))


async def test_throttling_is_retried_until_it_passes(aws: Aws) -> None:
    """A real call made to fail transiently twice (via botocore's event hooks) succeeds."""
    from worker.aws import AwsClient

    queue = await aws.queue()
    failures = {"left": 2}

    def throttle(**kwargs: object) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise client_error_throttled()

    def client_error_throttled() -> ClientError:
        return ClientError(
            {
                "Error": {"Code": "ThrottlingException", "Message": "slow down"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "GetQueueAttributes",
        )

    aws.sqs.meta.events.register("before-send.sqs.GetQueueAttributes", throttle)
    try:
        sqs = AwsClient(aws.sqs)
        result = await sqs.call("get_queue_attributes", QueueUrl=queue.url, AttributeNames=["QueueArn"])
    finally:
        aws.sqs.meta.events.unregister("before-send.sqs.GetQueueAttributes", throttle)
    assert result["Attributes"]["QueueArn"] == queue.arn
    assert sqs.calls["get_queue_attributes"] == 3


class _Flaky:
    """A client whose ``get_queue_url`` fails ``failures`` times (each after ``delay``
    seconds) with a transient error, then answers."""

    def __init__(self, failures: int, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.attempts = 0

    async def get_queue_url(self, **params: object) -> dict[str, str]:
        self.attempts += 1
        await asyncio.sleep(self.delay)
        if self.attempts <= self.failures:
            raise ConnectionResetError("reset")
        return {"QueueUrl": "http://q"}


async def test_a_call_that_works_at_once_builds_no_retry_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.aws import AwsClient

    def no_retry(*args: object, **kwargs: object) -> None:
        raise AssertionError("retry machinery built for a call that worked")

    monkeypatch.setattr(AwsClient, "_retry", no_retry)
    client = _Flaky(failures=0)
    assert await AwsClient(client).call("get_queue_url", QueueName="q") == {"QueueUrl": "http://q"}
    assert client.attempts == 1


async def test_retries_after_a_transient_failure_count_the_first_attempt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker.aws import AwsClient
    from worker.observe.logs import configure_logging, flush_logs

    configure_logging("info", "json")
    try:
        client = _Flaky(failures=2)
        assert await AwsClient(client).call("get_queue_url", retry_for=30, QueueName="q")
        assert client.attempts == 3
        # The budget counts from the first attempt: one that used it up is not retried.
        slow = _Flaky(failures=5, delay=0.3)
        with pytest.raises(ConnectionResetError):
            await AwsClient(slow).call("get_queue_url", retry_for=0.2, QueueName="q")
        assert slow.attempts == 1
        flush_logs()
    finally:
        configure_logging("info", "console")
    retries = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "aws_call_retry" in line]
    assert [r["attempt"] for r in retries] == [1, 2]
