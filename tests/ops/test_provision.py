"""Topology as code against LocalStack: plan, apply, idempotence, fan-out with filters."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_cli import run_worker
from tests.conftest import Aws
from worker.aws import AwsClient
from worker.errors import UnsafeError
from worker.ops.provision import Change, Provisioner, render_plan
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
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch))
    await p.apply(await p.plan())
    return p


async def test_provision_twice_second_plan_is_all_unchanged(aws: Aws) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topology = Topology(**fan_out_topology(prefix))
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch))
    first = await p.plan()
    assert {c.action for c in first} == {"create"}
    # Six queues, one topic, three subscriptions; the default alarms (a DLQ not empty, the
    # oldest message of the queue with a DLQ, the topic's failed deliveries).
    assert len([c for c in first if c.kind != "alarm"]) == 6 + 1 + 3
    assert {c.name for c in first if c.kind == "alarm"} == {a.name for a in topology.alarm_definitions()}
    await p.apply(first)
    again = await Provisioner(
        topology, AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    ).plan()
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
    plan = await Provisioner(
        Topology(**changed), AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    ).plan()
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
    result = run_worker(["provision", "--topology", str(path), "--endpoint-url", "http://127.0.0.1:9"])
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
    p = Provisioner(
        Topology(**smaller), AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    )
    changes = await p.plan()
    assert [c for c in changes if c.action != "unchanged"] == []
    prune = await p.plan_prune()
    deleted = {(c.kind, c.name) for c in prune}
    assert ("queue", f"{prefix}-c") in deleted
    assert (
        "subscription",
        f"{prefix}-orders -> sqs:arn:aws:sqs:us-east-1:000000000000:{prefix}-c",
    ) in deleted
    assert not any(unmanaged.name in name for _, name in deleted)
    assert all(name.startswith(prefix) for _, name in deleted)  # other topologies untouched
    await p.apply_prune(prune)
    queues = (await aws.sqs.list_queues(QueueNamePrefix=prefix)).get("QueueUrls", [])
    names = {u.rsplit("/", 1)[-1] for u in queues}
    assert f"{prefix}-c" not in names
    assert unmanaged.name in names
    assert f"{prefix}-a" in names


def dlq_topology(p: str, with_dlq: bool = True) -> dict[str, Any]:
    queues: dict[str, Any] = {f"{p}-a": {}}
    if with_dlq:
        queues[f"{p}-a-dlq"] = {}
        queues[f"{p}-a"] = {"dead_letter": {"queue": f"{p}-a-dlq", "max_receive_count": 4}}
    return {"name": p, "queues": queues}


async def test_prune_refuses_a_non_empty_dlq_and_detaches_its_sources(aws: Aws) -> None:
    """Was: --prune deleted a DLQ holding messages, without a word, and left the source
    queue's RedrivePolicy pointing at the deleted queue."""
    prefix = f"d{uuid.uuid4().hex[:8]}"
    await provision(aws, Topology(**dlq_topology(prefix)))
    dlq_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-a-dlq"))["QueueUrl"]
    for i in range(3):
        await aws.send(dlq_url, {"n": i}, "order.placed")
    # A queue of someone else's that uses the same DLQ.
    foreign = await aws.queue(prefix=f"{prefix}-theirs")
    redrive = json.dumps({"deadLetterTargetArn": await aws.arn(dlq_url), "maxReceiveCount": "5"})
    await aws.sqs.set_queue_attributes(QueueUrl=foreign.url, Attributes={"RedrivePolicy": redrive})

    p = Provisioner(
        Topology(**dlq_topology(prefix, with_dlq=False)),
        AwsClient(aws.sqs),
        AwsClient(aws.sns),
        cloudwatch=AwsClient(aws.cloudwatch),
    )
    await p.plan()
    prune = await p.plan_prune()
    # The queue, and its default alarms (the DLQ's "not empty", the source's "oldest
    # message", which only queues with a DLQ get).
    assert [(c.kind, c.name, c.messages) for c in prune if c.kind != "alarm"] == [
        ("queue", f"{prefix}-a-dlq", 3)
    ]
    assert {c.name for c in prune if c.kind == "alarm"} == {
        f"{prefix}-{prefix}-a-dlq-not-empty",
        f"{prefix}-{prefix}-a-oldest-message",
    }
    assert prune[0].dead_letter_of == sorted([f"{prefix}-a", foreign.name])
    text = render_plan(prune)
    assert f"- queue        delete  {prefix}-a-dlq" in text
    assert "holds 3 message(s)" in text
    assert f"dead-letter queue of {', '.join(sorted([f'{prefix}-a', foreign.name]))}" in text
    assert "The queues to delete hold 3 message(s)." in text

    with pytest.raises(UnsafeError) as refused:
        await p.apply_prune(prune)
    message = str(refused.value)
    assert f"{prefix}-a-dlq (3 message(s), dead-letter queue of" in message
    assert "--force" in message
    assert "\n" not in message
    assert refused.value.exit_code == 6
    # Nothing was touched.
    assert await aws.total(dlq_url) == 3
    src_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-a"))["QueueUrl"]
    for url in (src_url, foreign.url):
        attrs = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
        assert "RedrivePolicy" in attrs

    detached = await p.apply_prune(prune, force=True)
    assert sorted(detached) == sorted([f"{prefix}-a", foreign.name])
    names = {
        u.rsplit("/", 1)[-1] for u in (await aws.sqs.list_queues(QueueNamePrefix=prefix)).get("QueueUrls", [])
    }
    assert f"{prefix}-a-dlq" not in names
    for url in (src_url, foreign.url):
        attrs = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
        assert not attrs.get("RedrivePolicy"), attrs
    # And the file now matches: nothing left to do.
    again = Provisioner(
        Topology(**dlq_topology(prefix, with_dlq=False)), AwsClient(aws.sqs), AwsClient(aws.sns)
    )
    assert [c for c in await again.plan() if c.action != "unchanged"] == []
    assert await again.plan_prune() == []


async def test_prune_deletes_an_empty_dlq_without_force(aws: Aws) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    await provision(aws, Topology(**dlq_topology(prefix)))
    p = Provisioner(
        Topology(**dlq_topology(prefix, with_dlq=False)),
        AwsClient(aws.sqs),
        AwsClient(aws.sns),
        cloudwatch=AwsClient(aws.cloudwatch),
    )
    await p.plan()
    prune = await p.plan_prune()
    assert [(c.name, c.messages, c.dead_letter_of) for c in prune if c.kind == "queue"] == [
        (f"{prefix}-a-dlq", 0, [f"{prefix}-a"])
    ]
    assert await p.apply_prune(prune) == [f"{prefix}-a"]
    src_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-a"))["QueueUrl"]
    attrs = (await aws.sqs.get_queue_attributes(QueueUrl=src_url, AttributeNames=["All"]))["Attributes"]
    assert not attrs.get("RedrivePolicy")


async def test_plan_shows_a_redrive_policy_change_in_full(aws: Aws) -> None:
    """Was: the diff cut the RedrivePolicy so short that the change was invisible."""
    prefix = f"v{uuid.uuid4().hex[:8]}"
    await provision(aws, Topology(**fan_out_topology(prefix)))
    changed = fan_out_topology(prefix)
    changed["queues"][f"{prefix}-a"]["dead_letter"]["max_receive_count"] = 5
    changed["subscriptions"][0]["filter_policy"] = {"type": ["order.placed", "order.paid"]}
    plan = await Provisioner(
        Topology(**changed), AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    ).plan()
    text = render_plan(plan)
    dlq_arn = f"arn:aws:sqs:us-east-1:000000000000:{prefix}-a-dlq"
    assert "      RedrivePolicy:" in text
    assert (
        f'        - {{\n        -   "deadLetterTargetArn": "{dlq_arn}",\n        -   "maxReceiveCount": 4\n'
        in text
    )
    assert (
        f'        + {{\n        +   "deadLetterTargetArn": "{dlq_arn}",\n        +   "maxReceiveCount": 5\n'
        in text
    )
    assert '+     "order.paid"' in text
    assert "..." not in text
    assert "Plan: 0 to create, 2 to update" in text


def test_render_plan_shows_long_values_whole() -> None:
    policy = json.dumps({"Statement": [{"Sid": "x" * 200, "Effect": "Allow"}]})
    text = render_plan(
        [
            Change(
                "queue", "q", "update", {"Policy": (None, policy), "KmsMasterKeyId": ("a" * 100, "b" * 100)}
            ),
        ]
    )
    assert "        - (unset)" in text
    assert f'"Sid": "{"x" * 200}"' in text
    assert f"KmsMasterKeyId: {'a' * 100} -> {'b' * 100}" in text


async def test_prune_scope_is_the_name_in_the_file(tmp_path: Path) -> None:
    """Was: the scope defaulted to the file name, so a copied file pruned something else."""
    data = dlq_topology("shop")
    named = tmp_path / "topology.yaml"
    named.write_text(yaml.safe_dump(data))
    copy = tmp_path / "topology-copy.yaml"
    copy.write_text(yaml.safe_dump(data))
    for path in (named, copy):
        t = load_topology(path)
        assert Provisioner(t, AwsClient(None), AwsClient(None), cloudwatch=AwsClient(None)).scope == "shop"
        assert t.tags()["sqs-worker-topology"] == "shop"
    del data["name"]
    unnamed = tmp_path / "orders.yaml"
    unnamed.write_text(yaml.safe_dump(data))
    p = Provisioner(load_topology(unnamed), AwsClient(None), AwsClient(None), cloudwatch=AwsClient(None))
    assert p.scope == "default"
    assert not p.named
    with pytest.raises(ConfigError, match=r"--prune needs `name:` in the topology file") as refused:
        await p.plan_prune()  # before any AWS call (the clients here have none)
    assert "\n" not in str(refused.value)


def test_render_plan_keeps_its_columns_with_long_names() -> None:
    """Was: an alarm name longer than the name column pushed its action out of line."""
    long = "team-" + "a-very-long-queue-name-" * 3 + "dlq-not-empty"
    text = render_plan(
        [
            Change("queue", "q", "create"),
            Change("alarm", long, "create"),
            Change("alarm", "short", "unchanged"),
            Change("subscription", "t -> https://example.com/hook", "pending"),
            Change("queue", "shared", "foreign", owner="team-b", scope="team-a"),
        ]
    )
    rows = [line for line in text.splitlines()[:-1] if not line.startswith(" ")]
    assert len(rows) == 5
    # The name is the last column, and every name starts at the same offset.
    starts = {
        row.rindex(name) for row, name in zip(rows, ["q", long, "short", "t -> https", "shared"], strict=True)
    }
    assert len(starts) == 1, text
    assert rows[1].endswith(long)


async def test_a_second_topology_sees_the_first_ones_queue_as_owned_by_it(aws: Aws) -> None:
    """Was: another topology's queue showed as "= unchanged", and an update would have
    re-tagged it as the second file's (so its --prune could delete it)."""
    a, b = f"oa{uuid.uuid4().hex[:6]}", f"ob{uuid.uuid4().hex[:6]}"
    shared = f"{a}-shared"
    await provision(aws, Topology.model_validate({"name": a, "queues": {shared: {}}}))
    unmanaged = f"{b}-by-hand"
    await aws.sqs.create_queue(QueueName=unmanaged)
    second = Topology.model_validate(
        {
            "name": b,
            "queues": {shared: {"visibility_timeout": 99}, f"{b}-own": {}, unmanaged: {}},
            "alarms": {"defaults": False},
        }
    )
    p = Provisioner(second, AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch))
    plan = await p.plan()
    by_name = {c.name: c for c in plan}
    assert by_name[shared].action == "foreign"
    assert by_name[shared].owner == a
    assert by_name[shared].diff == {"VisibilityTimeout": ("30", "99")}
    assert (by_name[unmanaged].action, by_name[unmanaged].managed) == ("unchanged", False)
    text = render_plan(plan)
    assert f"! queue        owned by topology '{a}'  {shared}" in text
    assert f"its sqs-worker-topology tag names '{a}', not this file's '{b}'" in text
    assert re.search(rf"^! queue {{8}}unchanged, not managed +{unmanaged}$", text, re.MULTILINE), text
    assert "not made by provision (no managed-by: sqs-worker tag)" in text
    assert not re.search(rf"^= .*{shared}$", text, re.MULTILINE)
    assert text.endswith("1 of another topology (left as they are), 1 not managed by provision.")
    await p.apply(plan)
    # The other topology's queue is left as it is: attributes and tags.
    url = (await aws.sqs.get_queue_url(QueueName=shared))["QueueUrl"]
    attrs = await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "30"
    assert (await aws.sqs.list_queue_tags(QueueUrl=url))["Tags"]["sqs-worker-topology"] == a
