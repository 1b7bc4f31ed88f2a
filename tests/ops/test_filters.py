"""Would a message published without a type reach any subscription? Against LocalStack."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import Aws
from worker.aws import AwsClient
from worker.errors import NotFoundError
from worker.ops.filters import requires_key, untyped_goes_nowhere
from worker.producer import Producer


@pytest.mark.parametrize(
    ("policy", "required"),
    [
        ({"type": ["order.placed"]}, True),
        ({"type": [{"prefix": "order."}]}, True),
        ({"type": [{"anything-but": ["x"]}]}, True),
        ({"type": [{"exists": True}]}, True),
        ({"type": [{"exists": False}]}, False),
        ({"type": ["a", {"exists": False}]}, False),
        ({"source": ["web"]}, False),
        ({"source": ["web"], "type": ["a"]}, True),
        ({"$or": [{"type": ["a"]}, {"type": [{"prefix": "b"}]}]}, True),
        ({"$or": [{"type": ["a"]}, {"source": ["web"]}]}, False),
        ({"source": ["web"], "$or": [{"type": ["a"]}, {"type": ["b"], "x": ["y"]}]}, True),
        ({"detail": {"type": ["a"]}}, False),  # nested: not the top-level key
        ({}, False),
    ],
)
def test_which_policies_require_the_type(policy: dict[str, Any], required: bool) -> None:
    assert requires_key(policy, "type") is required


async def subscribe(aws: Aws, topic_arn: str, policy: dict[str, Any] | None, scope: str | None = None) -> str:
    queue = await aws.queue(prefix="flt")
    attrs: dict[str, str] = {"RawMessageDelivery": "true"}
    if policy is not None:
        attrs["FilterPolicy"] = json.dumps(policy)
    if scope is not None:
        attrs["FilterPolicyScope"] = scope
    await aws.sqs.set_queue_attributes(
        QueueUrl=queue.url,
        Attributes={
            "Policy": json.dumps(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": queue.arn,
                        }
                    ]
                }
            )
        },
    )
    await aws.sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue.arn, Attributes=attrs, ReturnSubscriptionArn=True
    )
    return queue.url


async def test_a_publish_without_type_is_known_to_go_nowhere(aws: Aws) -> None:
    """Was: `publish TOPIC` without --type succeeded and went nowhere, without a warning."""
    sns = AwsClient(aws.sns)
    name = f"flt-{uuid.uuid4().hex[:8]}"
    arn = (await aws.sns.create_topic(Name=name))["TopicArn"]
    assert await untyped_goes_nowhere(sns, name) is False  # no subscription at all
    q1 = await subscribe(aws, arn, {"type": ["order.placed"]})
    q2 = await subscribe(aws, arn, {"type": [{"prefix": "order."}], "source": ["web"]})
    q3 = await subscribe(aws, arn, {"type": ["order.placed"]}, scope="MessageBody")
    assert await untyped_goes_nowhere(sns, name) is True
    assert await untyped_goes_nowhere(sns, arn) is True
    # What SNS does agrees: no type, nothing delivered; with a type, delivered.
    producer = Producer(AwsClient(aws.sqs), sns)
    await producer.publish(name, {"order_id": "1"})
    await producer.publish(name, {"order_id": "2"}, "order.placed")
    assert [json.loads(m["Body"])["order_id"] for m in await aws.drain(q1)] == ["2"]
    assert await aws.drain(q2) == []  # source missing
    assert await aws.drain(q3) == []  # no "type" in the body
    # One subscription that takes a message without a type is enough.
    await subscribe(aws, arn, {"type": [{"exists": False}]})
    assert await untyped_goes_nowhere(sns, name) is False


async def test_an_unfiltered_or_body_scoped_subscription_takes_untyped_messages(aws: Aws) -> None:
    sns = AwsClient(aws.sns)
    name = f"flt-{uuid.uuid4().hex[:8]}"
    arn = (await aws.sns.create_topic(Name=name))["TopicArn"]
    await subscribe(aws, arn, {"type": ["order.placed"]})
    await subscribe(aws, arn, {"amount": [{"numeric": [">", 10]}]}, scope="MessageBody")
    assert await untyped_goes_nowhere(sns, name) is False
    other = f"flt-{uuid.uuid4().hex[:8]}"
    other_arn = (await aws.sns.create_topic(Name=other))["TopicArn"]
    await subscribe(aws, other_arn, {"type": ["order.placed"]})
    await subscribe(aws, other_arn, None)
    assert await untyped_goes_nowhere(sns, other) is False


async def test_an_unknown_topic_is_not_found(aws: Aws) -> None:
    with pytest.raises(NotFoundError, match="topic 'no-such-topic-f1' does not exist"):
        await untyped_goes_nowhere(AwsClient(aws.sns), "no-such-topic-f1")
