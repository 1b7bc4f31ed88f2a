"""Dead-letter queues: look at their messages, and move them back to their source queue.

``peek`` receives with a short visibility timeout and then makes every message visible
again, so nothing is consumed (each look does count as a receive). ``redrive`` uses SQS's
own StartMessageMoveTask when no filter is given and the server supports it; otherwise it
moves messages itself, and deletes a message from the DLQ only after its copy was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from worker.aws import AwsClient, error_code
from worker.messages.envelope import parse_message
from worker.ops.queue_stats import queue_counts

MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
UNSUPPORTED = frozenset(
    {
        "UnsupportedOperation",
        "InvalidAction",
        "NotImplemented",
        "InternalFailure",
        "UnknownOperationException",
    }
)


class DlqError(Exception):
    pass


@dataclass(frozen=True)
class DlqPair:
    source_url: str
    source_arn: str
    dlq_url: str
    dlq_arn: str


@dataclass
class DeadMessage:
    message_id: str
    type: str | None
    receive_count: int
    first_received_ms: int | None
    sent_ms: int | None
    size: int
    excerpt: str


@dataclass
class RedriveResult:
    moved: int = 0
    failed: int = 0
    skipped: int = 0
    method: str = "manual"


async def _url(sqs: AwsClient, queue: str) -> str:
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        return str((await sqs.call("get_queue_url", QueueName=queue))["QueueUrl"])
    except ClientError as exc:
        if error_code(exc) in MISSING_QUEUE:
            raise DlqError(f"queue {queue!r} does not exist") from None
        raise


async def _attrs(sqs: AwsClient, url: str) -> dict[str, str]:
    return dict((await sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"]))["Attributes"])


async def resolve(sqs: AwsClient, queue: str) -> DlqPair:
    """``queue`` is a source queue with a redrive policy, or a DLQ with one source."""
    url = await _url(sqs, queue)
    attrs = await _attrs(sqs, url)
    if attrs.get("RedrivePolicy"):
        dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
        dlq_url = await _url(sqs, dlq_arn.rsplit(":", 1)[-1])
        return DlqPair(url, attrs["QueueArn"], dlq_url, dlq_arn)
    sources = (await sqs.call("list_dead_letter_source_queues", QueueUrl=url)).get("queueUrls", [])
    if not sources:
        raise DlqError(f"queue {queue!r} has no redrive policy and is no queue's dead-letter queue")
    if len(sources) > 1:
        raise DlqError(f"{queue!r} is the dead-letter queue of several queues; name the source queue instead")
    source_attrs = await _attrs(sqs, sources[0])
    return DlqPair(sources[0], source_attrs["QueueArn"], url, attrs["QueueArn"])


async def peek(
    sqs: AwsClient, dlq_url: str, limit: int = 100, type_attribute: str = "type"
) -> list[DeadMessage]:
    found: dict[str, DeadMessage] = {}
    receipts: list[str] = []
    try:
        while len(found) < limit:
            r = await sqs.call(
                "receive_message",
                QueueUrl=dlq_url,
                MaxNumberOfMessages=min(10, limit - len(found)),
                VisibilityTimeout=30,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            batch = r.get("Messages") or []
            if not batch:
                break
            for raw in batch:
                receipts.append(raw["ReceiptHandle"])
                m = parse_message(raw, type_attribute)
                system = raw.get("Attributes") or {}
                first = system.get("ApproximateFirstReceiveTimestamp")
                found.setdefault(
                    m.message_id,
                    DeadMessage(
                        message_id=m.message_id,
                        type=m.type,
                        receive_count=m.receive_count,
                        first_received_ms=int(first) if first else None,
                        sent_ms=m.sent_timestamp_ms,
                        size=len(raw["Body"].encode()),
                        excerpt=m.body[:80].replace("\n", " "),
                    ),
                )
    finally:
        await _make_visible(sqs, dlq_url, receipts)
    return list(found.values())


async def _make_visible(sqs: AwsClient, url: str, receipts: list[str]) -> None:
    for start in range(0, len(receipts), 10):
        chunk = receipts[start : start + 10]
        await sqs.call(
            "change_message_visibility_batch",
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0} for i, r in enumerate(chunk)],
        )


async def depth(sqs: AwsClient, url: str) -> int:
    return sum(await queue_counts(sqs, url))


async def redrive(
    sqs: AwsClient,
    pair: DlqPair,
    message_type: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    type_attribute: str = "type",
    use_move_task: bool = True,
) -> RedriveResult:
    total = await depth(sqs, pair.dlq_url)
    if message_type is None and limit is None and use_move_task:
        try:
            return await _move_task(sqs, pair, total, progress)
        except ClientError as exc:
            if error_code(exc) not in UNSUPPORTED and "not" not in str(exc).lower():
                raise
    return await _manual(sqs, pair, message_type, limit, total, progress, type_attribute)


async def _move_task(
    sqs: AwsClient, pair: DlqPair, total: int, progress: Callable[[int, int], None] | None
) -> RedriveResult:
    await sqs.call(
        "start_message_move_task", retry_for=10, SourceArn=pair.dlq_arn, DestinationArn=pair.source_arn
    )
    while True:
        await asyncio.sleep(0.5)
        tasks = (await sqs.call("list_message_move_tasks", SourceArn=pair.dlq_arn, MaxResults=1))["Results"]
        task = tasks[0] if tasks else {}
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if progress:
            progress(moved, int(task.get("ApproximateNumberOfMessagesToMove", total) or total))
        status = task.get("Status")
        if status == "COMPLETED":
            return RedriveResult(moved=moved, method="StartMessageMoveTask")
        if status in ("FAILED", "CANCELLED"):
            raise DlqError(f"message move task {status}: {task.get('FailureReason', '')}")


def _copy_attributes(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (raw.get("MessageAttributes") or {}).items():
        kept = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        out[name] = kept
    return out


async def _manual(
    sqs: AwsClient,
    pair: DlqPair,
    message_type: str | None,
    limit: int | None,
    total: int,
    progress: Callable[[int, int], None] | None,
    type_attribute: str,
) -> RedriveResult:
    result = RedriveResult()
    held: list[str] = []  # receipts of messages left in the DLQ, made visible at the end
    fifo = pair.source_url.endswith(".fifo")
    goal = min(total, limit) if limit is not None else total
    try:
        while limit is None or result.moved < limit:
            r = await sqs.call(
                "receive_message",
                QueueUrl=pair.dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=120,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            batch = r.get("Messages") or []
            if not batch:
                break
            chosen: list[dict[str, Any]] = []
            for raw in batch:
                wanted = message_type is None or parse_message(raw, type_attribute).type == message_type
                room = limit is None or result.moved + len(chosen) < limit
                if wanted and room:
                    chosen.append(raw)
                else:
                    held.append(raw["ReceiptHandle"])
                    result.skipped += 1
            if not chosen:
                continue
            entries = []
            for i, raw in enumerate(chosen):
                entry: dict[str, Any] = {"Id": str(i), "MessageBody": raw["Body"]}
                attrs = _copy_attributes(raw)
                if attrs:
                    entry["MessageAttributes"] = attrs
                if fifo:
                    system = raw.get("Attributes") or {}
                    entry["MessageGroupId"] = system.get("MessageGroupId", "redrive")
                    entry["MessageDeduplicationId"] = raw["MessageId"]
                entries.append(entry)
            sent = await sqs.call("send_message_batch", QueueUrl=pair.source_url, Entries=entries)
            ok = {int(s["Id"]) for s in sent.get("Successful", [])}
            for i, raw in enumerate(chosen):
                if i not in ok:
                    held.append(raw["ReceiptHandle"])
                    result.failed += 1
            done = [raw for i, raw in enumerate(chosen) if i in ok]
            if done:
                # Only now, with the copies sent, are the originals deleted.
                await sqs.call(
                    "delete_message_batch",
                    QueueUrl=pair.dlq_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]} for i, raw in enumerate(done)
                    ],
                )
            result.moved += len(done)
            if progress:
                progress(result.moved, goal)
    finally:
        await _make_visible(sqs, pair.dlq_url, held)
    return result
