"""The payload store against LocalStack's S3: objects put, fetched and deleted; a received
message's pointer resolved (type from the stored body included), a missing object rejected or
skipped as configured, and the object deleted after success only when it should be."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Aws
from worker.messages.envelope import parse_message
from worker.messages.outcomes import PermanentFailure
from worker.messages.payload_store import PayloadMissing, PayloadStore
from worker.messages.payloads import PayloadPointer, pointer_attribute, pointer_body
from worker.settings import AwsSettings, PayloadSettings
from worker.testing import sns_message


def aws_settings(endpoint: str) -> AwsSettings:
    return AwsSettings(endpoint_url=endpoint, region="us-east-1")


@pytest.fixture(scope="session")
async def bucket(endpoint: str) -> str:
    name = f"payloads-{uuid.uuid4().hex[:12]}"
    async with PayloadStore.connect(aws_settings(endpoint)) as store:
        await (await store.client()).call("create_bucket", Bucket=name)
    return name


@pytest.fixture
async def store(endpoint: str, bucket: str) -> AsyncIterator[PayloadStore]:
    settings = PayloadSettings(bucket=bucket, prefix="payloads/")
    async with PayloadStore.connect(aws_settings(endpoint), settings) as s:
        yield s


def offloaded(pointer: PayloadPointer, **attributes: str) -> dict[str, object]:
    assert pointer.size is not None
    attrs = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "rh",
        "Body": pointer.body(),
        "MessageAttributes": {**attrs, **pointer_attribute(pointer.size)},
    }


async def test_put_fetch_delete(store: PayloadStore, bucket: str) -> None:
    body = "é" * 300_000
    pointer = await store.put(body)
    assert pointer.bucket == bucket
    assert pointer.key.startswith("payloads/")
    assert pointer.size == 600_000
    assert (await store.fetch(pointer))[0].decode() == body
    await store.delete(pointer)
    with pytest.raises(PayloadMissing, match="does not exist"):
        await store.fetch(pointer)
    await store.delete(pointer)  # gone already: no error
    with pytest.raises(PayloadMissing):
        await store.fetch(PayloadPointer(f"no-such-bucket-{uuid.uuid4().hex[:8]}", "k"))


async def test_resolve_replaces_the_body_and_finds_the_type_in_it(store: PayloadStore) -> None:
    body = json.dumps({"type": "report.ready", "rows": ["x" * 100] * 5000})
    message = parse_message(offloaded(await store.put(body)))
    assert message.type is None
    resolved = await store.resolve(message)
    assert resolved is not None
    assert resolved.body == body
    assert resolved.type == "report.ready"
    assert resolved.payload == message.payload
    assert "ExtendedPayloadSize" not in resolved.attributes
    typed = parse_message(offloaded(await store.put(body), type="from.attribute"))
    assert (await store.resolve(typed)).type == "from.attribute"  # type: ignore[union-attr]
    plain = parse_message({"MessageId": "1", "ReceiptHandle": "r", "Body": "{}"})
    assert await store.resolve(plain) is plain


async def test_a_missing_object_is_rejected_or_skipped(endpoint: str, store: PayloadStore) -> None:
    pointer = await store.put("gone soon")
    message = parse_message(offloaded(pointer))
    await store.delete(pointer)
    with pytest.raises(PermanentFailure, match=r"s3://.*does not exist"):
        await store.resolve(message)
    lenient = PayloadSettings(ignore_missing=True)
    async with PayloadStore.connect(aws_settings(endpoint), lenient) as skipping:
        assert await skipping.resolve(message) is None


async def test_a_reserved_attribute_without_a_pointer_is_rejected(store: PayloadStore) -> None:
    raw = {
        "MessageId": "1",
        "ReceiptHandle": "r",
        "Body": '{"not": "a pointer"}',
        "MessageAttributes": pointer_attribute(10),
    }
    with pytest.raises(PermanentFailure, match="ExtendedPayloadSize marks an offloaded payload"):
        await store.resolve(parse_message(raw))


async def test_not_utf8_is_rejected(store: PayloadStore) -> None:
    pointer = await store.put(b"\xff\xfe")
    with pytest.raises(PermanentFailure, match="not UTF-8"):
        await store.resolve(parse_message(offloaded(pointer)))


async def test_discard_deletes_only_what_it_should(endpoint: str, store: PayloadStore, bucket: str) -> None:
    # Stored for one message sent to one queue (its object says so): its reader may delete it.
    direct = await store.resolve(parse_message(offloaded(await store.put("a", readers="one"))))
    assert direct is not None
    assert store.should_discard(direct)
    assert await store.discard(direct)
    assert direct.payload is not None
    with pytest.raises(PayloadMissing):
        await store.fetch(direct.payload)
    # Published to a topic (raw delivery: no envelope), or written by another producer: the
    # object does not say this message is its only reader, so it stays.
    for readers in ("many", None):
        kept = await store.resolve(parse_message(offloaded(await store.put("c", readers=readers))))
        assert kept is not None
        assert kept.payload is not None
        assert not kept.payload.sole_reader
        assert not store.should_discard(kept)
        assert not await store.discard(kept)
        assert (await store.fetch(kept.payload))[0] == b"c"
    # Unresolved (never fetched): not known to be the only reader.
    assert not store.should_discard(parse_message(offloaded(await store.put("d", readers="one"))))
    # Through an SNS envelope: other subscribers may still need the object.
    pointer = await store.put("b", readers="one")
    envelope = json.loads(str(sns_message(pointer_body(pointer.bucket, pointer.key))["Body"]))
    envelope["MessageAttributes"]["ExtendedPayloadSize"] = {"Type": "Number", "Value": "1"}
    fanned = parse_message({"MessageId": "2", "ReceiptHandle": "r", "Body": json.dumps(envelope)})
    assert fanned.payload == PayloadPointer(pointer.bucket, pointer.key, 1)
    assert not store.should_discard(fanned)
    assert not await store.discard(fanned)
    assert (await store.fetch(pointer))[0] == b"b"
    keep = PayloadSettings(delete_after_success=False)
    async with PayloadStore.connect(aws_settings(endpoint), keep) as keeping:
        assert not await keeping.discard(parse_message(offloaded(pointer)))
    assert not await store.discard(parse_message({"MessageId": "3", "ReceiptHandle": "r", "Body": "{}"}))


async def test_a_failed_delete_is_logged_not_raised(store: PayloadStore) -> None:
    message = parse_message(offloaded(PayloadPointer(f"no-such-bucket-{uuid.uuid4().hex[:8]}", "k", 1)))
    assert not await store.discard(message)


async def test_put_needs_a_bucket(endpoint: str) -> None:
    async with PayloadStore.connect(aws_settings(endpoint)) as store:
        with pytest.raises(ValueError, match="no bucket"):
            await store.put("x")


async def test_an_sqs_message_read_back_from_localstack(aws: Aws, store: PayloadStore) -> None:
    queue = await aws.queue()
    body = json.dumps({"type": "big", "blob": "x" * 2_000_000})
    pointer = await store.put(body)
    assert pointer.size is not None
    await aws.sqs.send_message(
        QueueUrl=queue.url, MessageBody=pointer.body(), MessageAttributes=pointer_attribute(pointer.size)
    )
    [raw] = await aws.drain(queue.url)
    resolved = await store.resolve(parse_message(raw))
    assert resolved is not None
    assert (resolved.type, len(resolved.body)) == ("big", len(body))


async def test_dlq_show_names_where_an_offloaded_body_is(aws: Aws, store: PayloadStore) -> None:
    from worker.aws import AwsClient
    from worker.ops import dlq

    queue = await aws.queue()
    pointer = await store.put("z" * 400_000)
    assert pointer.size is not None
    await aws.sqs.send_message(
        QueueUrl=queue.url, MessageBody=pointer.body(), MessageAttributes=pointer_attribute(pointer.size)
    )
    [shown] = await dlq.peek(AwsClient(aws.sqs), queue.url)
    assert (shown.size, shown.excerpt) == (400_000, f"(in S3: {pointer.uri})")
