"""SNS fan-out: enveloped and raw deliveries reach their handler with attributes and type."""

from __future__ import annotations

import json

from pydantic import BaseModel

from tests.conftest import Aws, eventually, running
from worker import Message, Router
from worker.messages.envelope import parse_message
from worker.messages.types import TypeRules
from worker.settings import load_settings


class Placed(BaseModel):
    order_id: str


def test_envelope_is_unwrapped_and_its_attributes_honoured() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:orders",
        "Message": json.dumps({"order_id": "A-1"}),
        "MessageAttributes": {"type": {"Type": "String", "Value": "order.placed"}},
    }
    raw = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh",
        "Body": json.dumps(envelope),
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
    }
    message = parse_message(raw)
    assert message.type == "order.placed"
    assert message.body == json.dumps({"order_id": "A-1"})
    assert message.topic_arn == "arn:aws:sns:us-east-1:000000000000:orders"
    assert message.receive_count == 2
    assert message.sent_timestamp_ms == 1700000000000


def test_type_comes_from_attribute_then_body_and_bad_bodies_do_not_raise() -> None:
    with_attr = {
        "MessageId": "1",
        "ReceiptHandle": "r",
        "Body": '{"type": "from.body"}',
        "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "from.attr"}},
    }
    assert parse_message(with_attr, TypeRules("kind")).type == "from.attr"
    assert parse_message(with_attr).type == "from.body"
    for body in ["", "not json", "[1, 2]", '{"type": 5}', '{"Type": "Notification", "TopicArn": 1}']:
        assert parse_message({"MessageId": "1", "ReceiptHandle": "r", "Body": body}).type is None


async def test_sns_fan_out_enveloped_and_raw_reach_their_handler(aws: Aws) -> None:
    topic = (await aws.sns.create_topic(Name="orders-test"))["TopicArn"]
    enveloped = await aws.queue(prefix="env")
    raw = await aws.queue(prefix="raw")
    for queue, raw_delivery in ((enveloped, "false"), (raw, "true")):
        await aws.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue.arn,
            Attributes={"RawMessageDelivery": raw_delivery},
        )
    seen: list[tuple[str, str, str, str | None]] = []
    router = Router()

    @router.handler("order.placed")
    async def placed(order: Placed, message: Message) -> None:
        seen.append(
            (order.order_id, message.attributes.get("tenant", ""), message.topic_arn or "", message.type)
        )

    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
            "queues": {
                "enveloped": {
                    "name": enveloped.name,
                    "handlers": ["tests.support.noop"],
                    "wait_time_seconds": 1,
                },
                "raw": {"name": raw.name, "handlers": ["tests.support.noop"], "wait_time_seconds": 1},
            },
        },
    )
    await aws.sns.publish(
        TopicArn=topic,
        Message=json.dumps({"order_id": "A-1"}),
        MessageAttributes={
            "type": {"DataType": "String", "StringValue": "order.placed"},
            "tenant": {"DataType": "String", "StringValue": "acme"},
        },
    )
    # No attribute: the type comes from the published JSON body, through both deliveries.
    await aws.sns.publish(TopicArn=topic, Message=json.dumps({"type": "order.placed", "order_id": "A-2"}))
    async with running(settings, router) as worker:
        await eventually(lambda: sum(c.counters.succeeded for c in worker.consumers) == 4, timeout=20)
    assert sorted(seen) == sorted(
        [
            ("A-1", "acme", topic, "order.placed"),  # enveloped: unwrapped, attributes from the envelope
            ("A-1", "acme", "", "order.placed"),  # raw: SNS copied the attributes
            ("A-2", "", topic, "order.placed"),
            ("A-2", "", "", "order.placed"),
        ]
    )
