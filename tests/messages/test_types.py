"""Any queue, not only ours: message types from the conventions AWS services and other
producers use, a default handler for messages without one, with AWS's sample event shapes
(tests/messages/sample_events.py), through the testing kit and the Lambda entry point
(the worker's own per-message path)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from tests.messages import sample_events as aws
from worker import Message, Router, S3Event
from worker.aws_lambda import make_handler
from worker.messages.envelope import parse_message
from worker.messages.routing import HandlerError
from worker.messages.types import TypeRules
from worker.settings import QueueSettings, TypeSettings
from worker.testing import HandlerKit


class Order(BaseModel):
    order_id: str
    amount: int


class Alarm(BaseModel):
    AlarmName: str
    NewStateValue: str
    OldStateValue: str


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Message]] = []

    def add(self, name: str, payload: Any, message: Message) -> None:
        self.calls.append((name, payload, message))


def _settings(**types: Any) -> QueueSettings:
    return QueueSettings(handlers=["<test>"], retry_jitter=0, types=TypeSettings(**types))


async def _run(router: Router, raw: dict[str, Any], **types: Any) -> Any:
    async with HandlerKit(router, settings=_settings(**types)) as kit:
        return await kit.run(raw)


def test_without_a_default_an_untyped_message_is_still_rejected() -> None:
    router = Router()

    @router.handler("order.placed")
    async def placed(order: dict[str, Any]) -> None: ...

    import asyncio

    result = asyncio.run(_run(router, aws.receive_entry('{"order_id": "1"}')))
    assert result.outcome == "rejected"
    assert result.reason == "message has no type"


async def test_plain_text_and_plain_json_go_to_the_default_handler_by_annotation() -> None:
    seen = Seen()
    router = Router()

    @router.default()
    async def anything(body: str, message: Message) -> None:
        seen.add("text", body, message)

    result = await _run(router, aws.receive_entry("Hello from SQS!"))
    assert result.outcome == "succeeded"
    result = await _run(router, aws.receive_entry('{"order_id": "1", "amount": 10}'))
    assert result.outcome == "succeeded"
    assert [(c[1], c[2].type) for c in seen.calls] == [
        ("Hello from SQS!", None),
        ('{"order_id": "1", "amount": 10}', None),
    ]


async def test_a_default_handler_with_a_model_validates_the_body() -> None:
    orders: list[Order] = []
    router = Router()

    @router.default()
    async def order(o: Order) -> None:
        orders.append(o)

    assert (await _run(router, aws.receive_entry('{"order_id": "1", "amount": 10}'))).outcome == "succeeded"
    bad = await _run(router, aws.receive_entry('{"order_id": "1"}'))
    assert bad.outcome == "rejected"
    assert "invalid payload for Order: amount: Field required" in bad.reason
    assert orders == [Order(order_id="1", amount=10)]


async def test_unknown_types_are_rejected_unless_the_default_takes_them() -> None:
    router = Router()
    taken: list[str | None] = []

    @router.default()
    async def fallback(body: Any, message: Message) -> None:
        taken.append(message.type)

    raw = aws.receive_entry('{"type": "order.refunded"}')
    rejected = await _run(router, raw)
    assert rejected.outcome == "rejected"
    assert rejected.reason == "unknown message type 'order.refunded'"
    assert (await _run(router, raw, unknown="default")).outcome == "succeeded"
    assert taken == ["order.refunded"]

    wide = Router()

    @wide.default(unknown=True)
    async def everything(body: Any) -> None: ...

    assert (await _run(wide, raw)).outcome == "succeeded"


async def test_the_queue_config_alone_names_the_type_of_untyped_messages() -> None:
    router = Router()
    greeted: list[str] = []

    @router.handler("greet")
    async def greet(body: dict[str, str]) -> None:
        greeted.append(body["name"])

    raw = aws.receive_entry('{"name": "Ada"}')
    assert (await _run(router, raw)).outcome == "rejected"
    assert (await _run(router, raw, default="greet")).outcome == "succeeded"
    assert greeted == ["Ada"]


async def test_a_dotted_field_names_the_type() -> None:
    router = Router()

    @router.handler("order.placed")
    async def placed(body: dict[str, Any]) -> None: ...

    raw = aws.receive_entry('{"meta": {"kind": "order.placed"}, "order_id": "1"}')
    assert (await _run(router, raw)).reason == "message has no type"
    assert (await _run(router, raw, field="meta.kind")).outcome == "succeeded"


async def test_sns_notification_standard_and_fifo_with_plain_json() -> None:
    seen = Seen()
    router = Router()

    @router.default()
    async def note(body: dict[str, Any], message: Message) -> None:
        seen.add("sns", body, message)

    standard = aws.receive_entry(aws.sns_notification('{"order_id": "1"}', subject="order"))
    fifo = aws.receive_entry(
        aws.sns_notification('{"order_id": "2"}', fifo=True), group_id="g1", dedup_id="d-2"
    )
    assert (await _run(router, standard)).outcome == "succeeded"
    assert (await _run(router, fifo)).outcome == "succeeded"
    assert [c[1] for c in seen.calls] == [{"order_id": "1"}, {"order_id": "2"}]
    assert seen.calls[1][2].topic_arn == "arn:aws:sns:us-east-1:123456789012:orders.fifo"
    assert seen.calls[1][2].group_id == "g1"


async def test_sns_notification_with_a_type_attribute_still_dispatches_by_it() -> None:
    router = Router()
    got: list[Any] = []

    @router.handler("order.placed")
    async def placed(body: dict[str, Any]) -> None:
        got.append(body)

    raw = aws.receive_entry(aws.sns_notification('{"order_id": "1"}', type="order.placed"))
    assert (await _run(router, raw)).outcome == "succeeded"
    assert got == [{"order_id": "1"}]


@pytest.mark.parametrize(
    ("event_name", "key", "decoded"),
    [
        ("ObjectCreated:Put", "reports/Q1+summary%2Bfinal.csv", "reports/Q1 summary+final.csv"),
        ("ObjectRemoved:Delete", "photos/cat+picture.jpg", "photos/cat picture.jpg"),
        ("ObjectRestore:Completed", "archive/2025%2F12+log.gz", "archive/2025/12 log.gz"),
    ],
)
async def test_s3_notifications_route_by_event_name_with_decoded_keys(
    event_name: str, key: str, decoded: str
) -> None:
    router = Router()
    got: list[tuple[str, str, int | None]] = []

    @router.handler("s3:*")
    async def on_object(event: S3Event) -> None:
        record = event.records[0]
        got.append((record.event_name, record.key, record.s3.object.size))

    size = None if event_name.startswith("ObjectRemoved") else 1024
    extra = (
        {
            "glacierEventData": {
                "restoreEventData": {
                    "lifecycleRestorationExpiryTime": "2026-02-01T00:00:00.000Z",
                    "lifecycleRestoreStorageClass": "GLACIER",
                }
            }
        }
        if event_name.startswith("ObjectRestore")
        else None
    )
    raw = aws.receive_entry(aws.s3_notification(event_name, key, size=size, extra=extra))
    result = await _run(router, raw)
    assert result.outcome == "succeeded", result.reason
    assert got == [(event_name, decoded, size)]
    assert result.message.type == f"s3:{event_name}"


async def test_eventbridge_event_dispatches_by_detail_type_and_hands_over_the_detail() -> None:
    seen = Seen()
    router = Router()

    @router.handler("EC2 Instance State-change Notification")
    async def state(detail: dict[str, str], message: Message) -> None:
        seen.add("ec2", detail, message)

    body = aws.eventbridge_event(
        "EC2 Instance State-change Notification",
        "aws.ec2",
        {"instance-id": "i-abcd1111", "state": "terminated"},
    )
    result = await _run(router, aws.receive_entry(body))
    assert result.outcome == "succeeded", result.reason
    [(_, detail, message)] = seen.calls
    assert detail == {"instance-id": "i-abcd1111", "state": "terminated"}
    assert message.envelope == "eventbridge"
    assert message.source == "aws.ec2"
    assert message.metadata["region"] == "us-east-1"
    assert message.metadata["resources"] == ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"]
    assert "detail" not in message.metadata


async def test_cloudwatch_alarm_through_sns_to_a_default_handler_or_by_a_field() -> None:
    alarms: list[Alarm] = []
    router = Router()

    @router.default()
    async def alarm(a: Alarm) -> None:
        alarms.append(a)

    raw = aws.receive_entry(
        aws.sns_notification(
            aws.cloudwatch_alarm_message(), subject='ALARM: "orders-dlq-not-empty" in US East'
        )
    )
    assert (await _run(router, raw)).outcome == "succeeded"
    assert alarms == [Alarm(AlarmName="orders-dlq-not-empty", NewStateValue="ALARM", OldStateValue="OK")]

    by_state = Router()
    states: list[str] = []

    @by_state.handler("ALARM")
    async def raised(a: dict[str, Any]) -> None:
        states.append(a["AlarmName"])

    assert (await _run(by_state, raw, field="NewStateValue")).outcome == "succeeded"
    assert states == ["orders-dlq-not-empty"]


async def test_cloudevents_structured_and_binary() -> None:
    seen = Seen()
    router = Router()

    @router.handler("com.example.order.placed")
    async def placed(data: dict[str, Any], message: Message) -> None:
        seen.add("ce", data, message)

    structured = aws.receive_entry(
        aws.cloudevent("com.example.order.placed", {"order_id": "1"}, subject="o-1")
    )
    binary = aws.receive_entry(
        '{"order_id": "2"}',
        {
            "ce-specversion": "1.0",
            "ce-type": "com.example.order.placed",
            "ce-source": "/shop",
            "ce-id": "x-2",
        },
    )
    assert (await _run(router, structured)).outcome == "succeeded"
    assert (await _run(router, binary)).outcome == "succeeded"
    (_, first, m1), (_, second, m2) = seen.calls
    assert first == {"order_id": "1"}
    assert second == {"order_id": "2"}
    assert (m1.envelope, m1.source, m1.metadata["subject"], m1.metadata["id"]) == (
        "cloudevents",
        "/shop/orders",
        "o-1",
        "A234-1234-1234",
    )
    assert (m2.envelope, m2.source, m2.metadata["id"]) == ("cloudevents", "/shop", "x-2")


def test_sources_follow_the_queues_order_and_only_the_ones_it_names() -> None:
    body = aws.eventbridge_event("Order Placed", "shop", {"type": "inner"})
    everything = parse_message(aws.receive_entry(body, {"type": "from-attribute"}))
    assert everything.type == "from-attribute"
    assert everything.body == '{"type":"inner"}'  # still unwrapped: the queue reads EventBridge
    eventbridge_first = parse_message(
        aws.receive_entry(body, {"type": "from-attribute"}), TypeRules(sources=("eventbridge", "attribute"))
    )
    assert eventbridge_first.type == "Order Placed"
    field_only = parse_message(aws.receive_entry(body), TypeRules(sources=("field",)))
    assert field_only.type is None  # no top-level type; EventBridge not read: body as sent
    assert field_only.body == body
    assert field_only.envelope is None


def test_two_default_handlers_are_refused() -> None:
    first, second = Router(), Router()

    @first.default()
    async def a(body: Any) -> None: ...

    @second.default()
    async def b(body: Any) -> None: ...

    with pytest.raises(HandlerError, match="two default handlers"):
        HandlerKit(first, second)


def test_the_lambda_entry_point_takes_the_same_rules() -> None:
    router = Router()
    handled: list[Any] = []

    @router.default()
    async def fallback(body: str) -> None:  # str: the raw text, JSON or not
        handled.append(body)

    @router.handler("Order Placed")
    async def placed(detail: dict[str, Any]) -> None:
        handled.append(detail)

    records = [
        {
            "messageId": "m-1",
            "receiptHandle": "r",
            "body": "plain text",
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:us-east-1:{aws.ACCOUNT}:q",
        },
        {
            "messageId": "m-2",
            "receiptHandle": "r",
            "body": aws.eventbridge_event("Order Placed", "shop", {"order_id": "1"}),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:us-east-1:{aws.ACCOUNT}:q",
        },
    ]
    handler = make_handler(router)
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    assert handled == ["plain text", {"order_id": "1"}]
    configured = make_handler(Router(), settings=None)
    assert (
        json.dumps(configured({"Records": records[:1]}, None))
        == '{"batchItemFailures": [{"itemIdentifier": "m-1"}]}'
    )


def test_someones_json_with_a_few_eventbridge_fields_is_not_unwrapped() -> None:
    body = '{"order": 1, "detail-type": "x", "source": "app", "detail": {"a": "é"}}'
    message = parse_message(aws.receive_entry(body, {"type": "order.placed"}))
    assert (message.type, message.body, message.envelope) == ("order.placed", body, None)
    full = parse_message(aws.receive_entry(aws.eventbridge_event("x", "app", {"a": "é"})))
    assert full.body == '{"a":"é"}'  # unwrapped, its text as sent (not escaped)
