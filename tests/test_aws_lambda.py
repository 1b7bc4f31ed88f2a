"""The Lambda entry point with events built from real messages received from LocalStack
(Lambda itself does not run here): same routing and outcomes, partial batch failures, FIFO
groups stopped at their first failure (a standard queue's groups, fair queues' tenants, not)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import Aws
from worker import Message, PermanentFailure, Router
from worker.aws_lambda import LambdaRunner, make_handler
from worker.messages.routing import Registry


def lambda_event(received: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """What Lambda's SQS event source hands the function for these received messages."""
    records = []
    for m in received:
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: {"stringValue": v.get("StringValue"), "dataType": v["DataType"]}
                    for name, v in (m.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": m.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


async def receive_all(aws: Aws, url: str, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        r = await aws.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        got += r.get("Messages") or []
    return got


def router_with_failures() -> tuple[Router, list[int]]:
    router = Router()
    ran: list[int] = []

    @router.handler("step")
    async def step(payload: dict[str, int], message: Message) -> None:
        ran.append(payload["n"])
        if payload.get("fail"):
            raise RuntimeError("boom")
        if payload.get("reject"):
            raise PermanentFailure("never")

    return router, ran


async def test_partial_batch_failures_name_exactly_the_failed_messages(aws: Aws) -> None:
    queue = await aws.queue()
    bodies = [{"n": 0}, {"n": 1, "fail": 1}, {"n": 2}, {"n": 3, "reject": 1}]
    ids = [await aws.send(queue.url, b, "step") for b in bodies]
    await aws.sqs.send_message(QueueUrl=queue.url, MessageBody="not json at all")  # no type
    received = await receive_all(aws, queue.url, 5)
    router, ran = router_with_failures()
    handler = make_handler(router)
    result = await asyncio.to_thread(handler, lambda_event(received, queue.arn), None)
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    no_type = next(m["MessageId"] for m in received if m["MessageId"] not in ids)
    assert failed == {ids[1], ids[3], no_type}
    assert sorted(ran) == [0, 1, 2, 3]


async def test_fifo_group_stops_at_its_first_failure(aws: Aws) -> None:
    queue = await aws.queue(fifo=True)
    ids = []
    for n in range(4):
        ids.append(await aws.send(queue.url, {"n": n, "fail": int(n == 1)}, "step", group="a"))
    other = await aws.send(queue.url, {"n": 10}, "step", group="b")
    received = await receive_all(aws, queue.url, 5)
    router, ran = router_with_failures()
    runner = LambdaRunner(Registry.of(router))
    result = await runner.handle(lambda_event(received, queue.arn))
    failed = [f["itemIdentifier"] for f in result["batchItemFailures"]]
    assert failed == ids[1:]  # the failure and every later message of its group, in order
    assert other not in failed
    assert ran.count(2) == 0
    assert ran.count(3) == 0
    assert 10 in ran


async def test_a_group_on_a_standard_queue_stops_nothing(aws: Aws) -> None:
    """Fair queues: on a standard queue a MessageGroupId names a tenant; a failure reports
    that record alone, later records of its group run."""
    queue = await aws.queue()
    ids = []
    for n in range(3):
        response = await aws.sqs.send_message(
            QueueUrl=queue.url,
            MessageBody=json.dumps({"n": n, "fail": int(n == 0)}),
            MessageGroupId="acme",
            MessageAttributes={"type": {"DataType": "String", "StringValue": "step"}},
        )
        ids.append(response["MessageId"])
    received = sorted(await receive_all(aws, queue.url, 3), key=lambda m: json.loads(m["Body"])["n"])
    assert [m["Attributes"]["MessageGroupId"] for m in received] == ["acme"] * 3  # the failure first
    router, ran = router_with_failures()
    result = await LambdaRunner(Registry.of(router)).handle(lambda_event(received, queue.arn))
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [ids[0]]
    assert sorted(ran) == [0, 1, 2]


def test_idempotent_handlers_are_refused_with_the_reason() -> None:
    from handlers.payments import router as payments
    from worker.aws_lambda import make_handler
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="Lambda entry point does not run"):
        make_handler(payments)
