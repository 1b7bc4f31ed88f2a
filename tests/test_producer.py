"""The producer library against LocalStack: typed bodies, batching, limits, partial failures,
bodies offloaded to S3."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.conftest import Aws
from worker.aws import AwsClient
from worker.messages.envelope import parse_message
from worker.messages.payload_store import PayloadMissing, PayloadStore
from worker.messages.payloads import SNS_MAX_BYTES, PayloadPointer
from worker.producer import MAX_BYTES, Offload, OutgoingMessage, Producer, ProducerError
from worker.settings import AwsSettings, PayloadSettings


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
    with pytest.raises(ProducerError, match=r"over the SQS limit of 1 MiB .*--s3-bucket"):
        await p.send_many(queue.url, [OutgoingMessage({"n": 1}), OutgoingMessage(big)])
    # Attributes count: name, type and value.
    at_limit = "x" * (MAX_BYTES - len("type") - len("String") - len("t"))
    with pytest.raises(ProducerError, match="1,048,577 bytes"):
        await p.send_many(queue.url, [OutgoingMessage(at_limit + "x", "t")])
    assert p.sqs.calls["send_message_batch"] == 0
    assert await aws.total(queue.url) == 0  # nothing half-sent
    await p.send(queue.url, at_limit, "t")  # exactly 1 MiB: what SQS takes
    [m] = await aws.drain(queue.url)
    assert len(m["Body"]) == len(at_limit)
    assert set(m["MessageAttributes"]) == {"type"}  # the default key would not fit: left out


async def test_every_message_gets_an_idempotency_key_unless_given_one(aws: Aws) -> None:
    queue = await aws.queue()
    p = producer(aws)
    await p.send_many(
        queue.url,
        [
            OutgoingMessage({"n": 1}),
            OutgoingMessage({"n": 2}),
            OutgoingMessage({"n": 3}, idempotency_key="order-7"),
        ],
    )
    keys = {
        json.loads(m["Body"])["n"]: m["MessageAttributes"]["idempotency-key"]["StringValue"]
        for m in await aws.drain(queue.url)
    }
    assert keys[3] == "order-7"
    assert keys[1] != keys[2]
    assert len(keys[1]) == 32
    with pytest.raises(ProducerError, match="idempotency key must be 1-512 characters"):
        await p.send(queue.url, "x", idempotency_key="")
    bare = Producer(p.sqs, p.sns, idempotency_keys=False)
    await bare.send(queue.url, "y", "t")
    [m] = await aws.drain(queue.url)
    assert set(m["MessageAttributes"]) == {"type"}


async def test_sns_takes_256_kib(aws: Aws) -> None:
    topic = (await aws.sns.create_topic(Name=f"limits-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    p = producer(aws)
    with pytest.raises(ProducerError, match="over the SNS limit of 256 KiB"):
        await p.publish(topic, "x" * (SNS_MAX_BYTES + 1))
    assert await p.publish(topic, "x" * SNS_MAX_BYTES)


@pytest.fixture(scope="session")
async def bucket(aws: Aws) -> str:
    name = f"offload-{uuid.uuid4().hex[:12]}"
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        await (await store.client()).call("create_bucket", Bucket=name)
    return name


@pytest.fixture
async def store(aws: Aws) -> AsyncIterator[PayloadStore]:
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as s:
        yield s


def offloading(aws: Aws, store: PayloadStore, offload: Offload) -> Producer:
    return Producer(AwsClient(aws.sqs), AwsClient(aws.sns), offload=offload, payloads=store)


async def test_bodies_over_the_threshold_go_to_s3(aws: Aws, bucket: str, store: PayloadStore) -> None:
    queue = await aws.queue()
    p = offloading(aws, store, Offload(bucket, prefix="out/"))
    small, large, huge = {"n": "x" * 1000}, {"n": "y" * 300_000}, {"n": "z" * 5_000_000}
    result = await p.send_many(queue.url, [OutgoingMessage(b, "job") for b in (small, large, huge)])
    assert len(result.sent) == 3
    received = {m["MessageId"]: m for m in await aws.drain(queue.url)}
    messages = [parse_message(received[i]) for i in result.sent]
    assert messages[0].payload is None
    assert json.loads(messages[0].body) == small
    for message, body in zip(messages[1:], (large, huge), strict=True):
        assert message.payload is not None
        assert message.payload.bucket == bucket
        assert message.payload.key.startswith("out/")
        assert message.type == "job"  # the type attribute is kept beside the pointer
        resolved = await store.resolve(message)
        assert resolved is not None
        assert json.loads(resolved.body) == body
    raw = received[result.sent[1]]
    assert raw["MessageAttributes"]["ExtendedPayloadSize"] == {
        "DataType": "Number",
        "StringValue": str(len(json.dumps(large))),
    }


async def test_always_offloads_every_body_also_through_sns(
    aws: Aws, bucket: str, store: PayloadStore
) -> None:
    topic = (await aws.sns.create_topic(Name=f"offload-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    queue = await aws.queue()
    await aws.sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": "false"}
    )
    p = offloading(aws, store, Offload(bucket, always=True))
    await p.publish(topic, {"tiny": 1}, "job")
    # Over SNS's 256 KiB: offloaded even with a threshold above it.
    p.offload = Offload(bucket, threshold=MAX_BYTES)
    await p.publish(topic, {"big": "b" * 400_000}, "job")
    got = [parse_message(m) for m in await aws.drain(queue.url, wait=2)]
    assert len(got) == 2
    for message in got:
        assert message.payload is not None
        assert message.topic_arn == topic
        resolved = await store.resolve(message)
        assert resolved is not None
        assert json.loads(resolved.body) in ({"tiny": 1}, {"big": "b" * 400_000})
    with pytest.raises(ProducerError, match="structure json body cannot be offloaded"):
        await p.publish(topic, {"default": "x" * 300_000}, structure_json=True)


async def test_offloading_refusals(aws: Aws, bucket: str, store: PayloadStore) -> None:
    queue = await aws.queue()
    p = offloading(aws, store, Offload(bucket, always=True))
    with pytest.raises(ProducerError, match="reserved for offloaded payloads"):
        await p.send(queue.url, "x", attributes={"ExtendedPayloadSize": "1"})
    ten = {f"a{i}": "v" for i in range(10)}
    with pytest.raises(ProducerError, match="needs one of the 10 message attributes"):
        await p.send(queue.url, "x", attributes=ten)
    with pytest.raises(ProducerError, match="needs a bucket"):
        Offload("")
    assert Offload.from_settings(PayloadSettings()) is None
    assert Offload.from_settings(PayloadSettings(bucket="bkt", offload="always")) == Offload(
        "bkt", always=True
    )


async def test_a_message_not_sent_leaves_no_object(aws: Aws, bucket: str, store: PayloadStore) -> None:
    queue = await aws.queue(fifo=True)
    p = offloading(aws, store, Offload(bucket, always=True))
    stored: list[PayloadPointer] = []
    put = store.put

    async def recording_put(*args: Any, **kwargs: Any) -> PayloadPointer:
        pointer = await put(*args, **kwargs)
        stored.append(pointer)
        return pointer

    store.put = recording_put  # type: ignore[method-assign]
    result = await p.send_many(
        queue.url, [OutgoingMessage({"n": 0}, group_id="g"), OutgoingMessage({"n": 1}, group_id="g" * 200)]
    )
    assert [f.index for f in result.failed] == [1]
    assert len(stored) == 2

    async def exists(pointer: PayloadPointer) -> bool:
        try:
            await store.fetch(pointer)
        except PayloadMissing:
            return False
        return True

    assert sorted([await exists(s) for s in stored]) == [False, True]  # the unsent one is gone


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


class Job(BaseModel):
    tenant: str
    n: int


async def group_ids(aws: Aws, url: str, count: int) -> dict[str, str | None]:
    """Body -> MessageGroupId of the next ``count`` messages, received (and deleted) with a
    raw receive that asks for it."""
    got: list[dict[str, Any]] = []
    for _ in range(20):
        r = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        )
        got += r.get("Messages") or []
        for m in r.get("Messages") or []:
            await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if len(got) >= count:
            break
    return {m["Body"]: m["Attributes"].get("MessageGroupId") for m in got}


async def test_group_ids_on_a_standard_queue_and_topic_name_the_tenant_for_fair_queues(aws: Aws) -> None:
    queue = await aws.queue()
    p = producer(aws)
    await p.send(queue.url, "one", "job", group_id="acme")
    # group_by: a field of each body (dict key or model attribute), a group id of its own wins.
    await p.send_many(
        queue.url,
        [
            OutgoingMessage({"tenant": "globex", "n": 1}),
            OutgoingMessage({"tenant": 42, "n": 2}),
            OutgoingMessage({"tenant": "globex", "n": 3}, group_id="own"),
        ],
        group_by="tenant",
    )
    await p.send_many(queue.url, [OutgoingMessage(Job(tenant="initech", n=4))], group_by="tenant")
    await p.send_many(
        queue.url, [OutgoingMessage("five"), OutgoingMessage("six")], group_by=lambda b: b[0] * 2
    )
    assert await group_ids(aws, queue.url, 7) == {
        "one": "acme",
        '{"tenant": "globex", "n": 1}': "globex",
        '{"tenant": 42, "n": 2}': "42",
        '{"tenant": "globex", "n": 3}': "own",
        '{"tenant":"initech","n":4}': "initech",
        "five": "ff",
        "six": "ss",
    }
    # A standard topic passes it on to the standard queues subscribed (raw or enveloped).
    topic = (await aws.sns.create_topic(Name=f"fair-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    enveloped = await aws.queue()
    await aws.sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": "true"}
    )
    await aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=enveloped.arn)
    await p.publish(topic, "seven", "job", group_id="acme")
    await p.publish_many(topic, [OutgoingMessage({"tenant": "umbrella"})], group_by="tenant")
    assert await group_ids(aws, queue.url, 2) == {"seven": "acme", '{"tenant": "umbrella"}': "umbrella"}
    # Enveloped: the worker's parser gives handlers the group id (Message.group_id).
    got = [parse_message(m) for m in await aws.drain(enveloped.url)]
    assert {m.body: m.group_id for m in got} == {"seven": "acme", '{"tenant": "umbrella"}': "umbrella"}


async def test_deduplication_ids_stay_fifo_only_and_group_by_errors_name_the_message(aws: Aws) -> None:
    queue = await aws.queue()
    topic = (await aws.sns.create_topic(Name=f"fair-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    p = producer(aws)
    with pytest.raises(ProducerError, match=r"^message 0: a deduplication id .* queue '[^']+' is standard"):
        await p.send(queue.url, {"a": 1}, dedup_id="d", group_id="g")
    with pytest.raises(ProducerError, match=r"^message 1: a deduplication id .* topic '[^']+' is standard"):
        await p.publish_many(topic, [OutgoingMessage("a"), OutgoingMessage("b", dedup_id="d")])
    bad_bodies: list[tuple[Any, str]] = [
        ({"n": 1}, "the body has no 'tenant' field"),
        ("text", "the body is not a JSON object"),
        ({"tenant": None}, "its 'tenant' is null, not a non-empty string or an integer"),
        ({"tenant": ""}, "its 'tenant' is \"\""),
    ]
    for body, reason in bad_bodies:
        with pytest.raises(ProducerError, match=rf"^message 1: group_by 'tenant': {reason}"):
            await p.send_many(
                queue.url, [OutgoingMessage({"tenant": "a"}), OutgoingMessage(body)], group_by="tenant"
            )
    with pytest.raises(ProducerError, match=r"^message 0: group_by returned int"):
        await p.send_many(queue.url, [OutgoingMessage("x")], group_by=lambda b: 7)  # type: ignore[arg-type]
    assert p.sqs.calls["send_message_batch"] == 0
    assert p.sns.calls["publish_batch"] == 0
    assert await aws.total(queue.url) == 0
