"""Turn an SQS ``ReceiveMessage`` entry into one frozen ``Message``.

Three shapes arrive on a queue:

* a plain SQS message: body and MessageAttributes as sent;
* an SNS notification with raw delivery: the same, SNS copied the attributes over;
* an SNS notification without raw delivery: the body is SNS's JSON envelope
  (``{"Type": "Notification", "Message": ..., "MessageAttributes": {...}}``), which is
  unwrapped here so handlers see the published message and its attributes.

The message type comes from the queue's sources, in its order (``worker.messages.types``):
the type attribute (default ``type``), CloudEvents attributes or a structured CloudEvent,
a JSON body field (default ``type``), an S3 event notification (``s3:ObjectCreated:Put``),
an EventBridge event's ``detail-type``. A CloudEvent's or EventBridge event's envelope is
unwrapped as SNS's is: ``body`` is its data/detail, ``metadata`` the envelope's fields.

A message offloaded to S3 in the extended-client format (the reserved attribute
``ExtendedPayloadSize`` or ``SQSLargePayloadSize``, on the message or in the SNS envelope,
and a pointer body) gets ``payload`` set and the reserved attribute taken out of
``attributes``; its body stays the pointer until ``PayloadStore.resolve`` replaces it with
the stored one (``worker.messages.payloads``, ``worker.messages.payload_store``).

Nothing here raises: a body that is not JSON is found out by the processor when a handler
needs JSON, a reserved attribute without a valid pointer by ``PayloadStore.resolve``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.messages.payloads import (
    RESERVED_ATTRIBUTES,
    PayloadPointer,
    PointerError,
    find_pointer,
    reserved_attribute,
)
from worker.messages.types import DEFAULT_RULES, TypeRules, resolve

_SNS_TYPES = frozenset({"Notification"})
IDEMPOTENCY_KEY_ATTRIBUTE = "idempotency-key"
"""The message attribute that names a message's effect for idempotent handlers (set by the
producer; ``worker.runtime.idempotency``)."""


@dataclass(frozen=True, slots=True)
class Message:
    """What a handler may know about the message it handles (never the receipt handle's use)."""

    message_id: str
    body: str
    """The message body; for SNS envelopes, the published message."""
    attributes: dict[str, str]
    """Message attributes as strings (SQS attributes, or the SNS envelope's)."""
    type: str | None
    receive_count: int
    """Which attempt this is: SQS's ApproximateReceiveCount, plus the retries in place of a
    FIFO message (the worker retries a FIFO group's failed message without giving it back)."""
    group_id: str | None = None
    sent_timestamp_ms: int | None = None
    topic_arn: str | None = None
    """Set when the message came through SNS (envelope delivery)."""
    dedup_id: str | None = None
    """A FIFO message's MessageDeduplicationId."""
    payload: PayloadPointer | None = None
    """Set when the body was offloaded to S3 (extended-client format): where it is kept.
    The worker replaces ``body`` with the stored one before the handler runs."""
    receipt_handle: str = field(default="", repr=False)
    envelope: str | None = None
    """``cloudevents`` or ``eventbridge`` when ``body`` was unwrapped from such an event."""
    source: str | None = None
    """The event's source (EventBridge ``source``, CloudEvents ``source``)."""
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The envelope's own fields: an EventBridge event's ``id``, ``detail-type``, ``time``,
    ``region``, ``account``, ``resources``; a CloudEvent's ``id``, ``type``, ``time``,
    ``subject``, extensions... (empty without an envelope)."""

    def json(self) -> Any:
        """The body decoded as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


def _sqs_attributes(raw: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (raw.get("MessageAttributes") or {}).items():
        if "StringValue" in value:
            out[name] = str(value["StringValue"])
        elif "BinaryValue" in value:
            binary = value["BinaryValue"]
            out[name] = binary.decode("utf-8", "replace") if isinstance(binary, bytes) else str(binary)
    return out


def _sns_envelope(body: str) -> dict[str, Any] | None:
    if not body.startswith("{") or '"TopicArn"' not in body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(data, dict)
        and data.get("Type") in _SNS_TYPES
        and isinstance(data.get("Message"), str)
        and "TopicArn" in data
    ):
        return data
    return None


def with_body(message: Message, body: str, rules: TypeRules = DEFAULT_RULES) -> Message:
    """``message`` with another body (an offloaded one, fetched): its type, when the
    message had none, and its envelope come from that body, by the queue's rules."""
    if (
        message.type is not None
        and message.envelope is None
        and '"specversion"' not in body
        and ('"detail-type"' not in body)
    ):
        return dataclasses.replace(message, body=body)
    typed = resolve(body, message.attributes, rules)
    return dataclasses.replace(
        message,
        body=typed.body,
        type=message.type or typed.type,
        envelope=typed.envelope,
        source=typed.source,
        metadata=typed.metadata or {},
    )


def parse_message(raw: dict[str, Any], rules: TypeRules = DEFAULT_RULES) -> Message:
    body = str(raw.get("Body", ""))
    attributes = _sqs_attributes(raw)
    system = raw.get("Attributes") or {}
    topic_arn: str | None = None
    envelope = _sns_envelope(body)
    if envelope is not None:
        body = envelope["Message"]
        topic_arn = str(envelope["TopicArn"])
        sns_attrs = envelope.get("MessageAttributes") or {}
        if isinstance(sns_attrs, dict):
            for name, value in sns_attrs.items():
                if isinstance(value, dict) and "Value" in value:
                    attributes.setdefault(name, str(value["Value"]))
    payload: PayloadPointer | None = None
    reserved = reserved_attribute(attributes)
    if reserved is not None:
        try:
            payload = find_pointer(body, attributes)
        except PointerError:
            pass  # the attribute stays, PayloadStore.resolve reports the bad pointer
        else:
            attributes = {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}
    typed = resolve(body, attributes, rules)
    sent = system.get("SentTimestamp")
    return Message(
        message_id=str(raw["MessageId"]),
        body=typed.body,
        attributes=attributes,
        type=typed.type,
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        group_id=system.get("MessageGroupId"),
        dedup_id=system.get("MessageDeduplicationId"),
        sent_timestamp_ms=int(sent) if sent else None,
        topic_arn=topic_arn,
        payload=payload,
        receipt_handle=str(raw["ReceiptHandle"]),
        envelope=typed.envelope,
        source=typed.source,
        metadata=typed.metadata or {},
    )
