"""Interoperability with the reference Extended Client libraries, against LocalStack's S3,
SQS and SNS: what ``amazon-sqs-extended-client`` / ``amazon-sns-extended-client`` send, the
worker's payload module reads; what our producer sends, the reference client receives (and
cleans up). Sizes from just under the 256 KiB threshold to several MiB, directly and
through SNS (raw delivery and the JSON envelope)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Aws
from tests.support.reference import s3_object_exists, sns_extended_client, sqs_extended_client
from worker.aws import AwsClient
from worker.messages.envelope import Message, parse_message
from worker.messages.payload_store import PayloadStore
from worker.messages.payloads import DEFAULT_THRESHOLD, attribute_bytes
from worker.producer import Offload, OutgoingMessage, Producer
from worker.settings import AwsSettings

TYPE_ATTRIBUTE = {"type": {"DataType": "String", "StringValue": "blob"}}
UNDER = DEFAULT_THRESHOLD - attribute_bytes(TYPE_ATTRIBUTE)
"""The largest body that, with the type attribute, stays on the queue."""
SIZES = [UNDER, UNDER + 1, 1_048_576, 3 * 1_048_576 + 7]


def body_of(size: int, fill: str = "é") -> str:
    """A body of exactly ``size`` bytes (UTF-8), multi-byte characters included."""
    text = fill * (size // len(fill.encode()))
    return text + "x" * (size - len(text.encode()))


@pytest.fixture(scope="module")
async def bucket(aws: Aws) -> str:
    name = f"interop-{uuid.uuid4().hex[:12]}"
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        await (await store.client()).call("create_bucket", Bucket=name)
    return name


@pytest.fixture
async def store(aws: Aws) -> AsyncIterator[PayloadStore]:
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as s:
        yield s


async def read(store: PayloadStore, raw: dict[str, Any]) -> Message:
    resolved = await store.resolve(parse_message(raw))
    assert resolved is not None
    return resolved


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
async def test_reference_sqs_client_to_our_reader(
    aws: Aws, bucket: str, store: PayloadStore, legacy: bool
) -> None:
    queue = await aws.queue()
    reference = sqs_extended_client(aws.endpoint, bucket, legacy=legacy)
    bodies = {size: body_of(size) for size in SIZES}
    for body in bodies.values():
        await asyncio.to_thread(
            reference.send_message,
            QueueUrl=queue.url,
            MessageBody=body,
            MessageAttributes=dict(TYPE_ATTRIBUTE),
        )
    got = [parse_message(m) for m in await aws.drain(queue.url)]
    assert len(got) == len(SIZES)
    for message in got:
        assert message.type == "blob"
        assert "ExtendedPayloadSize" not in message.attributes
        assert "SQSLargePayloadSize" not in message.attributes
        resolved = await store.resolve(message)
        assert resolved is not None
        size = len(resolved.body.encode())
        assert resolved.body == bodies[size]
        assert (message.payload is not None) == (size > UNDER)  # the threshold is the reference's
        if message.payload is not None:
            assert message.payload.legacy == legacy
            assert message.payload.size == size


async def test_reference_batch_send_and_attribute_given_key(
    aws: Aws, bucket: str, store: PayloadStore
) -> None:
    queue = await aws.queue()
    reference = sqs_extended_client(aws.endpoint, bucket, always=True)
    entries = [{"Id": str(i), "MessageBody": json.dumps({"type": "row", "n": i})} for i in range(3)]
    await asyncio.to_thread(reference.send_message_batch, QueueUrl=queue.url, Entries=entries)
    got = sorted([await read(store, m) for m in await aws.drain(queue.url)], key=lambda m: m.body)
    # No type attribute: the type comes from the stored body once resolved.
    assert [(m.type, json.loads(m.body)["n"]) for m in got] == [("row", 0), ("row", 1), ("row", 2)]
    assert all(m.payload is not None for m in got)


async def test_our_producer_to_the_reference_sqs_client(aws: Aws, bucket: str, store: PayloadStore) -> None:
    queue = await aws.queue()
    producer = Producer(
        AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket, prefix="ours/"), payloads=store
    )
    bodies = [body_of(size) for size in SIZES]
    result = await producer.send_many(queue.url, [OutgoingMessage(b, "blob") for b in bodies])
    assert not result.failed
    reference = sqs_extended_client(aws.endpoint, bucket)
    received: list[dict[str, Any]] = []
    while len(received) < len(SIZES):
        response = await asyncio.to_thread(
            reference.receive_message,
            QueueUrl=queue.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        )
        assert response.get("Messages"), f"only {len(received)} of {len(SIZES)} arrived"
        received += response["Messages"]
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    for m in received:
        assert m["MessageAttributes"]["type"]["StringValue"] == "blob"
        assert "ExtendedPayloadSize" not in m["MessageAttributes"]
    offloaded = [m for m in received if len(m["Body"].encode()) > UNDER]
    assert len(offloaded) == len(SIZES) - 1
    # The reference client deletes the S3 object with the message: our key format suits it.
    keys: list[str] = []
    for m in offloaded:
        marker = "-..s3Key..-"
        keys.append(m["ReceiptHandle"].split(marker)[1])
        await asyncio.to_thread(
            reference.delete_message, QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"]
        )
    assert all(k.startswith("ours/") for k in keys)
    assert not any([await asyncio.to_thread(s3_object_exists, aws.endpoint, bucket, k) for k in keys])


async def test_reference_sns_client_through_raw_and_enveloped_subscriptions(
    aws: Aws, bucket: str, store: PayloadStore
) -> None:
    topic = (await aws.sns.create_topic(Name=f"interop-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    raw_queue, enveloped = await aws.queue(prefix="raw"), await aws.queue(prefix="env")
    for queue, raw in ((raw_queue, "true"), (enveloped, "false")):
        await aws.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": raw}
        )
    reference = sns_extended_client(aws.endpoint, bucket)
    bodies = {size: body_of(size, "ü") for size in SIZES}
    for body in bodies.values():
        await asyncio.to_thread(
            reference.publish, TopicArn=topic, Message=body, MessageAttributes=dict(TYPE_ATTRIBUTE)
        )
    for queue, via_envelope in ((raw_queue, False), (enveloped, True)):
        got = [parse_message(m) for m in await aws.drain(queue.url, wait=2)]
        assert len(got) == len(SIZES)
        for message in got:
            assert message.type == "blob"
            assert (message.topic_arn is not None) == via_envelope
            resolved = await store.resolve(message)
            assert resolved is not None
            size = len(resolved.body.encode())
            assert resolved.body == bodies[size]
            assert (message.payload is not None) == (size > UNDER)
            # Fan-out: every subscriber reads the same object, raw or enveloped; nothing on it
            # says this message is its only reader, so no subscriber deletes it.
            assert not store.should_discard(resolved)


async def test_our_publish_to_the_reference_sqs_client_with_raw_delivery(
    aws: Aws, bucket: str, store: PayloadStore
) -> None:
    topic = (await aws.sns.create_topic(Name=f"interop-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    queue = await aws.queue()
    await aws.sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": "true"}
    )
    producer = Producer(AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket), payloads=store)
    bodies = [body_of(size) for size in SIZES]
    for body in bodies:
        await producer.publish(topic, body, "blob")
    reference = sqs_extended_client(aws.endpoint, bucket, delete_payload=False)
    received: list[dict[str, Any]] = []
    for _ in range(10):
        response = await asyncio.to_thread(
            reference.receive_message, QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        received += response.get("Messages", [])
        if len(received) >= len(SIZES):
            break
    assert sorted(m["Body"] for m in received) == sorted(bodies)
