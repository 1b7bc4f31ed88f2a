"""The extended-client payload format: a body kept in S3, a pointer on the queue.

This is the wire format of the Amazon SQS/SNS Extended Client libraries (Java
``amazon-sqs-java-extended-client-lib`` / ``amazon-sns-java-extended-client-lib`` over
``payload-offloading-java-common-lib-for-aws``, Python ``amazon-sqs-extended-client`` /
``amazon-sns-extended-client``), which Spring Cloud AWS speaks too:

* the message carries the reserved attribute ``ExtendedPayloadSize`` (older writers:
  ``SQSLargePayloadSize``), DataType ``Number``, whose value is the size of the stored body
  in bytes (UTF-8);
* the body is the pointer, a JSON array of the pointer's class name and its fields::

      ["software.amazon.payloadoffloading.PayloadS3Pointer",
       {"s3BucketName": "my-bucket", "s3Key": "prefix/0b6c7f0e-..."}]

  (older writers: ``com.amazon.sqs.javamessaging.MessageS3Pointer``);
* the S3 object holds the original body, as UTF-8 bytes.

Through SNS the same holds for the published message: with raw delivery SNS copies the
attribute onto the SQS message, without it the pointer is the envelope's ``Message`` and the
attribute sits in the envelope's ``MessageAttributes`` (``parse_message`` merges both).

Everything here is pure: detecting, parsing and building pointers, and measuring a message
as SQS does. Fetching, storing and deleting the objects is ``worker.messages.payload_store``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

READERS_METADATA = "sqs-worker-readers"
"""S3 user metadata this project's producer sets on an object it offloads: ``one`` for a
message sent to one queue, ``many`` for one published to a topic (every subscriber reads
the same object). Objects without it (other writers) are never deleted by the worker."""
RESERVED_ATTRIBUTE = "ExtendedPayloadSize"
LEGACY_RESERVED_ATTRIBUTE = "SQSLargePayloadSize"
RESERVED_ATTRIBUTES = (RESERVED_ATTRIBUTE, LEGACY_RESERVED_ATTRIBUTE)
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
POINTER_CLASSES = (POINTER_CLASS, LEGACY_POINTER_CLASS)

SQS_MAX_BYTES = 1_048_576
"""What SQS accepts in one message, body plus attributes (1 MiB since August 2025)."""
SNS_MAX_BYTES = 262_144
"""What SNS accepts in one published message, body plus attributes (256 KiB)."""
DEFAULT_THRESHOLD = 262_144
"""Messages above this size are offloaded by default, as the reference clients do."""
MAX_ATTRIBUTES = 10
"""SQS and SNS (to SQS) carry at most ten message attributes; offloading takes one."""


class PointerError(ValueError):
    """A body marked as offloaded (by the reserved attribute) that is not a pointer."""


@dataclass(frozen=True, slots=True)
class PayloadPointer:
    """Where an offloaded body is kept."""

    bucket: str
    key: str
    size: int | None = None
    """The stored body's size in bytes, from the reserved attribute (None: not given)."""
    legacy: bool = False
    """Written with the legacy attribute/class names (``SQSLargePayloadSize``)."""
    sole_reader: bool = False
    """Its object says it was stored for one message sent straight to one queue (the
    ``READERS_METADATA`` its writer set): the one case in which that message's reader may
    delete it. Known once the object was fetched."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def body(self) -> str:
        """The message body that points here, as the Java libraries write it (compact JSON)."""
        return pointer_body(self.bucket, self.key, legacy=self.legacy)


def reserved_attribute(attributes: Mapping[str, Any]) -> str | None:
    """The reserved attribute's name when ``attributes`` has one (the current name wins),
    else None. ``attributes`` may be the worker's ``{name: value}`` strings or SQS's
    ``{name: {"DataType": ..., "StringValue": ...}}``."""
    for name in RESERVED_ATTRIBUTES:
        if name in attributes:
            return name
    return None


def _size_value(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("StringValue", value.get("Value"))
    try:
        size = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return size if size >= 0 else None


def parse_pointer(body: str, size: Any = None) -> PayloadPointer:
    """The pointer a body holds (either class name, extra fields ignored, as Jackson reads
    it); ``size``: the reserved attribute's value. PointerError when it is not a pointer."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise PointerError(f"the body is not JSON: {body[:80]!r}") from None
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], dict)):
        raise PointerError(
            f'the body is not an S3 pointer (expected ["{POINTER_CLASS}", {{"s3BucketName": ..., '
            f'"s3Key": ...}}]): {body[:80]!r}'
        )
    kind, fields = data
    if kind not in POINTER_CLASSES:
        raise PointerError(f"unknown pointer class {str(kind)[:80]!r}")
    bucket, key = fields.get("s3BucketName"), fields.get("s3Key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise PointerError("the S3 pointer needs a non-empty s3BucketName and s3Key")
    return PayloadPointer(bucket, key, _size_value(size), legacy=kind == LEGACY_POINTER_CLASS)


def find_pointer(body: str, attributes: Mapping[str, Any]) -> PayloadPointer | None:
    """The pointer of an offloaded message (its attributes name the reserved attribute),
    None for any other message. PointerError when the attribute is there but the body is not
    a pointer."""
    name = reserved_attribute(attributes)
    if name is None:
        return None
    return parse_pointer(body, attributes[name])


def pointer_body(bucket: str, key: str, *, legacy: bool = False) -> str:
    """A pointer body, byte for byte as the Java libraries write it (the Python ones add
    spaces; every reader accepts both)."""
    kind = LEGACY_POINTER_CLASS if legacy else POINTER_CLASS
    return json.dumps([kind, {"s3BucketName": bucket, "s3Key": key}], separators=(",", ":"))


def pointer_attribute(size: int, *, legacy: bool = False) -> dict[str, dict[str, str]]:
    """The reserved attribute for a stored body of ``size`` bytes, as SQS/SNS take it."""
    name = LEGACY_RESERVED_ATTRIBUTE if legacy else RESERVED_ATTRIBUTE
    return {name: {"DataType": "Number", "StringValue": str(size)}}


def attribute_bytes(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """What message attributes count towards the size limit, as SQS and SNS count them:
    the name, the data type and the value of each, in bytes (UTF-8)."""
    total = 0
    for name, value in attributes.items():
        total += len(name.encode("utf-8")) + len(str(value.get("DataType", "")).encode("utf-8"))
        if "StringValue" in value:
            total += len(str(value["StringValue"]).encode("utf-8"))
        elif "BinaryValue" in value:
            binary = value["BinaryValue"]
            total += (
                len(binary) if isinstance(binary, bytes | bytearray) else len(str(binary).encode("utf-8"))
            )
    return total


def message_bytes(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """A message's size as SQS and SNS measure it against their limits: body plus attributes."""
    return len(body.encode("utf-8")) + attribute_bytes(attributes)
