"""CloudWatch alarms of the topology against LocalStack's CloudWatch: what provision puts
(metric, dimensions, threshold, actions, tags), the defaults, updates, pruning, and an
alarm that really goes to ALARM when its DLQ gets a message and tells the topic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Aws
from worker.aws import AwsClient
from worker.ops.provision import Provisioner, render_plan
from worker.ops.topology import Topology, load_topology
from worker.settings import ConfigError


def provisioner(aws: Aws, spec: dict[str, Any]) -> Provisioner:
    return Provisioner(
        Topology(**spec), AwsClient(aws.sqs), AwsClient(aws.sns), cloudwatch=AwsClient(aws.cloudwatch)
    )


async def alarms(aws: Aws, prefix: str) -> dict[str, dict[str, Any]]:
    found = await aws.cloudwatch.describe_alarms(AlarmNamePrefix=f"{prefix}-")
    return {a["AlarmName"]: a for a in found["MetricAlarms"]}


def shop(p: str) -> dict[str, Any]:
    return {
        "name": p,
        "queues": {
            f"{p}-dlq": {},
            f"{p}-q": {
                "visibility_timeout": 200,
                "dead_letter": {"queue": f"{p}-dlq", "max_receive_count": 3},
                "alarms": {"depth": {"above": 100, "periods": 3}, "sent_per_day": 50_000},
            },
        },
        "topics": {f"{p}-alerts": {}, f"{p}-events": {"alarms": {"published_per_day": 1000}}},
        "alarms": {"notify": [f"{p}-alerts"]},
    }


async def test_alarms_are_created_unchanged_updated_and_pruned(aws: Aws) -> None:
    p = f"al{uuid.uuid4().hex[:8]}"
    first = provisioner(aws, shop(p))
    plan = await first.plan()
    await first.apply(plan)
    found = await alarms(aws, p)
    assert set(found) == {
        f"{p}-{p}-q-depth",
        f"{p}-{p}-q-sent-per-day",
        f"{p}-{p}-q-oldest-message",  # default: the queue has a DLQ
        f"{p}-{p}-dlq-not-empty",  # default: a DLQ
        f"{p}-{p}-alerts-failed-deliveries",  # default: every topic
        f"{p}-{p}-events-failed-deliveries",
        f"{p}-{p}-events-published-per-day",
    }
    topic_arn = first.existing.topic_arns[f"{p}-alerts"]
    depth = found[f"{p}-{p}-q-depth"]
    assert (depth["Namespace"], depth["MetricName"], depth["Statistic"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
    )
    assert depth["Dimensions"] == [{"Name": "QueueName", "Value": f"{p}-q"}]
    assert (depth["Threshold"], depth["Period"], depth["EvaluationPeriods"]) == (100, 60, 3)
    assert depth["ComparisonOperator"] == "GreaterThanThreshold"
    assert depth["AlarmActions"] == [topic_arn]
    assert depth["OKActions"] == [topic_arn]
    assert depth["TreatMissingData"] == "notBreaching"
    # The oldest-message default: 2 x visibility (200 s) x max receive count (3) = 1200 s.
    oldest = found[f"{p}-{p}-q-oldest-message"]
    assert (oldest["MetricName"], oldest["Threshold"]) == ("ApproximateAgeOfOldestMessage", 1200)
    dlq = found[f"{p}-{p}-dlq-not-empty"]
    assert (dlq["Dimensions"], dlq["Threshold"], dlq["EvaluationPeriods"]) == (
        [{"Name": "QueueName", "Value": f"{p}-dlq"}],
        0,
        1,
    )
    usage = found[f"{p}-{p}-q-sent-per-day"]
    assert (usage["MetricName"], usage["Statistic"], usage["Period"], usage["Threshold"]) == (
        "NumberOfMessagesSent",
        "Sum",
        86_400,
        50_000,
    )
    failures = found[f"{p}-{p}-events-failed-deliveries"]
    assert (failures["Namespace"], failures["MetricName"], failures["Dimensions"]) == (
        "AWS/SNS",
        "NumberOfNotificationsFailed",
        [{"Name": "TopicName", "Value": f"{p}-events"}],
    )
    published = found[f"{p}-{p}-events-published-per-day"]
    assert (published["MetricName"], published["Threshold"]) == ("NumberOfMessagesPublished", 1000)
    tags = await aws.cloudwatch.list_tags_for_resource(ResourceARN=depth["AlarmArn"])
    assert {t["Key"]: t["Value"] for t in tags["Tags"]} == {
        "managed-by": "sqs-worker",
        "sqs-worker-topology": p,
    }

    # Applied twice: nothing to do.
    again = await provisioner(aws, shop(p)).plan()
    assert [(c.kind, c.name) for c in again if c.action != "unchanged"] == []

    # A changed threshold is an update that shows old and new.
    changed = shop(p)
    changed["queues"][f"{p}-q"]["alarms"]["depth"] = {"above": 250, "periods": 3}
    update = provisioner(aws, changed)
    plan = await update.plan()
    [c] = [c for c in plan if c.action != "unchanged"]
    assert (c.kind, c.name, c.action) == ("alarm", f"{p}-{p}-q-depth", "update")
    assert "Threshold: GreaterThanThreshold 100 -> GreaterThanThreshold 250" in render_plan(plan)
    await update.apply(plan)
    assert (await alarms(aws, p))[f"{p}-{p}-q-depth"]["Threshold"] == 250

    # Defaults off and the usage alarm dropped: --prune deletes what the file no longer has.
    smaller = shop(p)
    smaller["alarms"]["defaults"] = False
    del smaller["queues"][f"{p}-q"]["alarms"]["sent_per_day"]
    prune = provisioner(aws, smaller)
    await prune.plan()
    deletions = await prune.plan_prune()
    assert {c.name for c in deletions if c.kind == "alarm"} == {
        f"{p}-{p}-q-sent-per-day",
        f"{p}-{p}-q-oldest-message",
        f"{p}-{p}-dlq-not-empty",
        f"{p}-{p}-alerts-failed-deliveries",
        f"{p}-{p}-events-failed-deliveries",
    }
    await prune.apply_prune(deletions)
    assert set(await alarms(aws, p)) == {f"{p}-{p}-q-depth", f"{p}-{p}-events-published-per-day"}


async def test_a_dlq_alarm_goes_to_alarm_and_tells_the_topic(aws: Aws) -> None:
    """LocalStack reports queue depth to CloudWatch every 5 s (tests/servers.py) and
    evaluates an alarm every period: the default one-minute period fires within ~70 s."""
    p = f"as{uuid.uuid4().hex[:8]}"
    spec = {
        "name": p,
        "queues": {
            f"{p}-dlq": {},  # not_empty by default: the DLQ of a queue
            f"{p}-q": {"dead_letter": {"queue": f"{p}-dlq", "max_receive_count": 3}},
            f"{p}-oncall": {},
        },
        "topics": {f"{p}-alerts": {}},
        "subscriptions": [{"topic": f"{p}-alerts", "queue": f"{p}-oncall", "raw": True}],
        "alarms": {"notify": [f"{p}-alerts"]},
    }
    prov = provisioner(aws, spec)
    await prov.apply(await prov.plan())
    name = f"{p}-{p}-dlq-not-empty"
    await aws.sqs.send_message(QueueUrl=prov.existing.queue_urls[f"{p}-dlq"], MessageBody="failed")
    deadline = time.monotonic() + 150
    state = ""
    while time.monotonic() < deadline:
        [alarm] = (await aws.cloudwatch.describe_alarms(AlarmNames=[name]))["MetricAlarms"]
        state = alarm["StateValue"]
        if state == "ALARM":
            break
        await asyncio.sleep(1)
    assert state == "ALARM", alarm.get("StateReason")
    # The notification reached the topic of the file, and through it the on-call queue.
    # The notification reached the topic of the file, and through it the on-call queue
    # (an OK may come first: the alarm starts in INSUFFICIENT_DATA, OK actions are on).
    url = prov.existing.queue_urls[f"{p}-oncall"]
    states: list[tuple[str, str]] = []
    deadline = time.monotonic() + 20
    while ("ALARM" not in [s for _, s in states]) and time.monotonic() < deadline:
        got = await aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, MaxNumberOfMessages=10)
        for note in got.get("Messages", []):
            body = json.loads(note["Body"])
            states.append((body["AlarmName"], body["NewStateValue"]))
    assert (name, "ALARM") in states, states


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"queues": {"q": {"alarms": {"depth": True}}}},
            "queues.q.alarms.depth: needs `above` (the visible messages that should raise the alarm)",
        ),
        (
            {"queues": {"q": {"alarms": {"not_empty": {"period": 30}}}}},
            "queues.q.alarms.not_empty.period: period must be a multiple of 60 seconds "
            "(SQS and SNS report one-minute metrics)",
        ),
        (
            {"queues": {"q": {"alarms": {"depth": 5}}}, "alarms": {"notify": ["pager"]}},
            "queues.q.alarms.depth.notify: unknown topic 'pager' (a topic of this file or an ARN)",
        ),
        (
            {
                "queues": {"q": {"region": "eu-west-1", "alarms": {"depth": 5}}},
                "topics": {"pager": {"region": "us-east-1"}},
                "alarms": {"notify": ["pager"], "defaults": False},
            },
            "queues.q.alarms.depth.notify: topic 'pager' is in another region; "
            "CloudWatch notifies topics of the alarm's region only",
        ),
        (
            {"queues": {"q": {"alarms": {"depth": {"above": 1, "period": 600, "periods": 150}}}}},
            "queues.q.alarms.depth: period x periods is 90000 s; CloudWatch evaluates at most one day "
            "(a week with periods of an hour or more)",
        ),
    ],
)
def test_alarm_errors_are_one_line_naming_the_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value) == f"invalid topology ({path}): {expected}"


def test_defaults_can_be_turned_off_per_alarm_or_for_the_file() -> None:
    spec: dict[str, Any] = {
        "queues": {"d": {}, "q": {"dead_letter": {"queue": "d", "max_receive_count": 2}}},
        "topics": {"t": {}},
    }
    names = {a.name for a in Topology(**spec).alarm_definitions()}
    assert names == {"default-d-not-empty", "default-q-oldest-message", "default-t-failed-deliveries"}
    off = {**spec, "queues": {"d": {"alarms": {"not_empty": False}}, "q": spec["queues"]["q"]}}
    assert "default-d-not-empty" not in {a.name for a in Topology(**off).alarm_definitions()}
    assert Topology(**{**spec, "alarms": {"defaults": False}}).alarm_definitions() == []


async def test_an_alarm_of_another_topology_with_the_same_name_is_refused(aws: Aws) -> None:
    """`shop` with queue `eu-orders` and `shop-eu` with queue `orders` both name an alarm
    `shop-eu-orders-depth`: the second file must not take the first one's alarm over."""
    p = f"ao{uuid.uuid4().hex[:6]}"
    first: dict[str, Any] = {
        "name": p,
        "queues": {f"eu-{p}": {"alarms": {"depth": 10}}},
        "alarms": {"defaults": False},
    }
    second: dict[str, Any] = {
        "name": f"{p}-eu",
        "queues": {p: {"alarms": {"depth": 99}}},
        "alarms": {"defaults": False},
    }
    assert {a.name for a in Topology(**first).alarm_definitions()} == {
        a.name for a in Topology(**second).alarm_definitions()
    }
    owner = provisioner(aws, first)
    await owner.apply(await owner.plan())
    with pytest.raises(ConfigError, match=f"belongs to topology '{p}'"):
        await provisioner(aws, second).plan()
    [alarm] = (await alarms(aws, f"{p}-eu-{p}")).values()
    assert alarm["Threshold"] == 10  # untouched
