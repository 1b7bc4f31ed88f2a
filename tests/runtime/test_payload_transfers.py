"""Offloaded bodies go through aioboto3's S3 transfer: a big one up as a multipart upload
and back through the worker byte for byte, a small one as a single PUT; a transfer is
retried whole by AwsClient's policy, from a fresh stream (against LocalStack's SQS and S3,
and a stand-in client for the failures)."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, Router
from worker.aws import AwsClient
from worker.messages.payload_store import PART, PayloadMissing, PayloadStore, Transfers
from worker.messages.payloads import READERS_METADATA, PayloadPointer, parse_pointer
from worker.producer import Offload, OutgoingMessage, Producer
from worker.settings import AwsSettings

MiB = 1_048_576


@pytest.fixture
async def store(aws: Aws) -> AsyncIterator[PayloadStore]:
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as s:
        yield s


@pytest.fixture
async def bucket(store: PayloadStore) -> str:
    name = f"transfers-{uuid.uuid4().hex[:12]}"
    await (await store.client()).call("create_bucket", Bucket=name)
    return name


async def test_a_20_mib_body_goes_up_in_parts_and_comes_back_whole_through_the_worker(
    aws: Aws, store: PayloadStore, bucket: str
) -> None:
    queue = await aws.queue()
    body = json.dumps({"data": os.urandom(10 * MiB).hex()})  # 20 MiB: no two parts alike
    producer = Producer(
        AwsClient(aws.sqs), AwsClient(aws.sns), offload=Offload(bucket, always=True), payloads=store
    )
    await producer.send_many(queue.url, [OutgoingMessage(body, "blob")])

    r = await aws.sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=2, VisibilityTimeout=0)
    pointer = parse_pointer(r["Messages"][0]["Body"])
    assert pointer is not None
    s3 = await store.client()
    head = await s3.call("head_object", Bucket=pointer.bucket, Key=pointer.key)
    parts = -(-len(body) // PART)
    assert parts == 3
    assert head["ETag"].strip('"').endswith(f"-{parts}")  # a multipart upload's ETag
    first = await s3.call("head_object", Bucket=pointer.bucket, Key=pointer.key, PartNumber=1)
    assert (first["PartsCount"], first["ContentLength"]) == (parts, PART)
    assert head["Metadata"] == {READERS_METADATA: "one"}  # the user metadata went up with it

    # The store reads it back through the ranged download (a size it does not know).
    data, metadata = await store.fetch(PayloadPointer(pointer.bucket, pointer.key))
    assert (data == body.encode(), metadata) == (True, {READERS_METADATA: "one"})
    assert (await store.transfers()).calls["download"] == 1

    seen: list[Message] = []
    router = Router()

    @router.handler("blob")
    async def blob(message: Message) -> None:
        seen.append(message)

    async with running(settings_for(aws.endpoint, queue), router):
        await eventually(lambda: len(seen) == 1, timeout=60)
        await eventually(lambda: _gone(s3, pointer), timeout=20)  # its only reader: deleted
    (message,) = seen
    assert message.body.encode() == body.encode()
    assert message.payload is not None
    assert message.payload.size == len(body)
    assert await aws.total(queue.url) == 0


async def test_a_small_body_is_a_single_put(store: PayloadStore, bucket: str) -> None:
    pointer = await store.put("x" * 300_000, bucket=bucket, readers="one")
    s3 = await store.client()
    head = await s3.call("head_object", Bucket=bucket, Key=pointer.key)
    assert "-" not in head["ETag"]  # not a multipart upload's
    assert (head["ContentLength"], head["Metadata"]) == (300_000, {READERS_METADATA: "one"})
    assert (await store.transfers()).calls["upload"] == 1
    assert await store.fetch(pointer) == (b"x" * 300_000, {READERS_METADATA: "one"})
    await store.delete(pointer)
    with pytest.raises(PayloadMissing):  # the download's HEAD: missing all the same
        await store.fetch(PayloadPointer(bucket, pointer.key))


async def _gone(s3: AwsClient, pointer: PayloadPointer) -> bool:
    try:
        await s3.call("head_object", Bucket=pointer.bucket, Key=pointer.key)
    except ClientError:
        return True
    return False


class FlakyS3:
    """Fails the first transfer of each kind with a throttling error, then does as S3 would."""

    def __init__(self) -> None:
        self.uploaded: list[bytes] = []
        self.failed: set[str] = set()

    def _fail_once(self, kind: str) -> None:
        if kind not in self.failed:
            self.failed.add(kind)
            raise ClientError({"Error": {"Code": "SlowDown"}}, kind)

    async def upload_fileobj(self, stream: io.BytesIO, bucket: str, key: str, **_: Any) -> None:
        data = stream.read()  # (a reused stream would have nothing left to give)
        self._fail_once("upload")
        self.uploaded.append(data)

    async def download_fileobj(self, bucket: str, key: str, buffer: io.BytesIO, **_: Any) -> None:
        buffer.write(b"part")
        try:
            self._fail_once("download")
        except ClientError as exc:  # as aioboto3 reports a ranged GET's error
            raise Exception(f"Couldn't download file from {bucket}/{key}") from exc
        buffer.write(b"s")


async def test_a_transfer_is_retried_whole_by_the_one_policy() -> None:
    s3 = FlakyS3()
    transfers = AwsClient(Transfers(s3), retry_for=30)
    await transfers.call("upload", Bucket="b", Key="k", Body=b"0123456789")
    assert s3.uploaded == [b"0123456789"]
    assert (await transfers.call("download", Bucket="b", Key="k"))["Body"] == b"parts"  # not "partparts"
    assert transfers.calls == {"upload": 2, "download": 2}
    # A part's error surfaces as itself (not aioboto3's bare Exception): its code counts.
    with pytest.raises(ClientError, match="SlowDown"):
        await AwsClient(Transfers(FlakyS3()), retry_for=0).call("download", Bucket="b", Key="k")
