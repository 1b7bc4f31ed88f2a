"""Sending and publishing typed messages: the API the CLI uses and applications can import.

    async with Producer.connect() as producer:
        await producer.send("billing", OrderPlaced(...), message_type="order.placed")
        result = await producer.send_many("billing", [OutgoingMessage(...), ...])
        await producer.publish("orders", OrderPlaced(...), message_type="order.placed")
        await producer.send_many("jobs", [OutgoingMessage(job, "job.run") for job in jobs], group_by="tenant")

Bodies are pydantic models (serialised to JSON), dicts/lists (JSON) or strings. The message
type goes into the ``type`` attribute, which the worker dispatches on and SNS filter
policies can match. Batches of ten are formed automatically; entries that fail inside a
batch for a server-side reason are retried, the others are reported, each with its index.

A group id (``OutgoingMessage.group_id``, or ``group_by=`` for a batch) is required by FIFO
queues and topics and optional on standard ones: there it names the message's tenant, and SQS
fair queues keep one tenant's backlog from delaying the others (a standard topic passes it on
to the standard queues subscribed to it). A deduplication id is for FIFO destinations only.

Sizes are counted as SQS and SNS count them (body plus attribute names, types and values).
A message over what its destination accepts (1 MiB for SQS, 256 KiB for SNS) is refused
before any call, unless offloading is configured: with ``offload=Offload(bucket)`` a body
over the threshold (default 256 KiB; or every body) is stored in S3 and the message carries
a pointer in the Amazon SQS/SNS Extended Client format, which the worker and the reference
clients (Java, Python) read::

    async with Producer.connect(aws, offload=Offload("my-bucket", prefix="payloads/")) as producer:
        await producer.send("billing", huge_report, message_type="report.ready")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

from botocore.exceptions import ClientError

from worker.aws import MISSING_QUEUE, AwsClient, aws_client, error_code, list_topics
from worker.errors import EXIT_FAILED, EXIT_NOT_FOUND, ConfigError, NotFoundError
from worker.messages.envelope import IDEMPOTENCY_KEY_ATTRIBUTE
from worker.messages.payloads import (
    DEFAULT_THRESHOLD,
    MAX_ATTRIBUTES,
    RESERVED_ATTRIBUTES,
    SNS_MAX_BYTES,
    SQS_MAX_BYTES,
    PayloadPointer,
    message_bytes,
    pointer_attribute,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    # Imported where used: sending without offloading needs neither the S3 store (aioboto3)
    # nor the settings models (the ``worker send`` command builds its clients without them).
    from worker.messages.payload_store import PayloadStore
    from worker.settings import AwsSettings, PayloadSettings

MAX_BYTES = SQS_MAX_BYTES
"""The most SQS accepts in one message (SNS: ``SNS_MAX_BYTES``)."""
UPLOADS = 8
"""Offloaded bodies stored in S3 at once."""
BATCH = 10
RETRIES = 3


class ProducerError(ConfigError):
    """Bad input; nothing was sent for it."""


class DestinationNotFound(ProducerError, NotFoundError):
    """The queue or topic does not exist; nothing was sent."""

    exit_code = EXIT_NOT_FOUND


class SendFailed(ProducerError):
    """SQS or SNS did not accept the message."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class OutgoingMessage:
    body: BaseModel | dict[str, Any] | list[Any] | str
    message_type: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    group_id: str | None = None
    """MessageGroupId. FIFO: the ordered group (required). Standard queues and topics: the
    tenant the message belongs to, for SQS fair queues (optional; no ordering)."""
    dedup_id: str | None = None
    """MessageDeduplicationId (FIFO queues and topics only)."""
    delay: int | None = None
    subject: str | None = None  # SNS only
    structure_json: bool = False  # SNS only: body is {"default": ..., "sqs": ...}
    idempotency_key: str | None = None
    """The ``idempotency-key`` attribute: what makes two sends one effect for an idempotent
    handler (an order id, a request id). Default: a new UUID per message, so a send the
    producer retries is still one effect."""


@dataclass(frozen=True)
class Offload:
    """Where and when bodies go to S3 (the extended-client format)."""

    bucket: str
    prefix: str = ""
    """Key prefix; the key is prefix + a UUID."""
    threshold: int = DEFAULT_THRESHOLD
    """Bytes (body plus attributes) above which a body is offloaded; SNS messages are
    offloaded above 256 KiB whatever this says."""
    always: bool = False
    """Offload every body, whatever its size."""
    legacy: bool = False
    """Write the legacy names (``SQSLargePayloadSize``, ``MessageS3Pointer``) for old readers."""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ProducerError("offloading needs a bucket")
        if not 0 <= self.threshold <= SQS_MAX_BYTES:
            raise ProducerError(f"offload threshold must be 0-{SQS_MAX_BYTES} bytes, not {self.threshold}")

    @classmethod
    def from_settings(cls, payloads: PayloadSettings) -> Offload | None:
        """The offloading ``payloads:`` configures (None when it names no bucket)."""
        if not payloads.bucket:
            return None
        return cls(payloads.bucket, payloads.prefix, payloads.threshold, payloads.offload == "always")


@dataclass
class _Pending:
    """An entry checked and ready, with the body still to be offloaded (if any)."""

    entry: dict[str, Any]
    body_key: str
    offload: str | None = None


@dataclass
class Failure:
    index: int
    code: str
    message: str


@dataclass
class BatchResult:
    sent: list[str] = field(default_factory=list)
    """Message ids, in input order of the successful entries."""
    failed: list[Failure] = field(default_factory=list)


GroupBy: TypeAlias = str | Callable[[Any], str | None]
"""How a batch's messages get their group id: a field of each body (a dict key or a model
attribute, its value a string or an integer), or a function of the body (None: no group)."""


def _is_model(body: object) -> TypeGuard[BaseModel]:
    """Whether ``body`` is a pydantic model. pydantic is not imported for it: a body can only
    be a model once pydantic is (``worker send`` sends text and needs none of it)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(body, pydantic.BaseModel)


def group_of(body: Any, field_name: str) -> str:
    """The group id a body's field ``field_name`` holds; ValueError (its reason) when the
    body has no such field or its value is not a non-empty string or an integer."""
    if _is_model(body):
        if field_name not in type(body).model_fields:
            raise ValueError(f"the body has no {field_name!r} field")
        value = getattr(body, field_name)
    elif isinstance(body, dict):
        if field_name not in body:
            raise ValueError(f"the body has no {field_name!r} field")
        value = body[field_name]
    else:
        raise ValueError(f"the body is not a JSON object, so it has no {field_name!r} field")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"its {field_name!r} is {json.dumps(value)[:60]}, not a non-empty string or an integer"
        )
    return value


def _grouped(i: int, message: OutgoingMessage, group_by: GroupBy | None) -> OutgoingMessage:
    """``message`` with the group id ``group_by`` gives it (a group id of its own wins)."""
    if group_by is None or message.group_id:
        return message
    if isinstance(group_by, str):
        try:
            group: str | None = group_of(message.body, group_by)
        except ValueError as exc:
            raise ProducerError(f"message {i}: group_by {group_by!r}: {exc}") from None
    else:
        group = group_by(message.body)
        if group is not None and not isinstance(group, str):
            raise ProducerError(
                f"message {i}: group_by returned {type(group).__name__}, not a string or None"
            )
    return message if not group else dataclasses.replace(message, group_id=group)


def encode_body(body: BaseModel | dict[str, Any] | list[Any] | str) -> str:
    if _is_model(body):
        return body.model_dump_json()
    if isinstance(body, str):
        return body
    return json.dumps(body)


def _attributes(
    i: int, message: OutgoingMessage, type_attribute: str, keys: bool, destination: str
) -> dict[str, dict[str, str]]:
    """The message's attributes: its own, its type, its idempotency key and the current
    trace context. The last two (when not asked for explicitly) only while one attribute
    stays free, for the pointer an offloaded body needs: a message never fails for them
    (``_without_extras`` takes them out of a message they would make too large)."""
    attrs = {k: {"DataType": "String", "StringValue": str(v)} for k, v in message.attributes.items()}
    if message.message_type:
        attrs[type_attribute] = {"DataType": "String", "StringValue": message.message_type}
    key = message.idempotency_key
    if key is not None:
        if not key or len(key) > 512:
            raise ProducerError(f"message {i}: idempotency key must be 1-512 characters")
        attrs[IDEMPOTENCY_KEY_ATTRIBUTE] = {"DataType": "String", "StringValue": key}
    elif keys and IDEMPOTENCY_KEY_ATTRIBUTE not in attrs and len(attrs) < MAX_ATTRIBUTES - 1:
        attrs[IDEMPOTENCY_KEY_ATTRIBUTE] = {"DataType": "String", "StringValue": uuid.uuid4().hex}
    if "opentelemetry.trace" in sys.modules:  # else no span can be current
        from worker.observe.tracing import inject

        inject(attrs, destination, limit=MAX_ATTRIBUTES - 1)
    return attrs


class Producer:
    def __init__(
        self,
        sqs: AwsClient,
        sns: AwsClient,
        type_attribute: str = "type",
        *,
        offload: Offload | None = None,
        payloads: PayloadStore | None = None,
        idempotency_keys: bool = True,
    ) -> None:
        """``offload``: store bodies in S3 as configured, through ``payloads`` (default: a
        store opened from the standard AWS chain on first use; close it, or use
        ``connect``). ``idempotency_keys``: give every message without one a new
        ``idempotency-key`` (``OutgoingMessage.idempotency_key``)."""
        self.idempotency_keys = idempotency_keys
        self.sqs = sqs
        self.sns = sns
        self.type_attribute = type_attribute
        self.offload = offload
        if payloads is None and offload is not None:
            from worker.messages.payload_store import PayloadStore

            payloads = PayloadStore()
        self.payloads = payloads
        self._queue_urls: dict[str, str] = {}
        self._topic_arns: dict[str, str] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        aws: AwsSettings | None = None,
        *,
        offload: Offload | None = None,
        path_style: bool | None = None,
    ) -> AsyncIterator[Producer]:
        from worker.messages.payload_store import PayloadStore
        from worker.settings import AwsSettings, PayloadSettings

        aws = aws or AwsSettings()
        async with (
            aws_client("sqs", aws) as sqs,
            aws_client("sns", aws) as sns,
            PayloadStore.connect(aws, PayloadSettings(path_style=path_style)) as payloads,
        ):
            yield cls(sqs, sns, offload=offload, payloads=payloads)

    # -- destinations --------------------------------------------------------------------
    async def queue_url(self, queue: str) -> str:
        if queue.startswith(("https://", "http://")):
            return queue
        if queue not in self._queue_urls:
            try:
                url = (await self.sqs.call("get_queue_url", QueueName=queue))["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in MISSING_QUEUE:
                    raise DestinationNotFound(f"queue {queue!r} does not exist") from None
                raise
            self._queue_urls[queue] = str(url)
        return self._queue_urls[queue]

    async def topic_arn(self, topic: str) -> str:
        if topic.startswith("arn:"):
            return topic
        if topic not in self._topic_arns:
            self._topic_arns = await list_topics(self.sns)
            if topic not in self._topic_arns:
                raise DestinationNotFound(f"topic {topic!r} does not exist")
        return self._topic_arns[topic]

    # -- entries -------------------------------------------------------------------------
    def _sqs_entry(self, i: int, m: OutgoingMessage, fifo: bool, destination: str) -> _Pending:
        body = encode_body(m.body)
        attrs = _attributes(i, m, self.type_attribute, self.idempotency_keys, destination)
        if self.offload is None:  # offloaded, a message keeps them (room is kept for the pointer)
            attrs = _without_extras(m, body, attrs, SQS_MAX_BYTES)
        offload = self._check(i, body, attrs, SQS_MAX_BYTES, "SQS")
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
        if attrs:
            entry["MessageAttributes"] = attrs
        if m.delay is not None:
            entry["DelaySeconds"] = m.delay
        _identify(i, m, entry, fifo, "queue", destination)
        return _Pending(entry, "MessageBody", body if offload else None)

    def _sns_entry(self, i: int, m: OutgoingMessage, fifo: bool, destination: str) -> _Pending:
        body = encode_body(m.body)
        attrs = _attributes(i, m, self.type_attribute, self.idempotency_keys, destination)
        if self.offload is None:
            attrs = _without_extras(m, body, attrs, SNS_MAX_BYTES)
        offload = self._check(i, body, attrs, SNS_MAX_BYTES, "SNS")
        if offload and m.structure_json:
            raise ProducerError(
                f"message {i}: a message structure json body cannot be offloaded to S3 (as with the "
                "reference clients); send it without --structure-json"
            )
        entry: dict[str, Any] = {"Id": str(i), "Message": body}
        if attrs:
            entry["MessageAttributes"] = attrs
        if m.subject:
            entry["Subject"] = m.subject
        if m.structure_json:
            try:
                structure = json.loads(body)
            except ValueError:
                raise ProducerError(f"message {i}: message structure json needs a JSON object body") from None
            if not isinstance(structure, dict) or "default" not in structure:
                raise ProducerError(f'message {i}: message structure json needs a "default" key')
            entry["MessageStructure"] = "json"
        _identify(i, m, entry, fifo, "topic", destination)
        return _Pending(entry, "Message", body if offload else None)

    def _check(self, i: int, body: str, attrs: dict[str, dict[str, str]], limit: int, service: str) -> bool:
        """Whether message ``i`` goes to S3; ProducerError when it can go nowhere."""
        reserved = next((name for name in RESERVED_ATTRIBUTES if name in attrs), None)
        if reserved is not None:
            raise ProducerError(f"message {i}: attribute {reserved} is reserved for offloaded payloads")
        size = message_bytes(body, attrs)
        offload = self.offload
        if offload is not None and (offload.always or size > min(offload.threshold, limit)):
            if len(attrs) >= MAX_ATTRIBUTES:
                raise ProducerError(
                    f"message {i}: an offloaded message needs one of the {MAX_ATTRIBUTES} message "
                    f"attributes for its pointer; it has {len(attrs)}"
                )
            return True
        if size > limit:
            raise ProducerError(
                f"message {i}: {size:,} bytes (body plus attributes) is over the {service} limit of "
                f"{_kib(limit)} ({limit:,} bytes); offload large bodies to S3: --s3-bucket BUCKET "
                "(Producer: offload=Offload(bucket))"
            )
        return False

    async def _offload(self, pending: list[_Pending], readers: str) -> dict[int, PayloadPointer]:
        """Store the bodies to offload in S3 (a few at once) and point their entries at
        them; what was stored, by message index. Nothing is sent before they all are."""
        todo = [p for p in pending if p.offload is not None]
        offload, payloads = self.offload, self.payloads
        if not todo or offload is None or payloads is None:
            return {}
        stored: dict[int, PayloadPointer] = {}
        gate = asyncio.Semaphore(UPLOADS)

        async def one(p: _Pending) -> None:
            assert p.offload is not None
            async with gate:
                pointer = await payloads.put(
                    p.offload,
                    bucket=offload.bucket,
                    key=f"{offload.prefix}{uuid.uuid4()}",
                    legacy=offload.legacy,
                    readers=readers,  # "one": its reader may delete it once handled
                )
            stored[int(p.entry["Id"])] = pointer
            p.entry[p.body_key] = pointer.body()
            p.entry["MessageAttributes"] = {
                **p.entry.get("MessageAttributes", {}),
                **pointer_attribute(len(p.offload.encode("utf-8")), legacy=offload.legacy),
            }

        try:
            await asyncio.gather(*(one(p) for p in todo))
        except BaseException:
            await self._forget(list(stored.values()))
            raise
        return stored

    async def _forget(self, pointers: list[PayloadPointer]) -> None:
        """Delete stored bodies whose messages were not sent (best effort)."""
        if self.payloads is None:
            return
        for pointer in pointers:
            with contextlib.suppress(Exception):
                await self.payloads.delete(pointer)

    # -- sending -------------------------------------------------------------------------
    async def send(self, queue: str, body: Any, message_type: str | None = None, **options: Any) -> str:
        result = await self.send_many(queue, [OutgoingMessage(body, message_type, **options)])
        if result.failed:
            f = result.failed[0]
            raise SendFailed(f"send failed: {f.code}: {f.message}")
        return result.sent[0]

    async def send_many(
        self,
        queue: str,
        messages: Iterable[OutgoingMessage],
        progress: Callable[[int, int], None] | None = None,
        *,
        group_by: GroupBy | None = None,
    ) -> BatchResult:
        """Send ``messages`` in batches of ten. ``group_by``: the group id of each message
        without one of its own, from its body (a field name, or a function of the body)."""
        url = await self.queue_url(queue)
        fifo = url.endswith(".fifo")
        name = url.rsplit("/", 1)[-1]
        batch = [_grouped(i, m, group_by) for i, m in enumerate(messages)]
        with _span("aws_sqs", name, "send", len(batch)):
            pending = [self._sqs_entry(i, m, fifo, name) for i, m in enumerate(batch)]  # all checked first
            return await self._send(pending, "send_message_batch", {"QueueUrl": url}, progress)

    async def publish(self, topic: str, body: Any, message_type: str | None = None, **options: Any) -> str:
        result = await self.publish_many(topic, [OutgoingMessage(body, message_type, **options)])
        if result.failed:
            f = result.failed[0]
            raise SendFailed(f"publish failed: {f.code}: {f.message}")
        return result.sent[0]

    async def publish_many(
        self,
        topic: str,
        messages: Iterable[OutgoingMessage],
        progress: Callable[[int, int], None] | None = None,
        *,
        group_by: GroupBy | None = None,
    ) -> BatchResult:
        """Publish ``messages`` in batches of ten (``group_by``: as for ``send_many``)."""
        arn = await self.topic_arn(topic)
        fifo = arn.endswith(".fifo")
        name = arn.rsplit(":", 1)[-1]
        batch = [_grouped(i, m, group_by) for i, m in enumerate(messages)]
        with _span("aws_sns", name, "publish", len(batch)):
            pending = [self._sns_entry(i, m, fifo, name) for i, m in enumerate(batch)]
            return await self._send(pending, "publish_batch", {"TopicArn": arn}, progress)

    async def _send(
        self,
        pending: list[_Pending],
        operation: str,
        target: dict[str, str],
        progress: Callable[[int, int], None] | None,
    ) -> BatchResult:
        stored = await self._offload(pending, "many" if operation == "publish_batch" else "one")
        result = await self._batches([p.entry for p in pending], operation, target, progress)
        # A message that was not sent leaves no object behind.
        await self._forget([stored[f.index] for f in result.failed if f.index in stored])
        return result

    async def _batches(
        self,
        entries: Sequence[dict[str, Any]],
        operation: str,
        target: dict[str, str],
        progress: Callable[[int, int], None] | None,
    ) -> BatchResult:
        ids: dict[int, str] = {}
        failed: list[Failure] = []
        done = 0
        key = "PublishBatchRequestEntries" if operation == "publish_batch" else "Entries"
        for start in range(0, len(entries), BATCH):
            pending = list(entries[start : start + BATCH])
            for attempt in range(1, RETRIES + 1):
                try:
                    params: dict[str, Any] = {**target, key: pending}
                    response = await self.sqs_or_sns(operation).call(operation, **params)
                except ClientError as exc:
                    # The whole request was refused (after transient retries): report each entry.
                    failed += [Failure(int(e["Id"]), error_code(exc), str(exc)) for e in pending]
                    break
                for ok in response.get("Successful", []):
                    ids[int(ok["Id"])] = ok["MessageId"]
                retry: list[dict[str, Any]] = []
                by_id = {e["Id"]: e for e in pending}
                for f in response.get("Failed", []):
                    if not f.get("SenderFault") and attempt < RETRIES:
                        retry.append(by_id[f["Id"]])
                    else:
                        failed.append(Failure(int(f["Id"]), f.get("Code", ""), f.get("Message", "")))
                if not retry:
                    break
                pending = retry
            done = min(len(entries), start + BATCH)
            if progress:
                progress(done, len(entries))
        failed.sort(key=lambda f: f.index)
        return BatchResult(sent=[ids[i] for i in sorted(ids)], failed=failed)

    def sqs_or_sns(self, operation: str) -> AwsClient:
        return self.sns if operation == "publish_batch" else self.sqs


def _identify(i: int, m: OutgoingMessage, entry: dict[str, Any], fifo: bool, kind: str, name: str) -> None:
    """The entry's group and deduplication ids. FIFO: a group id is required, the
    deduplication id defaults to a new UUID. Standard: a group id is the message's tenant
    (SQS fair queues); a deduplication id is refused."""
    if fifo:
        if not m.group_id:
            raise ProducerError(
                f"message {i}: a FIFO {kind} needs a group id (group_id or group_by=; --group-id or --group-from)"
            )
        entry["MessageGroupId"] = m.group_id
        entry["MessageDeduplicationId"] = m.dedup_id or uuid.uuid4().hex
        return
    if m.dedup_id:
        raise ProducerError(
            f"message {i}: a deduplication id (dedup_id, --dedup-id) is for FIFO queues and topics only; "
            f"{kind} {name!r} is standard (a group id is accepted there, for fair queues)"
        )
    if m.group_id:
        entry["MessageGroupId"] = m.group_id


_EXTRAS = ("traceparent", "tracestate")


def _without_extras(
    message: OutgoingMessage, body: str, attrs: dict[str, dict[str, str]], limit: int
) -> dict[str, dict[str, str]]:
    """``attrs`` without what the producer added on its own (a default idempotency key, the
    trace context) when the message is over ``limit`` with them."""
    if message_bytes(body, attrs) <= limit:
        return attrs
    added = [*_EXTRAS, *([IDEMPOTENCY_KEY_ATTRIBUTE] if message.idempotency_key is None else [])]
    return {k: v for k, v in attrs.items() if k not in added or k in message.attributes}


def _span(
    system: str, destination: str, operation: str, count: int
) -> contextlib.AbstractContextManager[Any]:
    """The producer's span for one send/publish (nothing when OpenTelemetry is not loaded)."""
    if "opentelemetry.trace" not in sys.modules:
        return contextlib.nullcontext()
    from worker.observe.tracing import producer_span

    return producer_span(system, destination, operation, count)


def _kib(limit: int) -> str:
    return f"{limit // 1_048_576} MiB" if limit % 1_048_576 == 0 else f"{limit // 1024} KiB"
