"""Topology as code against LocalStack: plan, apply, idempotence, fan-out with filters."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_cli import run_worker
from tests.conftest import Aws
from worker.aws import AwsClient
from worker.ops.provision import Provisioner
from worker.ops.topology import Topology, load_topology
from worker.producer import Producer
from worker.settings import ConfigError


def fan_out_topology(p: str) -> dict[str, Any]:
    return {
        "name": p,
        "queues": {
            f"{p}-a-dlq": {"message_retention": 1209600, "redrive_allow": [f"{p}-a"]},
            f"{p}-a": {
                "visibility_timeout": 45,
                "dead_letter": {"queue": f"{p}-a-dlq", "max_receive_count": 4},
            },
            f"{p}-b": {"receive_wait_time": 5},
            f"{p}-c": {"encryption": "none"},
            f"{p}-l-dlq.fifo": {},
            f"{p}-l.fifo": {
                "content_based_deduplication": True,
                "dead_letter": {"queue": f"{p}-l-dlq.fifo", "max_receive_count": 2},
            },
        },
        "topics": {f"{p}-orders": {"display_name": "Orders"}},
        "subscriptions": [
            # enveloped, attribute filter
            {"topic": f"{p}-orders", "queue": f"{p}-a", "filter_policy": {"type": ["order.placed"]}},
            # raw, attribute filter
            {
                "topic": f"{p}-orders",
                "queue": f"{p}-b",
                "raw": True,
                "filter_policy": {"type": ["order.shipped"]},
            },
            # raw, body filter
            {
                "topic": f"{p}-orders",
                "queue": f"{p}-c",
                "raw": True,
                "filter_policy_scope": "MessageBody",
                "filter_policy": {"payment_method": ["invoice"]},
            },
        ],
    }


async def provision(aws: Aws, topology: Topology) -> Provisioner:
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns))
    await p.apply(await p.plan())
    return p


async def test_provision_twice_second_plan_is_all_unchanged(aws: Aws) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topology = Topology(**fan_out_topology(prefix))
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns))
    first = await p.plan()
    assert {c.action for c in first} == {"create"}
    assert len(first) == 6 + 1 + 3
    await p.apply(first)
    again = await Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns)).plan()
    assert [c for c in again if c.action != "unchanged"] == []
    # What was asked for is what exists.
    url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-a"))["QueueUrl"]
    attrs = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    assert attrs["VisibilityTimeout"] == "45"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{prefix}-a-dlq")
    assert int(redrive["maxReceiveCount"]) == 4
    policy = json.loads(attrs["Policy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "sns.amazonaws.com"}
    # A change in the file shows up as exactly that attribute.
    changed = fan_out_topology(prefix)
    changed["queues"][f"{prefix}-a"]["visibility_timeout"] = 90
    plan = await Provisioner(Topology(**changed), AwsClient(aws.sqs), AwsClient(aws.sns)).plan()
    updates = [c for c in plan if c.action == "update"]
    assert len(updates) == 1
    assert updates[0].diff == {"VisibilityTimeout": ("45", "90")}


async def test_fan_out_delivers_only_where_the_filter_matches(aws: Aws) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    await provision(aws, Topology(**fan_out_topology(prefix)))
    producer = Producer(AwsClient(aws.sqs), AwsClient(aws.sns))
    topic = f"{prefix}-orders"
    await producer.publish(topic, {"order_id": "1", "payment_method": "card"}, "order.placed")
    await producer.publish(topic, {"order_id": "2", "payment_method": "invoice"}, "order.shipped")
    await producer.publish(topic, {"order_id": "3", "payment_method": "invoice"}, "order.cancelled")

    async def bodies(queue: str) -> list[tuple[str, dict[str, Any]]]:
        url = (await aws.sqs.get_queue_url(QueueName=queue))["QueueUrl"]
        out = []
        for m in await aws.drain(url):
            out.append((m["Body"], m.get("MessageAttributes") or {}))
        return out

    a = await bodies(f"{prefix}-a")  # enveloped, type = order.placed
    assert len(a) == 1
    envelope = json.loads(a[0][0])
    assert envelope["Type"] == "Notification"
    assert json.loads(envelope["Message"])["order_id"] == "1"
    b = await bodies(f"{prefix}-b")  # raw, type = order.shipped
    assert [json.loads(body)["order_id"] for body, _ in b] == ["2"]
    assert b[0][1]["type"]["StringValue"] == "order.shipped"
    c = await bodies(f"{prefix}-c")  # raw, body payment_method = invoice
    assert sorted(json.loads(body)["order_id"] for body, _ in c) == ["2", "3"]


def test_references_are_checked_before_any_call(tmp_path: Path) -> None:
    bad = {
        "queues": {"a": {"dead_letter": {"queue": "nope", "max_receive_count": 3}}},
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"queues\.a\.dead_letter\.queue: unknown queue 'nope'"):
        load_topology(path)
    result = run_worker(["provision", "-c", str(path), "--endpoint-url", "http://127.0.0.1:9"])
    assert result.returncode == 2
    assert "unknown queue 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"queues": {"a.fifo": {}, "b": {"dead_letter": {"queue": "a.fifo", "max_receive_count": 1}}}},
            "must be FIFO",
        ),
        ({"queues": {"a": {}}, "subscriptions": [{"topic": "t", "queue": "a"}]}, "unknown topic 't'"),
        ({"topics": {"t": {}}, "subscriptions": [{"topic": "t", "queue": "q"}]}, "unknown queue 'q'"),
        ({"queues": {"a": {"visibility_timeout": -1}}}, "queues.a.visibility_timeout"),
        ({"queues": {"a": {"colour": "red"}}}, "queues.a.colour"),
        ({"queues": {"bad name!": {}}}, "names are 1-80"),
    ],
)
def test_malformed_topologies(tmp_path: Path, data: dict[str, Any], needle: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        load_topology(path)


def test_shipped_topology_is_valid() -> None:
    topology = load_topology(Path(__file__).resolve().parents[2] / "config" / "topology.yaml")
    assert topology.queue_order().index("billing-dlq") < topology.queue_order().index("billing")


async def test_prune_deletes_only_managed_resources_the_file_dropped(aws: Aws) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    full = fan_out_topology(prefix)
    await provision(aws, Topology(**full))
    unmanaged = await aws.queue(prefix=f"{prefix}-mine")  # created by someone else, untagged
    smaller = fan_out_topology(prefix)
    del smaller["queues"][f"{prefix}-c"]
    smaller["subscriptions"] = [s for s in smaller["subscriptions"] if s["queue"] != f"{prefix}-c"]
    p = Provisioner(Topology(**smaller), AwsClient(aws.sqs), AwsClient(aws.sns))
    changes = await p.plan()
    assert [c for c in changes if c.action != "unchanged"] == []
    prune = await p.plan_prune()
    deleted = {(c.kind, c.name) for c in prune}
    assert ("queue", f"{prefix}-c") in deleted
    assert ("subscription", f"{prefix}-orders -> arn:aws:sqs:us-east-1:000000000000:{prefix}-c") in deleted
    assert not any(unmanaged.name in name for _, name in deleted)
    assert all(name.startswith(prefix) for _, name in deleted)  # other topologies untouched
    await p.apply_prune(prune)
    queues = (await aws.sqs.list_queues(QueueNamePrefix=prefix)).get("QueueUrls", [])
    names = {u.rsplit("/", 1)[-1] for u in queues}
    assert f"{prefix}-c" not in names
    assert unmanaged.name in names
    assert f"{prefix}-a" in names
