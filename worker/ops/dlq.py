"""Dead-letter queues: look at their messages, and move them back to their source queue.

``peek`` receives with a short visibility timeout and then makes every message visible
again, so nothing is consumed (each look does count as a receive). ``redrive`` uses SQS's
own StartMessageMoveTask when no filter is given and the server supports it; otherwise it
moves messages itself, and deletes a message from the DLQ only after its copy was sent.

A run of the manual redrive is bounded, even while a worker consumes the source queue and
the moved copies fail again and come back to the DLQ:

- it looks at as many messages as the DLQ held (ApproximateNumberOfMessages) when it
  started, and stops earlier when a receive finds nothing (the DLQ is empty or holds only
  what the run set aside);
- it never moves a message twice: every message it looked at is remembered by id, and the
  copies it sends carry ``worker.redrive_run`` (the run's id) and are remembered by their
  new id, so a copy that comes back, whether moved by SQS's redrive policy (same id) or by
  the worker's own DLQ move (new id, ``worker.original_message_id`` = the copy's id, and
  the attributes copied), is recognised and left where it is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from worker.aws import MISSING_QUEUE, AwsClient, error_code, next_page
from worker.errors import ConfigError, NotFoundError, WorkerError
from worker.messages.envelope import parse_message
from worker.messages.outcomes import ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE
from worker.messages.types import TypeRules
from worker.ops.queue_stats import queue_counts

UNSUPPORTED = frozenset(
    {
        "UnsupportedOperation",
        "InvalidAction",
        "NotImplemented",
        "InternalFailure",
        "UnknownOperationException",
    }
)
MAX_ATTRIBUTES = 10
RUN_ATTRIBUTE = "worker.redrive_run"
"""Set on every copy a manual redrive sends: the id of the run that sent it."""
"""Set by the worker's own DLQ move (worker/runtime/deadletter.py): the id of the message
it copied."""
HOLD_SECONDS = 120
"""Visibility timeout of what a redrive receives; what it leaves is made visible at the end."""


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
    """ApproximateFirstReceiveTimestamp as SQS reports it: not when the message was
    dead-lettered (a copy the worker moved is first received by ``dlq show`` itself)."""
    sent_ms: int | None
    """SentTimestamp: for a message SQS's redrive policy moved, when it was sent to its
    source queue (SQS keeps it); for a copy the worker moved, when the copy was sent."""
    size: int
    excerpt: str
    reason: str | None = None
    """Why it is here, when the worker moved it (``worker.failure_reason``); None when SQS's
    redrive did (the handler's failures are in the worker's logs)."""
    moved_by_worker: bool = False
    """A copy the worker's own DLQ move sent (it carries ``worker.original_message_id`` or
    ``worker.failure_reason``)."""
    dead_lettered_ms: int | None = None
    """When it was dead-lettered, where that is known: the SentTimestamp of a copy the worker
    moved. None for a message SQS's redrive policy moved: SQS records no such time."""
    original_sent_ms: int | None = None
    """When it was first sent to its source queue, where that is known: the SentTimestamp of
    a message SQS's redrive policy moved. None for a copy the worker moved."""


@dataclass
class RedriveResult:
    """What one redrive run did. ``total`` = moved + skipped + failed + messages the run
    never got to (a receive found nothing before it had seen ``total``; or ``limit`` was
    reached)."""

    total: int = 0
    """Messages visible in the DLQ when the run started: the most it looks at."""
    moved: int = 0
    """Sent to the source queue and deleted from the DLQ."""
    skipped: int = 0
    """Left in the DLQ on purpose: the type did not match, or ``limit`` was reached."""
    failed: int = 0
    """Could not be moved (the send was refused), or sent but not deleted from the DLQ
    (then the source queue has a copy and the DLQ still has the message)."""
    returned: int = 0
    """Copies this run sent that were back in the DLQ before it ended (they failed again);
    left there, not moved again."""
    left: int = 0
    """Messages left in the DLQ: for the manual run, what it counted itself (skipped, failed,
    never reached, copies that came back, and arrivals it received), not SQS's approximate
    count, which lags a delete by up to a minute; for the move task, SQS's count when the
    task completed (visible, in flight and delayed)."""
    method: str = "manual"
    failures: list[str] = field(default_factory=list)
    """One line per failed message: its id, and SQS's error code and message."""


def _queue_name(url_or_arn: str) -> str:
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


async def _url(sqs: AwsClient, queue: str) -> str:
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        return str((await sqs.call("get_queue_url", QueueName=queue))["QueueUrl"])
    except ClientError as exc:
        if error_code(exc) in MISSING_QUEUE:
            raise NotFoundError(f"queue {queue!r} does not exist") from None
        raise


async def _attrs(sqs: AwsClient, url: str) -> dict[str, str]:
    try:
        r = await sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
    except ClientError as exc:
        if error_code(exc) in MISSING_QUEUE:
            raise NotFoundError(f"queue {_queue_name(url)!r} does not exist ({url})") from None
        raise
    return dict(r["Attributes"])


async def dead_letter_sources(sqs: AwsClient, url: str) -> list[str]:
    """URLs of the queues whose RedrivePolicy names the queue at ``url`` as their DLQ."""
    sources: list[str] = []
    token: str | None = None
    while True:
        page = await sqs.call(
            "list_dead_letter_source_queues", QueueUrl=url, MaxResults=1000, **next_page(token)
        )
        sources += page.get("queueUrls", [])
        token = page.get("NextToken")
        if not token:
            return sources


async def resolve(sqs: AwsClient, queue: str) -> DlqPair:
    """``queue`` is a source queue with a redrive policy, or a DLQ with one source."""
    url = await _url(sqs, queue)
    attrs = await _attrs(sqs, url)
    if attrs.get("RedrivePolicy"):
        dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
        dlq_name = _queue_name(dlq_arn)
        try:
            dlq_url = await _url(sqs, dlq_name)
        except NotFoundError:
            raise NotFoundError(
                f"the dead-letter queue of {queue!r}, {dlq_name!r} (its RedrivePolicy), does not exist"
            ) from None
        return DlqPair(url, attrs["QueueArn"], dlq_url, dlq_arn)
    sources = await dead_letter_sources(sqs, url)
    if not sources:
        raise NotFoundError(f"queue {queue!r} has no redrive policy and is no queue's dead-letter queue")
    if len(sources) > 1:
        names = ", ".join(sorted(_queue_name(s) for s in sources))
        raise ConfigError(
            f"{queue!r} is the dead-letter queue of several queues ({names}); name the source queue instead"
        )
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
                m = parse_message(raw, TypeRules(type_attribute))
                system = raw.get("Attributes") or {}
                first = system.get("ApproximateFirstReceiveTimestamp")
                # An offloaded body (extended-client pointer): its size and where it is kept.
                size, excerpt = len(raw["Body"].encode()), m.body[:80].replace("\n", " ")
                if m.payload is not None:
                    size, excerpt = m.payload.size or size, f"(in S3: {m.payload.uri})"
                by_worker = ORIGINAL_ID_ATTRIBUTE in m.attributes or REASON_ATTRIBUTE in m.attributes
                found.setdefault(
                    m.message_id,
                    DeadMessage(
                        message_id=m.message_id,
                        type=m.type,
                        receive_count=m.receive_count,
                        first_received_ms=int(first) if first else None,
                        sent_ms=m.sent_timestamp_ms,
                        size=size,
                        excerpt=excerpt,
                        reason=m.attributes.get(REASON_ATTRIBUTE),
                        moved_by_worker=by_worker,
                        dead_lettered_ms=m.sent_timestamp_ms if by_worker else None,
                        original_sent_ms=None if by_worker else m.sent_timestamp_ms,
                    ),
                )
    finally:
        await _make_visible(sqs, dlq_url, receipts)
    return list(found.values())


async def _make_visible(sqs: AwsClient, url: str, receipts: list[str]) -> None:
    """Give messages back (visibility 0). A receipt gone stale (the message was received
    again meanwhile) fails quietly: that message is visible or held under the newer one."""
    for start in range(0, len(receipts), 10):
        chunk = receipts[start : start + 10]
        await sqs.call(
            "change_message_visibility_batch",
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0} for i, r in enumerate(chunk)],
        )


async def depth(sqs: AwsClient, url: str) -> int:
    """Messages in the queue: visible + in flight + delayed."""
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
    """Move the DLQ's messages back to the source queue: all of them, or those of
    ``message_type``, at most ``limit``. Without a type or limit (and ``use_move_task``),
    SQS's StartMessageMoveTask does it where the server has it; else the manual run.

    ``progress(done, total)``: ``total`` is the DLQ's depth at the start (messages to move
    for the move task), ``done`` how many have been looked at (moved, for the move task);
    the last call is ``(total, total)``. With ``limit``, ``total`` is the most the run moves
    (``limit``, or the depth when smaller) and ``done`` the messages it moved (or failed to);
    the last call is ``(done, total)``, short of ``total`` only when fewer were there to move.
    Not called when the DLQ was empty.
    """
    total = (await queue_counts(sqs, pair.dlq_url))[0]
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
        to_move = int(task.get("ApproximateNumberOfMessagesToMove", total) or total)
        status = task.get("Status")
        if progress and to_move:
            progress(to_move if status == "COMPLETED" else min(moved, to_move), to_move)
        if status == "COMPLETED":
            return RedriveResult(
                total=to_move, moved=moved, left=await depth(sqs, pair.dlq_url), method="StartMessageMoveTask"
            )
        if status in ("FAILED", "CANCELLED"):
            reason = str(task.get("FailureReason", "") or "no reason given").replace("\n", " ")
            raise WorkerError(
                f"message move task from {_queue_name(pair.dlq_url)!r} {status} after {moved} message(s): {reason}"
            )


def _copy_attributes(raw: dict[str, Any], run_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (raw.get("MessageAttributes") or {}).items():
        if name == RUN_ATTRIBUTE:
            continue  # a mark of an earlier run: replaced by this run's
        kept = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        if isinstance(kept.get("BinaryValue"), str):
            kept["BinaryValue"] = base64.b64decode(kept["BinaryValue"])
        out[name] = kept
    if len(out) < MAX_ATTRIBUTES:
        # With ten attributes already there is no room: the copy's id is remembered anyway.
        out[RUN_ATTRIBUTE] = {"DataType": "String", "StringValue": run_id}
    return out


def _string_attribute(raw: dict[str, Any], name: str) -> str | None:
    value = (raw.get("MessageAttributes") or {}).get(name) or {}
    text = value.get("StringValue")
    return str(text) if text is not None else None


class _Run:
    """The state of one manual redrive run."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.seen: set[str] = set()  # ids of the DLQ's own messages looked at
        self.sent: set[str] = set()  # ids of the copies sent to the source queue
        self.returned: set[str] = set()  # ids of copies seen back in the DLQ
        self.held: dict[str, str] = {}  # message id -> latest receipt of what is left

    def is_copy(self, raw: dict[str, Any]) -> bool:
        """A copy sent by this run, back in the DLQ (by SQS's redrive policy: same id, or by
        the worker's own DLQ move: new id, attributes copied, original id recorded)."""
        return (
            raw["MessageId"] in self.sent
            or _string_attribute(raw, RUN_ATTRIBUTE) == self.id
            or _string_attribute(raw, ORIGINAL_ID_ATTRIBUTE) in self.sent
        )

    def hold(self, raw: dict[str, Any]) -> None:
        self.held[raw["MessageId"]] = raw["ReceiptHandle"]


async def _manual(
    sqs: AwsClient,
    pair: DlqPair,
    message_type: str | None,
    limit: int | None,
    total: int,
    progress: Callable[[int, int], None] | None,
    type_attribute: str,
) -> RedriveResult:
    result = RedriveResult(total=total)
    run = _Run()
    fifo = pair.source_url.endswith(".fifo")
    try:
        while len(run.seen) < total and (limit is None or result.moved < limit):
            r = await sqs.call(
                "receive_message",
                QueueUrl=pair.dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=HOLD_SECONDS,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            batch = r.get("Messages") or []
            if not batch:
                break  # empty, or only what this run holds
            chosen: list[dict[str, Any]] = []
            for raw in batch:
                message_id = raw["MessageId"]
                if run.is_copy(raw):
                    run.returned.add(message_id)
                    run.hold(raw)
                    continue
                if message_id in run.seen or len(run.seen) >= total:
                    # Looked at already (given back after HOLD_SECONDS, or delivered twice),
                    # or beyond the depth the run started with: not this run's to count.
                    run.hold(raw)
                    continue
                run.seen.add(message_id)
                wanted = (
                    message_type is None or parse_message(raw, TypeRules(type_attribute)).type == message_type
                )
                room = limit is None or result.moved + len(chosen) < limit
                if wanted and room:
                    chosen.append(raw)
                else:
                    run.hold(raw)
                    result.skipped += 1
            if chosen:
                await _move(sqs, pair, chosen, fifo, run, result)
            if progress and total:
                progress(*_done(result, run, total, limit))
    finally:
        await _make_visible(sqs, pair.dlq_url, list(run.held.values()))
    result.returned = len(run.returned)
    # What the run left: what it holds (skipped, failed, came back, arrived) and what it never
    # got to. SQS's ApproximateNumberOfMessages would still count the moved ones for a while.
    result.left = len(run.held) + max(0, total - len(run.seen))
    if progress and total:
        progress(*_done(result, run, total, limit, last=True))
    return result


def _done(
    result: RedriveResult, run: _Run, total: int, limit: int | None, last: bool = False
) -> tuple[int, int]:
    """``(done, total)`` for the progress bar: messages looked at of the depth, or, with a
    limit, messages moved (or failed) of the most the run moves."""
    if limit is None:
        return (total if last else len(run.seen)), total
    goal = min(limit, total)
    return min(result.moved + result.failed, goal), goal


async def _move(
    sqs: AwsClient,
    pair: DlqPair,
    chosen: list[dict[str, Any]],
    fifo: bool,
    run: _Run,
    result: RedriveResult,
) -> None:
    """Send copies of ``chosen`` to the source queue, then delete the originals that were
    copied. Whatever fails is held, counted and described."""
    entries = []
    for i, raw in enumerate(chosen):
        entry: dict[str, Any] = {
            "Id": str(i),
            "MessageBody": raw["Body"],
            "MessageAttributes": _copy_attributes(raw, run.id),
        }
        if fifo:
            system = raw.get("Attributes") or {}
            entry["MessageGroupId"] = system.get("MessageGroupId", "redrive")
            entry["MessageDeduplicationId"] = raw["MessageId"]
        entries.append(entry)
    sent = await sqs.call("send_message_batch", QueueUrl=pair.source_url, Entries=entries)
    copied: list[dict[str, Any]] = []
    by_id = {int(s["Id"]): s for s in sent.get("Successful", [])}
    refused = {int(f["Id"]): f for f in sent.get("Failed", [])}
    for i, raw in enumerate(chosen):
        if i in by_id:
            run.sent.add(str(by_id[i]["MessageId"]))
            copied.append(raw)
        else:
            run.hold(raw)
            result.failed += 1
            f = refused.get(i, {})
            result.failures.append(
                f"{raw['MessageId']}: not sent: {f.get('Code', 'error')}: {f.get('Message', '')}".rstrip(": ")
            )
    if not copied:
        return
    # Only now, with the copies sent, are the originals deleted.
    deleted = await sqs.call(
        "delete_message_batch",
        QueueUrl=pair.dlq_url,
        Entries=[{"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]} for i, raw in enumerate(copied)],
    )
    not_deleted = {int(f["Id"]): f for f in deleted.get("Failed", [])}
    for i, raw in enumerate(copied):
        if i in not_deleted:
            run.hold(raw)
            result.failed += 1
            f = not_deleted[i]
            result.failures.append(
                f"{raw['MessageId']}: sent, but not deleted from the DLQ: {f.get('Code', 'error')}: "
                f"{f.get('Message', '')}".rstrip(": ")
            )
        else:
            result.moved += 1
