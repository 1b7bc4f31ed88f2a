"""The producer library against LocalStack: typed bodies, batching, limits, partial failures."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from tests.conftest import Aws
from worker.aws import AwsClient
from worker.producer import MAX_BYTES, OutgoingMessage, Producer, ProducerError


class OrderPlaced(BaseModel):
    order_id: str
    total: float


def producer(aws: Aws) -> Producer:
    return Producer(AwsClient(aws.sqs), AwsClient(aws.sns))


async def test_typed_message_becomes_body_and_type_attribute(aws: Aws) -> None:
    queue = await aws.queue()
    message_id = await producer(aws).send(queue.name, OrderPlaced(order_id="7", total=9.5), "order.placed")
    [m] = await aws.drain(queue.url)
    assert m["MessageId"] == message_id
    assert json.loads(m["Body"]) == {"order_id": "7", "total": 9.5}
    assert m["MessageAttributes"]["type"]["StringValue"] == "order.placed"


async def test_many_are_sent_in_batches_of_ten_in_order(aws: Aws) -> None:
    queue = await aws.queue()
    p = producer(aws)
    seen: list[tuple[int, int]] = []
    result = await p.send_many(
        queue.url,
        [OutgoingMessage({"n": i}, "job") for i in range(25)],
        progress=lambda d, t: seen.append((d, t)),
    )
    assert len(result.sent) == 25
    assert result.failed == []
    assert seen == [(10, 25), (20, 25), (25, 25)]
    assert p.sqs.calls["send_message_batch"] == 3
    got = sorted(json.loads(m["Body"])["n"] for m in await aws.drain(queue.url))
    assert got == list(range(25))


async def test_oversized_message_is_refused_before_any_call(aws: Aws) -> None:
    queue = await aws.queue()
    p = producer(aws)
    big = "x" * (MAX_BYTES + 1)
    with pytest.raises(ProducerError, match="over the 256 KiB limit"):
        await p.send_many(queue.url, [OutgoingMessage({"n": 1}), OutgoingMessage(big)])
    assert p.sqs.calls["send_message_batch"] == 0
    assert await aws.total(queue.url) == 0  # nothing half-sent


async def test_batch_with_failed_entries_reports_exactly_which(aws: Aws) -> None:
    queue = await aws.queue(fifo=True)
    p = producer(aws)
    # A group id that SQS refuses for one entry (too long: 128 characters at most).
    messages = [OutgoingMessage({"n": i}, "job", group_id="g") for i in range(5)]
    messages[3] = OutgoingMessage({"n": 3}, "job", group_id="g" * 200)
    result = await p.send_many(queue.url, messages)
    assert [f.index for f in result.failed] == [3]
    assert result.failed[0].code == "InvalidParameterValueException"
    assert len(result.sent) == 4
    assert p.sqs.calls["send_message_batch"] == 1  # a sender fault is not retried
    assert await aws.total(queue.url) == 4


async def test_entries_failing_on_the_server_side_are_retried(aws: Aws) -> None:
    queue = await aws.queue()
    p = producer(aws)
    # LocalStack reports this body as a failed entry with SenderFault=false.
    result = await p.send_many(queue.url, [OutgoingMessage({"n": 0}), OutgoingMessage("\u0000bad")])
    assert len(result.sent) == 1
    assert [(f.index, f.code) for f in result.failed] == [(1, "InvalidMessageContents")]
    assert p.sqs.calls["send_message_batch"] == 3  # the failed entry alone, retried twice


async def test_unknown_destinations_are_clear_errors(aws: Aws) -> None:
    p = producer(aws)
    with pytest.raises(ProducerError, match="queue 'no-such-queue' does not exist"):
        await p.send("no-such-queue", {"a": 1})
    with pytest.raises(ProducerError, match="topic 'no-such-topic' does not exist"):
        await p.publish("no-such-topic", {"a": 1})


async def test_fifo_needs_a_group(aws: Aws) -> None:
    queue = await aws.queue(fifo=True)
    with pytest.raises(ProducerError, match="needs a group id"):
        await producer(aws).send(queue.url, {"a": 1})
