"""Subscriptions of every protocol in the topology: validated per protocol, created with
their attributes, an HTTP endpoint shown as pending until it confirms, then delivered to
(raw, with its delivery policy), and pruned when the file drops it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.conftest import Aws
from worker.aws import AwsClient
from worker.ops.provision import Provisioner, render_plan
from worker.ops.topology import Topology, load_topology
from worker.settings import ConfigError

ACCOUNT = "000000000000"


def provisioner(aws: Aws, spec: dict[str, Any]) -> Provisioner:
    return Provisioner(
        Topology(**spec), AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    )


class Endpoint:
    """An HTTP endpoint SNS posts to: it records every request body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            # SNS names the kind in a header, raw deliveries too; only an enveloped body
            # is SNS's JSON with a "Type".
            text = await request.text()
            kind = request.headers.get("x-amz-sns-message-type", "")
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            if isinstance(body, dict) and "Type" in body:
                self.posts.append({"type": kind, **body})
            else:
                self.raw.append(text)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, what: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what == "raw" and self.raw:
                return self.raw[-1]
            found = [p for p in self.posts if p["type"] == what]
            if found:
                return found[-1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {what} reached the endpoint: {self.posts} {self.raw}")


def every_protocol(p: str, url: str) -> dict[str, Any]:
    return {
        "name": p,
        "topics": {f"{p}-t": {}},
        "subscriptions": [
            {
                "topic": f"{p}-t",
                "protocol": "http",
                "endpoint": url,
                "raw": True,
                "filter_policy": {"type": ["order.placed"]},
                "delivery_policy": {
                    "healthyRetryPolicy": {"numRetries": 2, "minDelayTarget": 1, "maxDelayTarget": 1}
                },
            },
            {"topic": f"{p}-t", "protocol": "email", "endpoint": "oncall@example.com"},
            {"topic": f"{p}-t", "protocol": "email-json", "endpoint": "robot@example.com"},
            {"topic": f"{p}-t", "protocol": "sms", "endpoint": "+15555550100"},
            {
                "topic": f"{p}-t",
                "protocol": "lambda",
                "endpoint": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{p}-fn",
            },
            {
                "topic": f"{p}-t",
                "protocol": "firehose",
                "endpoint": f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{p}-s",
                "subscription_role_arn": f"arn:aws:iam::{ACCOUNT}:role/sns-to-firehose",
                "raw": True,
            },
        ],
        "alarms": {"defaults": False},
    }


async def test_every_protocol_is_subscribed_confirmed_delivered_and_pruned(aws: Aws) -> None:
    p = f"sp{uuid.uuid4().hex[:8]}"
    endpoint = Endpoint()
    await endpoint.start()
    try:
        spec = every_protocol(p, endpoint.url)
        first = provisioner(aws, spec)
        plan = await first.plan()
        assert {c.action for c in plan} == {"create"}
        await first.apply(plan)
        topic_arn = first.existing.topic_arns[f"{p}-t"]
        subs = (await aws.sns.list_subscriptions_by_topic(TopicArn=topic_arn))["Subscriptions"]
        assert sorted(s["Protocol"] for s in subs) == sorted(
            ["http", "email", "email-json", "sms", "lambda", "firehose"]
        )
        firehose = next(s for s in subs if s["Protocol"] == "firehose")
        attrs = (await aws.sns.get_subscription_attributes(SubscriptionArn=firehose["SubscriptionArn"]))[
            "Attributes"
        ]
        assert attrs["SubscriptionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/sns-to-firehose"
        assert attrs["RawMessageDelivery"] == "true"

        # The HTTP endpoint was asked to confirm; until it does the plan says so.
        confirmation = await endpoint.wait("SubscriptionConfirmation")
        pending = await provisioner(aws, spec).plan()
        [waiting] = [c for c in pending if c.kind == "subscription" and c.name == f"{p}-t -> {endpoint.url}"]
        assert waiting.action == "pending"
        assert "pending confirmation" in render_plan(pending)
        await aws.sns.confirm_subscription(TopicArn=topic_arn, Token=confirmation["Token"])

        # Confirmed: its attributes are what the file says, and the next plan is all done
        # (email addresses may stay pending: nobody reads those inboxes).
        again = await provisioner(aws, spec).plan()
        assert {c.action for c in again} <= {"unchanged", "pending"}, render_plan(again)
        http = next(
            s
            for s in (await aws.sns.list_subscriptions_by_topic(TopicArn=topic_arn))["Subscriptions"]
            if s["Protocol"] == "http"
        )
        attrs = (await aws.sns.get_subscription_attributes(SubscriptionArn=http["SubscriptionArn"]))[
            "Attributes"
        ]
        assert attrs["RawMessageDelivery"] == "true"
        assert json.loads(attrs["FilterPolicy"]) == {"type": ["order.placed"]}
        assert json.loads(attrs["DeliveryPolicy"])["healthyRetryPolicy"]["numRetries"] == 2

        # Raw delivery, filtered: only the matching message arrives, as it was published.
        await aws.sns.publish(
            TopicArn=topic_arn,
            Message='{"skipped": true}',
            MessageAttributes={"type": {"DataType": "String", "StringValue": "order.shipped"}},
        )
        await aws.sns.publish(
            TopicArn=topic_arn,
            Message='{"order_id": "A-1"}',
            MessageAttributes={"type": {"DataType": "String", "StringValue": "order.placed"}},
        )
        assert await endpoint.wait("raw") == '{"order_id": "A-1"}'
        assert endpoint.raw == ['{"order_id": "A-1"}']

        # Dropped from the file: --prune unsubscribes them (whatever the protocol).
        smaller = {**spec, "subscriptions": spec["subscriptions"][:1]}
        prune = provisioner(aws, smaller)
        await prune.plan()
        deletions = await prune.plan_prune()
        dropped = {c.name for c in deletions if c.kind == "subscription"}
        assert f"{p}-t -> sms:+15555550100" in dropped
        assert f"{p}-t -> lambda:arn:aws:lambda:us-east-1:{ACCOUNT}:function:{p}-fn" in dropped
        await prune.apply_prune(deletions)
        left = (await aws.sns.list_subscriptions_by_topic(TopicArn=topic_arn))["Subscriptions"]
        assert {s["Protocol"] for s in left if "pending" not in s["SubscriptionArn"].lower()} <= {
            "http",
            "email",
            "email-json",
        }
        assert "sms" not in {s["Protocol"] for s in left}
    finally:
        await endpoint.stop()


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sub(**fields: Any) -> dict[str, Any]:
    return {
        "topics": {"t": {}, "t.fifo": {}},
        "queues": {"q": {}},
        "subscriptions": [{"topic": "t", **fields}],
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            sub(protocol="https", endpoint="http://x.example/hook"),
            "subscriptions.0.endpoint: 'http://x.example/hook' is not an https:// URL",
        ),
        (
            sub(protocol="email"),
            "subscriptions.0.endpoint: a email subscription needs an endpoint (an email address)",
        ),
        (
            sub(protocol="email", endpoint="ops@example.com", raw=True),
            "subscriptions.0.raw: raw delivery is for sqs, http, https and firehose, not email",
        ),
        (
            sub(protocol="sms", endpoint="555-0100"),
            "subscriptions.0.endpoint: '555-0100' is not a phone number in E.164 form (+15555550100)",
        ),
        (
            sub(protocol="lambda", endpoint="my-function"),
            "subscriptions.0.endpoint: 'my-function' is not a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>)",
        ),
        (
            sub(protocol="firehose", endpoint=f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/s"),
            "subscriptions.0.subscription_role_arn: a firehose subscription needs the role SNS assumes",
        ),
        (
            sub(protocol="http", endpoint="http://x.example", queue="q"),
            "subscriptions.0.queue: only sqs subscriptions name a queue (protocol is 'http')",
        ),
        (
            sub(queue="q", delivery_policy={"healthyRetryPolicy": {}}),
            "subscriptions.0.delivery_policy: delivery policies are for http and https endpoints",
        ),
        (sub(protocol="sqs"), "subscriptions.0.queue: an sqs subscription names a queue of this file"),
        (
            {
                "topics": {"t.fifo": {}},
                "subscriptions": [{"topic": "t.fifo", "protocol": "email", "endpoint": "a@b.co"}],
            },
            "subscriptions.0: FIFO topic 't.fifo' delivers to SQS queues only",
        ),
        (
            sub(protocol="pigeon", endpoint="x"),
            "subscriptions.0.protocol: Input should be 'sqs', 'http', 'https', 'email', 'email-json', 'sms', "
            "'lambda', 'firehose' or 'application' (got 'pigeon')",
        ),
    ],
)
def test_subscription_errors_are_one_line_naming_the_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"invalid topology ({path}): ")
    assert str(info.value).removeprefix(f"invalid topology ({path}): ") == expected


def test_a_confirmed_subscription_of_a_topic_named_pending_is_not_pending() -> None:
    from worker.ops.provision import is_pending

    arn = f"arn:aws:sns:us-east-1:{ACCOUNT}:spending-alerts:0b7c9b6e-1f7a-4c0e-9a55-3c2b1d7e6f10"
    assert not is_pending(arn, {"PendingConfirmation": "false"})
    assert is_pending(arn, {"PendingConfirmation": "true"})
    assert is_pending("PendingConfirmation", {})
