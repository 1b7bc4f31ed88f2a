"""Moving one message to its queue's dead-letter queue ourselves.

SQS's redrive policy moves a message once its ApproximateReceiveCount exceeds
maxReceiveCount. That count also rises for deliveries in which the message never ran (a
FIFO follower given back because the message before it failed), so the worker moves a
message itself when its own handler has rejected it or used up its attempts: a copy is
sent to the DLQ (same body, attributes, group; ``worker.failure_reason`` and
``worker.original_message_id`` added while the 10-attribute limit allows), then the
original is deleted through its lease. A FIFO copy's deduplication id is the original's
message id, so a retried send within SQS's 5-minute window is not stored twice. A standard
queue's message with a MessageGroupId (a fair queue's tenant) keeps it in the copy.
"""

from __future__ import annotations

import base64
from typing import Any

from worker.aws import AwsClient, error_code
from worker.messages.outcomes import ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE
from worker.observe.logs import get_logger
from worker.runtime.lease import Lease

MAX_ATTRIBUTES = 10
log = get_logger()


def _attributes(raw: dict[str, Any], reason: str, message_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (raw.get("MessageAttributes") or {}).items():
        kept = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        if isinstance(kept.get("BinaryValue"), str):
            kept["BinaryValue"] = base64.b64decode(kept["BinaryValue"])
        out[name] = kept
    for name, text in ((ORIGINAL_ID_ATTRIBUTE, message_id), (REASON_ATTRIBUTE, reason[:1000] or "-")):
        if len(out) < MAX_ATTRIBUTES and name not in out:
            out[name] = {"DataType": "String", "StringValue": text}
    return out


class DeadLetters:
    def __init__(self, sqs: AwsClient, queue: str, url: str | None, fifo: bool) -> None:
        self._sqs = sqs
        self._queue = queue
        self.url = url
        self._fifo = fifo

    async def move(self, lease: Lease, reason: str) -> bool:
        """Send a copy of ``lease``'s message to the DLQ; True when SQS stored it. The
        caller then settles the lease with a delete."""
        if self.url is None:
            return False
        message = lease.message
        params: dict[str, Any] = {
            "QueueUrl": self.url,
            "MessageBody": str(lease.raw.get("Body", "")),
            "MessageAttributes": _attributes(lease.raw, reason, message.message_id),
        }
        if self._fifo:
            params["MessageGroupId"] = message.group_id or "default"
            params["MessageDeduplicationId"] = message.message_id
        elif message.group_id is not None:  # a fair queue's tenant stays the copy's tenant
            params["MessageGroupId"] = message.group_id
        try:
            await self._sqs.call("send_message", retry_for=min(30.0, max(1.0, lease.left() - 2)), **params)
        except Exception as exc:
            log.error(
                "dead_letter_failed",
                queue=self._queue,
                message_id=message.message_id,
                group_id=message.group_id,
                error=error_code(exc),
                detail=str(exc)[:200],
            )
            return False
        return True
