"""Offloaded bodies in S3: fetch, put and delete them (aioboto3's S3 transfer, the worker's AWS chain).

The worker's side, per received message (``Message.payload`` set by ``parse_message``)::

    async with PayloadStore.connect(settings.aws, settings.payloads) as store:
        resolved = await store.resolve(message)   # before the handler
        if resolved is None: ...                  # object gone, ignore_missing: delete, no handler
        ...                                       # handler runs with resolved.body
        await store.discard(message)              # after the message's delete was confirmed

The producer's side is ``put``. The S3 client is opened on first use, so a worker that never
meets an offloaded message never talks to S3. Credentials, region and endpoint come from
the same chain as SQS's (``AwsSettings``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``).

Bodies go up through aioboto3's ``upload_fileobj``: one PUT under ``PART`` (8 MiB), else a
multipart upload of 8 MiB parts, ``PARTS_AT_ONCE`` in flight (the extended client's 2 GB is
256 parts). One announced under ``PART`` comes down in one GET (its user metadata with it);
a bigger one, or one of unknown size, through ``download_fileobj``: ranged GETs as many at
once, pinned to the ETag a HEAD read with the metadata, into one buffer. A transfer is one
operation to AwsClient's retry policy (botocore's are off, as for every client): a
transient error in any part starts it over, from a fresh stream or into a fresh buffer. A
failed multipart upload is aborted; one cancelled midway leaves its parts to the bucket's
``AbortIncompleteMultipartUpload`` lifecycle rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from aiobotocore.config import AioConfig
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.exceptions import ClientError

from worker.aws import AwsClient, error_code
from worker.messages.envelope import Message, with_body
from worker.messages.outcomes import PermanentFailure
from worker.messages.payloads import READERS_METADATA, PayloadPointer, reserved_attribute
from worker.messages.types import DEFAULT_RULES, TypeRules
from worker.observe.logs import get_logger
from worker.settings import AwsSettings, PayloadSettings

MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
PART = 8 * 1024 * 1024
"""Bodies of this size or more are transferred in parts of this size."""
PARTS_AT_ONCE = 8
"""Parts in flight per transfer (and parts read ahead of them, per upload)."""
TRANSFER = TransferConfig(
    multipart_threshold=PART,
    multipart_chunksize=PART,
    max_concurrency=PARTS_AT_ONCE,
    max_io_queue=PARTS_AT_ONCE,
    io_chunksize=PART,
)
log = get_logger()


class PayloadMissing(PermanentFailure):
    """The object a pointer names does not exist (deleted, expired, never written)."""


@contextlib.asynccontextmanager
async def s3_client(
    aws: AwsSettings,
    *,
    path_style: bool | None = None,
    pool_size: int = 16,
    read_timeout: float = 60.0,
    retry_for: float | None = 120.0,
) -> AsyncIterator[AwsClient]:
    """An S3 client for ``aws``, built as ``worker.aws.aws_client`` builds the others (one
    retry policy: AwsClient's), with S3's addressing style: path-style when asked, or by
    default when a custom endpoint is set (LocalStack and MinIO need it for most names)."""
    endpoint = aws.resolved_endpoint("s3")
    style = path_style if path_style is not None else endpoint is not None
    config = AioConfig(
        max_pool_connections=pool_size,
        connect_timeout=aws.connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path" if style else "auto"},
    )
    async with aioboto3.Session().client(
        "s3", region_name=aws.resolved_region(), endpoint_url=endpoint, config=config
    ) as client:
        yield AwsClient(client, retry_for=retry_for)


class Transfers:
    """aioboto3's managed transfers as operations for ``AwsClient.call`` (which retries an
    operation with the same arguments): each attempt reads from a fresh stream or writes
    into a fresh buffer."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def upload(self, *, Body: bytes, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        await self.client.upload_fileobj(io.BytesIO(Body), Bucket, Key, ExtraArgs=extra, Config=TRANSFER)
        return {}

    async def download(self, *, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        buffer = io.BytesIO()
        try:
            await self.client.download_fileobj(Bucket, Key, buffer, ExtraArgs=extra, Config=TRANSFER)
        except Exception as exc:
            # aioboto3 hides a part's ClientError behind a bare Exception: the retry policy
            # and the missing-object check need its code.
            if type(exc) is Exception and isinstance(exc.__cause__, ClientError):
                raise exc.__cause__ from None
            raise
        return {"Body": buffer.getvalue()}  # the buffer's own bytes, not a copy


class PayloadStore:
    """Offloaded bodies: ``fetch``/``put``/``delete`` objects, ``resolve`` a received
    message's pointer, ``discard`` its object after success (as configured)."""

    def __init__(
        self,
        s3: AwsClient | None = None,
        settings: PayloadSettings | None = None,
        *,
        aws: AwsSettings | None = None,
        retry_for: float | None = 120.0,
    ) -> None:
        """``s3``: a client to use (an aioboto3 one: its transfers are used); else one is
        opened from ``aws`` on first use (and closed by ``close``; ``connect`` does both)."""
        self.settings = settings or PayloadSettings()
        self._s3 = s3
        self._transfers: AwsClient | None = None
        self._aws = aws or AwsSettings()
        self._retry_for = retry_for
        self._stack = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        aws: AwsSettings | None = None,
        settings: PayloadSettings | None = None,
        *,
        retry_for: float | None = 120.0,
    ) -> AsyncIterator[PayloadStore]:
        store = cls(settings=settings, aws=aws, retry_for=retry_for)
        try:
            yield store
        finally:
            await store.close()

    async def close(self) -> None:
        await self._stack.aclose()

    async def client(self) -> AwsClient:
        if self._s3 is None:
            async with self._opening:
                if self._s3 is None:
                    self._s3 = await self._stack.enter_async_context(
                        s3_client(self._aws, path_style=self.settings.path_style, retry_for=self._retry_for)
                    )
        return self._s3

    async def transfers(self) -> AwsClient:
        """``Transfers`` over the S3 client, with its retry policy."""
        if self._transfers is None:
            s3 = await self.client()
            self._transfers = AwsClient(Transfers(s3.client), s3.on_call, s3.retry_for)
        return self._transfers

    # -- objects -------------------------------------------------------------------------
    async def fetch(self, pointer: PayloadPointer) -> tuple[bytes, dict[str, str]]:
        """The stored body and its user metadata. PayloadMissing when the object (or its
        bucket) does not exist."""
        s3 = await self.client()
        where: dict[str, Any] = {"Bucket": pointer.bucket, "Key": pointer.key}
        try:
            if pointer.size is not None and pointer.size < PART:
                response = await s3.call("get_object", **where)
                async with response["Body"] as stream:
                    data: bytes = await stream.read()
            else:
                response = await s3.call("head_object", **where)
                got = await (await self.transfers()).call("download", **where, IfMatch=response["ETag"])
                data = got["Body"]
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                raise PayloadMissing(
                    f"offloaded payload {pointer.uri} does not exist ({error_code(exc)}); "
                    "deleted after an earlier delivery, expired by a lifecycle rule, or never written"
                ) from None
            raise
        return data, dict(response.get("Metadata") or {})

    async def put(
        self,
        body: str | bytes,
        *,
        bucket: str | None = None,
        key: str | None = None,
        legacy: bool = False,
        readers: str | None = None,
    ) -> PayloadPointer:
        """Store ``body`` (UTF-8) at ``bucket`` (default: the configured one) under ``key``
        (default: the configured prefix + a UUID); the pointer to it."""
        target = bucket or self.settings.bucket
        if not target:
            raise ValueError("no bucket to offload to: set payloads.bucket (or pass bucket=)")
        data = body.encode("utf-8") if isinstance(body, str) else body
        name = key or f"{self.settings.prefix}{uuid.uuid4()}"
        extra: dict[str, Any] = {"Metadata": {READERS_METADATA: readers}} if readers else {}
        await (await self.transfers()).call("upload", Bucket=target, Key=name, Body=data, **extra)
        return PayloadPointer(target, name, len(data), legacy=legacy)

    async def delete(self, pointer: PayloadPointer) -> None:
        """Delete the object (a missing one is no error: S3 answers 204 all the same)."""
        s3 = await self.client()
        await s3.call("delete_object", Bucket=pointer.bucket, Key=pointer.key)

    # -- the worker's two steps ----------------------------------------------------------
    async def resolve(self, message: Message, rules: TypeRules = DEFAULT_RULES) -> Message | None:
        """``message`` with its stored body (and the type that body gives by the queue's
        ``rules``, when nothing else gave one); ``message`` itself when it was not offloaded.

        A missing object raises PayloadMissing (a PermanentFailure: rejected with the
        reason), or, with ``ignore_missing``, returns None: the caller deletes the message
        without running a handler. A reserved attribute without a valid pointer body, or a
        stored body that is not UTF-8, is a PermanentFailure. S3 errors other than a missing
        object (access denied, throttling past the retries) propagate: a failure, retried."""
        pointer = message.payload
        if pointer is None:
            name = reserved_attribute(message.attributes)
            if name is not None:
                raise PermanentFailure(
                    f"message attribute {name} marks an offloaded payload but the body is not an "
                    f"S3 pointer: {message.body[:120]!r}"
                )
            return message
        try:
            data, metadata = await self.fetch(pointer)
        except PayloadMissing as exc:
            if not self.settings.ignore_missing:
                raise
            log.warning(
                "payload_missing_skipped", message_id=message.message_id, payload=pointer.uri, reason=str(exc)
            )
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PermanentFailure(
                f"offloaded payload {pointer.uri} is not UTF-8 text ({exc.reason})"
            ) from None
        if pointer.size is not None and pointer.size != len(data):
            log.warning(
                "payload_size_mismatch",
                message_id=message.message_id,
                payload=pointer.uri,
                announced=pointer.size,
                stored=len(data),
            )
        sole = metadata.get(READERS_METADATA) == "one" and message.topic_arn is None
        if sole:
            pointer = dataclasses.replace(pointer, sole_reader=True)
        return dataclasses.replace(with_body(message, text, rules), payload=pointer)

    def should_discard(self, message: Message) -> bool:
        """Whether this message's object may be deleted once the message was handled and
        its delete confirmed: configured to, and the message provably its only reader (its
        object was stored for one message sent to one queue, ``READERS_METADATA``; it did
        not come through SNS). A topic's copies, raw or enveloped, share one object, and a
        message from another writer says nothing: those are left to a lifecycle rule."""
        pointer = message.payload
        return (
            pointer is not None
            and pointer.sole_reader
            and self.settings.delete_after_success
            and message.topic_arn is None
        )

    async def discard(self, message: Message) -> bool:
        """Delete ``message``'s object when ``should_discard`` (after its delete was
        confirmed). Never raises (the message is gone either way); a failure is logged
        (``payload_delete_failed``) and leaves the object to a lifecycle rule. True when an
        object was deleted."""
        if not self.should_discard(message):
            return False
        assert message.payload is not None
        try:
            await self.delete(message.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "payload_delete_failed",
                message_id=message.message_id,
                payload=message.payload.uri,
                error=error_code(exc),
                detail=str(exc)[:200],
            )
            return False
        return True
