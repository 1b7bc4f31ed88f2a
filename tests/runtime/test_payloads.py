"""The worker reads offloaded payloads (the Amazon SQS/SNS Extended Client format) before
the handler runs, and deletes the S3 object once SQS confirmed the message's delete;
against LocalStack's SQS, SNS and S3, with the reference clients as senders."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from benchmarks.harness import Proxy
from tests.conftest import Aws, eventually, running, settings_for
from tests.support import outage
from tests.support.reference import s3_object_exists, sqs_extended_client
from worker import Message, Router
from worker.aws import AwsClient
from worker.messages.payload_store import PayloadStore
from worker.messages.payloads import parse_pointer
from worker.producer import Offload, OutgoingMessage, Producer
from worker.settings import AwsSettings

BIG = 3 * 1_048_576 + 11  # over SQS's 1 MiB: only the extended-client format carries it


@pytest.fixture
async def bucket(aws: Aws) -> str:
    name = f"payloads-{uuid.uuid4().hex[:12]}"
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        await (await store.client()).call("create_bucket", Bucket=name)
    return name


def collecting_router(seen: list[Message]) -> Router:
    router = Router()

    @router.handler("blob")
    async def blob(payload: dict[str, str], message: Message) -> None:
        seen.append(message)

    return router


async def _send_by_reference(aws: Aws, bucket: str, url: str, body: str) -> None:
    """One ``blob`` message sent by the reference Extended Client (its body kept in ``bucket``)."""
    reference = sqs_extended_client(aws.endpoint, bucket)
    await asyncio.to_thread(
        reference.send_message,
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={"type": {"DataType": "String", "StringValue": "blob"}},
    )


async def _pointer_of_the_only_message(aws: Aws, url: str) -> tuple[str, str, str]:
    """Receive the pointer message once (to learn its object) and make it visible again."""
    r = await aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, VisibilityTimeout=30)
    (m,) = r["Messages"]
    pointer = parse_pointer(m["Body"])
    assert pointer is not None
    await aws.sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
    )
    return pointer.bucket, pointer.key, m["MessageId"]


async def _send_by_producer(aws: Aws, bucket: str, url: str, body: str) -> None:
    """One ``blob`` message sent by this project's producer to one queue, its body offloaded
    (its object says so: one reader)."""
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        producer = Producer(
            AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket, always=True), payloads=store
        )
        await producer.send_many(url, [OutgoingMessage(json.loads(body), "blob")])


async def _object_gone(aws: Aws, bucket: str, key: str) -> bool:
    return not await asyncio.to_thread(s3_object_exists, aws.endpoint, bucket, key)


async def test_a_message_sent_to_one_queue_by_the_producer_has_its_object_deleted_after(
    aws: Aws, bucket: str
) -> None:
    queue = await aws.queue()
    body = json.dumps({"data": "é" * (BIG // 2)})
    await _send_by_producer(aws, bucket, queue.url, body)
    bucket_name, key, _ = await _pointer_of_the_only_message(aws, queue.url)
    seen: list[Message] = []
    async with running(settings_for(aws.endpoint, queue), collecting_router(seen)):
        await eventually(lambda: len(seen) == 1, timeout=20)
        await eventually(lambda: _empty(aws, queue.url), timeout=10)
        await eventually(lambda: _object_gone(aws, bucket_name, key), timeout=10)
    (message,) = seen
    assert json.loads(message.body) == json.loads(body)  # the stored body, not the pointer
    assert "ExtendedPayloadSize" not in message.attributes  # the reserved attribute is hidden


async def test_a_reference_client_message_runs_with_its_full_body_and_its_object_is_kept(
    aws: Aws, bucket: str
) -> None:
    # Another writer's object does not say this message is its only reader (the same
    # object may be a topic's, delivered raw to several queues): a lifecycle rule collects it.
    queue = await aws.queue()
    body = json.dumps({"data": "é" * (BIG // 2)})
    await _send_by_reference(aws, bucket, queue.url, body)
    bucket_name, key, _ = await _pointer_of_the_only_message(aws, queue.url)
    seen: list[Message] = []
    async with running(settings_for(aws.endpoint, queue), collecting_router(seen)):
        await eventually(lambda: len(seen) == 1, timeout=20)
        await eventually(lambda: _empty(aws, queue.url), timeout=10)
        await asyncio.sleep(1)
    (message,) = seen
    assert message.body == body  # the stored body, not the pointer
    assert "ExtendedPayloadSize" not in message.attributes  # the reserved attribute is hidden
    assert await asyncio.to_thread(s3_object_exists, aws.endpoint, bucket_name, key)


async def test_a_fanned_out_body_is_kept_for_every_subscriber_raw_or_enveloped(aws: Aws, bucket: str) -> None:
    # One topic, two queues: one with raw delivery, one enveloped (the shipped example
    # topology). The raw copy looks like a direct send; handling it first must not delete
    # the object the enveloped copy still needs.
    raw_queue, enveloped_queue = await aws.queue(max_receive_count=2), await aws.queue(max_receive_count=2)
    topic = (await aws.sns.create_topic(Name=f"t-{uuid.uuid4().hex[:10]}"))["TopicArn"]
    for q, raw in ((raw_queue, "true"), (enveloped_queue, "false")):
        await aws.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=q.arn, Attributes={"RawMessageDelivery": raw}
        )
    body = {"data": "x" * 300_000}  # over SNS's 256 KiB: offloaded
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        producer = Producer(AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket), payloads=store)
        await producer.publish_many(topic, [OutgoingMessage(body, "blob")])
    for q in (raw_queue, enveloped_queue):  # the raw copy first, to the end, then the other
        seen: list[Message] = []
        async with running(settings_for(aws.endpoint, q), collecting_router(seen)):
            await eventually(lambda seen=seen: len(seen) == 1, timeout=20)
            await eventually(lambda q=q: _empty(aws, q.url), timeout=10)
            await asyncio.sleep(1)  # (a discard would have been sent by now)
        assert json.loads(seen[0].body) == body
        assert q.dlq_url
        assert await aws.total(q.dlq_url) == 0
        payload = seen[0].payload
        assert payload is not None
        assert await asyncio.to_thread(s3_object_exists, aws.endpoint, payload.bucket, payload.key)


async def test_through_an_sns_envelope_the_body_is_resolved_and_the_shared_object_kept(
    aws: Aws, bucket: str
) -> None:
    queue = await aws.queue()
    topic = (await aws.sns.create_topic(Name=f"t-{uuid.uuid4().hex[:10]}"))["TopicArn"]
    await aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue.arn)
    body = {"data": "x" * 300_000}  # over SNS's 256 KiB: offloaded
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        producer = Producer(AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket), payloads=store)
        await producer.publish_many(topic, [OutgoingMessage(body, "blob")])
    seen: list[Message] = []
    async with running(settings_for(aws.endpoint, queue), collecting_router(seen)):
        await eventually(lambda: len(seen) == 1, timeout=20)
        await eventually(lambda: _empty(aws, queue.url), timeout=10)
        await asyncio.sleep(1)
    (message,) = seen
    assert json.loads(message.body) == body
    assert message.payload is not None
    # One object fans out to every subscribed queue: the worker never deletes it.
    assert await asyncio.to_thread(
        s3_object_exists, aws.endpoint, message.payload.bucket, message.payload.key
    )


async def test_a_delete_confirmed_after_the_visibility_ran_out_keeps_the_body_for_a_redelivery(
    aws: Aws, bucket: str, proxy: Proxy
) -> None:
    # An outage of deletes and extensions outlasts the visibility; the delete goes through
    # only afterwards. SQS may then answer success without deleting (a receipt handle older
    # than the latest delivery's), so the object stays for the redelivery: deleting it would
    # leave that delivery without its body.
    await outage.begin(proxy)
    queue = await aws.queue(visibility=2)
    await _send_by_producer(aws, bucket, queue.url, json.dumps({"data": "z" * 300_000}))
    bucket_name, key, message_id = await _pointer_of_the_only_message(aws, queue.url)
    seen: list[Message] = []
    cfg = settings_for(proxy.url, queue, **outage.SHORT_LEASES)
    async with running(cfg, collecting_router(seen)) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: len(seen) == 1, timeout=20)
        await outage.deletes_land_after_the_visibility(proxy)
        await eventually(lambda: consumer.in_flight == 0, timeout=20)  # the delete confirmed
        assert consumer.counters.delete_failed == 0
        assert message_id in consumer.acker.deliveries._unsure  # remembered: a redelivery is deleted
        await asyncio.sleep(1)
        assert await asyncio.to_thread(s3_object_exists, aws.endpoint, bucket_name, key)
        await asyncio.to_thread(proxy.faults)
    assert len(seen) == 1
    assert await _empty(aws, queue.url)  # (LocalStack honours an old receipt handle)


@pytest.mark.parametrize("ignore_missing", [False, True])
async def test_a_missing_object_is_rejected_with_its_reason_or_skipped_when_configured(
    aws: Aws, bucket: str, ignore_missing: bool
) -> None:
    queue = await aws.queue(max_receive_count=3)
    assert queue.dlq_url
    await _send_by_reference(aws, bucket, queue.url, json.dumps({"data": "y" * 300_000}))
    bucket_name, key, message_id = await _pointer_of_the_only_message(aws, queue.url)
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        await (await store.client()).call("delete_object", Bucket=bucket_name, Key=key)
    seen: list[Message] = []
    settings = settings_for(aws.endpoint, queue, payloads={"ignore_missing": ignore_missing})
    async with running(settings, collecting_router(seen)):
        await eventually(lambda: _empty(aws, queue.url), timeout=20)
        await asyncio.sleep(1)
    assert seen == []  # the handler never ran
    dead = await aws.drain(queue.dlq_url)
    if ignore_missing:
        assert dead == []
    else:
        (moved,) = dead
        attrs = moved.get("MessageAttributes", {})
        assert attrs["worker.original_message_id"]["StringValue"] == message_id
        assert "does not exist" in attrs["worker.failure_reason"]["StringValue"]


async def _empty(aws: Aws, url: str) -> bool:
    return await aws.total(url) == 0
