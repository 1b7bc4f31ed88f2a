"""Bad input, property-based: whatever arrives, the worker keeps running, each bad message
ends in the DLQ with its reason logged once, and the good messages around it are handled."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import aws_clients, eventually, running, settings_for
from worker import Router
from worker.observe.logs import configure_logging

# What SQS accepts in a body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF
SQS_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=["Cs"],
        exclude_characters="".join(map(chr, [*range(0x9), 0xB, 0xC, *range(0xE, 0x20), 0xFFFE, 0xFFFF])),
    ),
    min_size=1,
    max_size=300,
)


def original_id(dead: dict[str, Any]) -> str:
    """The id of the message a DLQ entry stands for (the worker's own moves carry it)."""
    attribute = (dead.get("MessageAttributes") or {}).get("worker.original_message_id")
    return str(attribute["StringValue"]) if attribute else str(dead["MessageId"])


class Order(BaseModel):
    order_id: str
    amount: float


def bad_messages() -> st.SearchStrategy[dict[str, Any]]:
    typed = {"type": {"DataType": "String", "StringValue": "order"}}
    return st.one_of(
        SQS_TEXT.map(lambda t: {"MessageBody": t, "MessageAttributes": typed}),  # random text
        st.binary(min_size=1, max_size=200).map(  # random bytes, as SQS can carry them: base64
            lambda b: {"MessageBody": base64.b64encode(b).decode(), "MessageAttributes": typed}
        ),
        st.integers(min_value=100, max_value=5000).map(  # deep nesting
            lambda d: {"MessageBody": "[" * d + "]" * d, "MessageAttributes": typed}
        ),
        st.fixed_dictionaries(  # wrong field types
            {"order_id": st.one_of(st.integers(), st.none(), st.lists(st.integers())), "amount": st.text()}
        ).map(lambda d: {"MessageBody": json.dumps(d), "MessageAttributes": typed}),
        st.just({"MessageBody": json.dumps({"order_id": "1", "amount": 1})}),  # no type at all
        SQS_TEXT.filter(lambda t: t != "order").map(  # a type nobody handles
            lambda t: {
                "MessageBody": "{}",
                "MessageAttributes": {"type": {"DataType": "String", "StringValue": t}},
            }
        ),
        st.sampled_from(  # malformed or empty SNS envelopes
            [
                {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:0:t", "Message": 5},
                {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:0:t", "Message": ""},
                {
                    "Type": "Notification",
                    "TopicArn": "arn:aws:sns:us-east-1:0:t",
                    "Message": "{",
                    "MessageAttributes": {"type": {"Type": "String", "Value": "order"}},
                },
                {
                    "Type": "Notification",
                    "TopicArn": "arn:aws:sns:us-east-1:0:t",
                    "Message": "{}",
                    "MessageAttributes": "garbage",
                },
            ]
        ).map(lambda e: {"MessageBody": json.dumps(e)}),
        st.sampled_from(  # attributes of every data type, none of them a usable type
            [
                {"type": {"DataType": "Number", "StringValue": "42"}},
                {"type": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}},
                {"type": {"DataType": "String.custom", "StringValue": "order.x"}},
                {"other": {"DataType": "Binary", "BinaryValue": b"order"}},
            ]
        ).map(lambda a: {"MessageBody": json.dumps({"order_id": "1", "amount": 1}), "MessageAttributes": a}),
        st.just({"MessageBody": "x" * 262_144}),  # exactly at the 256 KiB limit, no type
    )


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(bad_messages(), min_size=4, max_size=12))
def test_bad_messages_end_in_the_dlq_once_logged_and_good_ones_pass(
    endpoint: str, bad: list[dict[str, Any]]
) -> None:
    asyncio.run(_scenario(endpoint, bad))


async def _scenario(endpoint: str, bad: list[dict[str, Any]]) -> None:
    handled: list[str] = []
    router = Router()

    @router.handler("order")
    async def order(payload: Order) -> None:
        handled.append(payload.order_id)

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        async with aws_clients(endpoint) as aws:
            queue = await aws.queue(max_receive_count=3)
            assert queue.dlq_url
            bad_ids = []
            for i, message in enumerate(bad):
                await aws.send(queue.url, {"order_id": f"good-{i}", "amount": 1}, "order")
                bad_ids.append((await aws.sqs.send_message(QueueUrl=queue.url, **message))["MessageId"])
            settings = settings_for(endpoint, queue, retry_backoff=[0])
            async with running(settings, router) as worker:

                async def settled() -> bool:
                    return await aws.total(queue.url) == 0 and await aws.total(queue.dlq_url) == len(bad)  # type: ignore[arg-type]

                await eventually(settled, timeout=60)
                assert worker.consumers[0].counters.poller_restarts == 0
                assert all(not t.done() for t in worker.consumers[0]._poller_tasks)
            dead = {original_id(m) for m in await aws.drain(queue.dlq_url)}
    finally:
        configure_logging("info", "console")
    assert sorted(handled) == sorted(f"good-{i}" for i in range(len(bad)))
    assert dead == set(bad_ids)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for message_id in bad_ids:
        reasons = [
            line
            for line in lines
            if line.get("message_id") == message_id and line["event"] == "message_rejected"
        ]
        assert len(reasons) == 1, (message_id, reasons)
        assert reasons[0]["reason"]
