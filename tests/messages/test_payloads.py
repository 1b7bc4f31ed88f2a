"""The extended-client format: pointers read and written as the reference clients do,
sizes counted as SQS counts them, and offloaded messages recognised by parse_message
(directly, with raw SNS delivery, and inside an SNS envelope)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.messages.envelope import parse_message
from worker.messages.payloads import (
    LEGACY_POINTER_CLASS,
    POINTER_CLASS,
    PayloadPointer,
    PointerError,
    attribute_bytes,
    find_pointer,
    message_bytes,
    parse_pointer,
    pointer_attribute,
    pointer_body,
)

# Written by software.amazon.payloadoffloading.PayloadS3Pointer.toJson() (Java, Jackson).
JAVA = '["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"p/k-1"}]'
# Written by amazon-sqs-extended-client / amazon-sns-extended-client (Python json.dumps).
PYTHON = '["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b", "s3Key": "p/k-1"}]'
LEGACY = '["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "b", "s3Key": "p/k-1"}]'


def test_pointers_of_every_writer_are_read() -> None:
    assert parse_pointer(JAVA) == PayloadPointer("b", "p/k-1")
    assert parse_pointer(PYTHON, "1234") == PayloadPointer("b", "p/k-1", 1234)
    assert parse_pointer(LEGACY) == PayloadPointer("b", "p/k-1", legacy=True)
    # Jackson ignores unknown fields; so do we.
    extra = json.dumps([POINTER_CLASS, {"s3BucketName": "b", "s3Key": "k", "other": 1}])
    assert parse_pointer(extra).key == "k"


def test_we_write_what_the_java_library_writes() -> None:
    assert pointer_body("b", "p/k-1") == JAVA
    assert json.loads(pointer_body("b", "k", legacy=True))[0] == LEGACY_POINTER_CLASS
    assert PayloadPointer("b", "p/k-1").body() == JAVA
    assert PayloadPointer("b", "p/k-1").uri == "s3://b/p/k-1"
    assert pointer_attribute(42) == {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "42"}}
    assert list(pointer_attribute(42, legacy=True)) == ["SQSLargePayloadSize"]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "{}",
        "[1, 2]",
        '["java.lang.String", {"s3BucketName": "b", "s3Key": "k"}]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "b"}}]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "", "s3Key": "k"}}]',
        f'["{POINTER_CLASS}", {{"s3BucketName": 1, "s3Key": "k"}}]',
        "[" * 100_000,
    ],
)
def test_anything_else_is_a_pointer_error(body: str) -> None:
    with pytest.raises(PointerError):
        parse_pointer(body)


def test_a_pointer_is_looked_for_only_where_the_reserved_attribute_says() -> None:
    assert find_pointer(JAVA, {}) is None
    assert find_pointer(JAVA, {"type": "x"}) is None
    assert find_pointer(JAVA, {"ExtendedPayloadSize": "10"}) == PayloadPointer("b", "p/k-1", 10)
    legacy = {"SQSLargePayloadSize": {"DataType": "Number", "StringValue": "7"}}
    assert find_pointer(JAVA, legacy) == PayloadPointer("b", "p/k-1", 7)
    assert find_pointer(JAVA, {"ExtendedPayloadSize": "many"}) == PayloadPointer("b", "p/k-1")
    with pytest.raises(PointerError):
        find_pointer('{"order": 1}', {"ExtendedPayloadSize": "10"})


def test_sizes_are_counted_as_sqs_counts_them() -> None:
    attrs = {"type": {"DataType": "String", "StringValue": "é"}}
    assert attribute_bytes(attrs) == len("type") + len("String") + 2
    assert message_bytes("ü", attrs) == 2 + attribute_bytes(attrs)
    binary = {"blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
    assert attribute_bytes(binary) == 4 + 6 + 2


def _raw(body: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"MessageId": "m-1", "ReceiptHandle": "rh", "Body": body}
    if attributes:
        raw["MessageAttributes"] = {
            k: {"DataType": "Number" if k.endswith("Size") else "String", "StringValue": v}
            for k, v in attributes.items()
        }
    return raw


def test_parse_message_marks_an_offloaded_message_and_hides_the_reserved_attribute() -> None:
    message = parse_message(_raw(JAVA, {"ExtendedPayloadSize": "300000", "type": "report.ready"}))
    assert message.payload == PayloadPointer("b", "p/k-1", 300_000)
    assert message.attributes == {"type": "report.ready"}
    assert message.type == "report.ready"
    assert message.body == JAVA  # until PayloadStore.resolve replaces it
    legacy = parse_message(_raw(LEGACY, {"SQSLargePayloadSize": "5"}))
    assert legacy.payload == PayloadPointer("b", "p/k-1", 5, legacy=True)
    assert legacy.attributes == {}
    assert legacy.type is None  # the stored body may give one, once resolved


def test_an_sns_envelope_carrying_a_pointer_is_recognised() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:reports",
        "Message": PYTHON,
        "MessageAttributes": {
            "ExtendedPayloadSize": {"Type": "Number", "Value": "400000"},
            "type": {"Type": "String", "Value": "report.ready"},
        },
    }
    message = parse_message(_raw(json.dumps(envelope)))
    assert message.payload == PayloadPointer("b", "p/k-1", 400_000)
    assert message.topic_arn == "arn:aws:sns:us-east-1:000000000000:reports"
    assert message.attributes == {"type": "report.ready"}


def test_a_reserved_attribute_without_a_pointer_is_left_for_resolve_to_report() -> None:
    message = parse_message(_raw('{"type": "x"}', {"ExtendedPayloadSize": "10"}))
    assert message.payload is None
    assert message.attributes == {"ExtendedPayloadSize": "10"}
    assert message.type == "x"
