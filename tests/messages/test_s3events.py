"""S3 event notifications: their message type, the typed payloads, wildcard routing, and the
test event S3 sends when a notification is configured (settled without a handler)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker import Message, Router, S3Event, S3EventRecord
from worker.messages.envelope import parse_message
from worker.messages.routing import HandlerError, Registry, families
from worker.messages.s3events import S3TestEvent
from worker.messages.s3types import s3_event_type
from worker.messages.types import resolve
from worker.testing import sns_message, sqs_message


def record(event: str = "ObjectCreated:Put", key: str = "incoming/my+report%281%29.csv") -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T10:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:X"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "sqs-worker-uploads-0",
            "bucket": {"name": "uploads", "arn": "arn:aws:s3:::uploads"},
            "object": {"key": key, "size": 1024, "eTag": "abc", "sequencer": "0055"},
        },
    }


def notification(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records or [record()])})


TEST_EVENT = json.dumps(
    {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-22T10:00:00.000Z",
        "Bucket": "uploads",
        "RequestId": "r",
        "HostId": "h",
    }
)


def test_the_message_type_is_the_event_type() -> None:
    assert resolve(notification(), {}).type == "s3:ObjectCreated:Put"
    assert resolve(notification(record("ObjectRemoved:Delete")), {}).type == "s3:ObjectRemoved:Delete"
    assert resolve(TEST_EVENT, {}).type == "s3:TestEvent"
    assert s3_event_type({"Records": []}) is None
    assert s3_event_type({"Records": [{"eventSource": "aws:sqs", "eventName": "x"}]}) is None
    assert s3_event_type({"Event": "s3:TestEvent"}) is None  # not from S3
    # A type attribute or a "type" field still come first.
    assert resolve(json.dumps({"type": "mine", "Records": [record()]}), {}).type == "mine"
    assert parse_message(sqs_message(notification())).type == "s3:ObjectCreated:Put"
    # S3 -> SNS -> SQS: the envelope is unwrapped first.
    assert parse_message(sns_message(notification(), raw_delivery=False)).type == "s3:ObjectCreated:Put"


def test_typed_payloads() -> None:
    rec = S3EventRecord.model_validate_json(notification())
    assert rec.type == "s3:ObjectCreated:Put"
    assert (rec.bucket, rec.key, rec.size) == ("uploads", "incoming/my report(1).csv", 1024)
    assert rec.s3.object.key == "incoming/my+report%281%29.csv"
    assert rec.s3.configuration_id == "sqs-worker-uploads-0"
    event = S3Event.model_validate_json(notification(record(), record("ObjectCreated:Copy")))
    assert [r.type for r in event.records] == ["s3:ObjectCreated:Put", "s3:ObjectCreated:Copy"]
    with pytest.raises(ValueError, match="2 records: take S3Event"):
        S3EventRecord.model_validate_json(notification(record(), record()))
    deleted = S3EventRecord.model_validate(record("ObjectRemoved:Delete") | {"s3": {**record()["s3"]}})
    assert deleted.event_name == "ObjectRemoved:Delete"
    assert S3TestEvent.model_validate_json(TEST_EVENT).bucket == "uploads"


def test_wildcard_families_route_the_most_specific_first() -> None:
    assert families("s3:ObjectCreated:Put") == ["s3:ObjectCreated:*", "s3:*"]
    assert families("order.placed") == []
    router = Router()

    @router.handler("s3:ObjectCreated:*")
    async def created(rec: S3EventRecord) -> None: ...

    @router.handler("s3:ObjectCreated:Copy")
    async def copied(rec: S3EventRecord) -> None: ...

    @router.handler("s3:*")
    async def anything(message: Message) -> None: ...

    registry = Registry.of(router)
    assert _fn(registry, "s3:ObjectCreated:Put") is created
    assert _fn(registry, "s3:ObjectCreated:Copy") is copied
    assert _fn(registry, "s3:ObjectRemoved:Delete") is anything
    assert registry.get("order.placed") is None
    for bad in ("*", "s3:*:Put", "s3*", "s3:**"):
        with pytest.raises(HandlerError, match="trailing ':\\*'"):
            router.add(bad, created)


def _fn(registry: Registry, message_type: str) -> Any:
    route = registry.get(message_type)
    assert route is not None
    return route.fn


def test_the_test_event_has_a_built_in_route_unless_one_is_registered() -> None:
    router = Router()

    @router.handler("s3:*")
    async def anything(message: Message) -> None: ...

    builtin = Registry.of(router).get("s3:TestEvent")
    assert builtin is not None
    assert builtin.fn is not anything
    own = Router()

    @own.handler("s3:TestEvent")
    async def seen(message: Message) -> None: ...

    assert _fn(Registry.of(own), "s3:TestEvent") is seen


async def test_handler_kit_runs_s3_records_and_settles_the_test_event() -> None:
    from worker.testing import HandlerKit

    router = Router()
    got: list[tuple[str, str]] = []

    @router.handler("s3:ObjectCreated:*")
    async def created(rec: S3EventRecord) -> None:
        got.append((rec.bucket, rec.key))

    async with HandlerKit(router) as kit:
        assert (await kit.run(sqs_message(notification()))).outcome == "succeeded"
        assert (await kit.run(sqs_message(TEST_EVENT))).outcome == "succeeded"
        two = await kit.run(sqs_message(notification(record(), record())))
        assert two.outcome == "rejected"
        assert "take S3Event" in two.reason
    assert got == [("uploads", "incoming/my report(1).csv")]
