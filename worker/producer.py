"""Sending and publishing typed messages: the API the CLI uses and applications can import.

    async with Producer.connect() as producer:
        await producer.send("billing", OrderPlaced(...), message_type="order.placed")
        result = await producer.send_many("billing", [OutgoingMessage(...), ...])
        await producer.publish("orders", OrderPlaced(...), message_type="order.placed")

Bodies are pydantic models (serialised to JSON), dicts/lists (JSON) or strings. The message
type goes into the ``type`` attribute, which the worker dispatches on and SNS filter
policies can match. Batches of ten are formed automatically; entries that fail inside a
batch for a server-side reason are retried, the others are reported, each with its index.
A message over 256 KiB is refused before any call.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from worker.aws import AwsClient, aws_client, error_code, list_topics
from worker.errors import EXIT_FAILED, EXIT_NOT_FOUND, ConfigError, NotFoundError
from worker.settings import AwsSettings

MAX_BYTES = 262_144
BATCH = 10
RETRIES = 3
MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


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
    dedup_id: str | None = None
    delay: int | None = None
    subject: str | None = None  # SNS only
    structure_json: bool = False  # SNS only: body is {"default": ..., "sqs": ...}


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


def encode_body(body: BaseModel | dict[str, Any] | list[Any] | str) -> str:
    if isinstance(body, BaseModel):
        return body.model_dump_json()
    if isinstance(body, str):
        return body
    return json.dumps(body)


def _size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    # SQS and SNS count attribute names, types and values towards the limit.
    extra = sum(len(k) + len(v["DataType"]) + len(v["StringValue"]) for k, v in attributes.items())
    return len(body.encode("utf-8")) + extra


def _attributes(message: OutgoingMessage, type_attribute: str) -> dict[str, dict[str, str]]:
    attrs = {k: {"DataType": "String", "StringValue": str(v)} for k, v in message.attributes.items()}
    if message.message_type:
        attrs[type_attribute] = {"DataType": "String", "StringValue": message.message_type}
    return attrs


class Producer:
    def __init__(self, sqs: AwsClient, sns: AwsClient, type_attribute: str = "type") -> None:
        self.sqs = sqs
        self.sns = sns
        self.type_attribute = type_attribute
        self._queue_urls: dict[str, str] = {}
        self._topic_arns: dict[str, str] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, aws: AwsSettings | None = None) -> AsyncIterator[Producer]:
        aws = aws or AwsSettings()
        async with aws_client("sqs", aws) as sqs, aws_client("sns", aws) as sns:
            yield cls(sqs, sns)

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
    def _sqs_entry(self, i: int, m: OutgoingMessage, fifo: bool) -> dict[str, Any]:
        body = encode_body(m.body)
        attrs = _attributes(m, self.type_attribute)
        self._check(i, body, attrs)
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
        if attrs:
            entry["MessageAttributes"] = attrs
        if m.delay is not None:
            entry["DelaySeconds"] = m.delay
        if fifo:
            if not m.group_id:
                raise ProducerError(f"message {i}: a FIFO queue needs a group id")
            entry["MessageGroupId"] = m.group_id
            entry["MessageDeduplicationId"] = m.dedup_id or uuid.uuid4().hex
        elif m.group_id or m.dedup_id:
            raise ProducerError(f"message {i}: group and deduplication ids are for FIFO queues")
        return entry

    def _sns_entry(self, i: int, m: OutgoingMessage, fifo: bool) -> dict[str, Any]:
        body = encode_body(m.body)
        attrs = _attributes(m, self.type_attribute)
        self._check(i, body, attrs)
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
        if fifo:
            if not m.group_id:
                raise ProducerError(f"message {i}: a FIFO topic needs a group id")
            entry["MessageGroupId"] = m.group_id
            entry["MessageDeduplicationId"] = m.dedup_id or uuid.uuid4().hex
        return entry

    @staticmethod
    def _check(i: int, body: str, attrs: dict[str, dict[str, str]]) -> None:
        size = _size(body, attrs)
        if size > MAX_BYTES:
            raise ProducerError(f"message {i}: {size} bytes is over the 256 KiB limit ({MAX_BYTES} bytes)")

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
    ) -> BatchResult:
        url = await self.queue_url(queue)
        fifo = url.endswith(".fifo")
        entries = [self._sqs_entry(i, m, fifo) for i, m in enumerate(messages)]  # all checked first
        return await self._batches(entries, "send_message_batch", {"QueueUrl": url}, progress)

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
    ) -> BatchResult:
        arn = await self.topic_arn(topic)
        fifo = arn.endswith(".fifo")
        entries = [self._sns_entry(i, m, fifo) for i, m in enumerate(messages)]
        return await self._batches(entries, "publish_batch", {"TopicArn": arn}, progress)

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
