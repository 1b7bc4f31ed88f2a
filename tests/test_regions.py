"""Several regions on one LocalStack: a topology whose topic and queue live in different
regions (the cross-region subscription and its queue policy), and one worker consuming
queues of two regions with one client per region."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiobotocore.session import get_session

from tests.cli.test_cli import run_worker
from tests.conftest import Aws, eventually, running
from worker.cli.common import Connection
from worker.cli.provision import provisioner
from worker.messages.routing import Router
from worker.ops.provision import render_plan
from worker.ops.topology import Topology, load_topology
from worker.settings import ConfigError, load_settings, url_region

EU = "eu-west-1"


def two_regions(p: str) -> dict[str, Any]:
    return {
        "name": p,
        "region": "us-east-1",
        "queues": {
            f"{p}-eu-dlq": {"region": EU},
            f"{p}-eu": {"region": EU, "dead_letter": {"queue": f"{p}-eu-dlq", "max_receive_count": 3}},
            f"{p}-us": {},
        },
        "topics": {f"{p}-orders": {}, f"{p}-eu-alerts": {"region": EU}},
        "subscriptions": [
            {"topic": f"{p}-orders", "queue": f"{p}-eu", "raw": True},
            {"topic": f"{p}-orders", "queue": f"{p}-us", "raw": True},
        ],
        "alarms": {"notify": [f"{p}-eu-alerts"], "defaults": False},
    }


async def test_a_queue_in_one_region_subscribed_to_a_topic_in_another(aws: Aws) -> None:
    p = f"rg{uuid.uuid4().hex[:8]}"
    spec = two_regions(p)
    spec["queues"][f"{p}-eu"]["alarms"] = {"depth": 10}
    conn = Connection(region="us-east-1", endpoint_url=aws.endpoint, timeout=10)
    async with provisioner(Topology(**spec), conn) as prov:
        plan = await prov.plan()
        text = render_plan(plan)
        assert f"{p}-eu ({EU})" in text
        assert f"  {p}-orders\n" in text
        await prov.apply(plan)
        eu_url = prov.existing.queue_urls[f"{p}-eu"]
        topic_arn = prov.existing.topic_arns[f"{p}-orders"]
    assert f"/{EU}/" in eu_url
    assert ":us-east-1:" in topic_arn
    async with get_session().create_client("sqs", endpoint_url=aws.endpoint, region_name=EU) as eu:
        attrs = (await eu.get_queue_attributes(QueueUrl=eu_url, AttributeNames=["All"]))["Attributes"]
        # The queue's policy lets the topic of the other region send to it.
        [statement] = json.loads(attrs["Policy"])["Statement"]
        assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] in (topic_arn, [topic_arn])
        assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].split(":")[3] == EU
        await aws.sns.publish(TopicArn=topic_arn, Message="across regions")
        got = await eu.receive_message(QueueUrl=eu_url, WaitTimeSeconds=5)
        assert [m["Body"] for m in got["Messages"]] == ["across regions"]
    # The alarm of the eu queue lives in eu-west-1 and notifies the eu topic.
    async with get_session().create_client("cloudwatch", endpoint_url=aws.endpoint, region_name=EU) as cw:
        [alarm] = (await cw.describe_alarms(AlarmNames=[f"{p}-{p}-eu-depth"]))["MetricAlarms"]
        assert alarm["AlarmActions"][0].split(":")[3] == EU
    # Applied again from the file: nothing to do in either region.
    async with provisioner(Topology(**spec), conn) as prov:
        again = await prov.plan()
    assert [c.name for c in again if c.action != "unchanged"] == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s, p: s["queues"][f"{p}-eu-dlq"].update(region="us-east-1"),
            "queues.{p}-eu.dead_letter.queue: '{p}-eu-dlq' is in another region; "
            "SQS needs a DLQ in the source queue's region",
        ),
        (
            lambda s, p: s["queues"][f"{p}-us"].update(region="mars-1"),
            "queues.{p}-us.region: 'mars-1' is not a region name (eu-west-1)",
        ),
    ],
)
def test_region_errors_name_the_field(tmp_path: Path, change: Any, expected: str) -> None:
    p = "r"
    spec = two_regions(p)
    change(spec, p)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value) == f"invalid topology ({path}): {expected.format(p=p)}"


async def test_one_worker_consumes_queues_in_two_regions(aws: Aws) -> None:
    name = f"rw{uuid.uuid4().hex[:8]}"
    async with get_session().create_client("sqs", endpoint_url=aws.endpoint, region_name=EU) as eu:
        us_url = (await aws.sqs.create_queue(QueueName=name))["QueueUrl"]
        eu_url = (await eu.create_queue(QueueName=name))["QueueUrl"]  # same name, other region
        for url, client in ((us_url, aws.sqs), (eu_url, eu)):
            region = "us" if client is aws.sqs else "eu"
            await client.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(i),
                        "MessageBody": json.dumps({"region": region, "n": i}),
                        "MessageAttributes": {"type": {"DataType": "String", "StringValue": "ping"}},
                    }
                    for i in range(3)
                ],
            )
        router = Router()
        seen: list[tuple[str, int]] = []

        @router.handler("ping")
        async def ping(payload: dict[str, Any]) -> None:
            seen.append((payload["region"], payload["n"]))

        common = {"name": name, "handlers": ["tests.support.noop"], "wait_time_seconds": 1}
        settings = load_settings(
            None,
            {
                "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1", "startup_timeout": 5},
                "queues": {"us": common, "eu": {**common, "region": EU}},
                "log": {"summary_interval": 3600},
            },
        )
        async with running(settings, router) as worker:
            await eventually(lambda: len(seen) == 6, timeout=20)
            urls = {c.target.key: c.target.url for c in worker.consumers}
        assert sorted(seen) == [(r, n) for r in ("eu", "us") for n in range(3)]
        assert f"/{EU}/" in urls["eu"]
        assert "/us-east-1/" in urls["us"]
        await asyncio.sleep(0.5)  # deletes confirmed before the worker stopped; both empty
        for url, client in ((us_url, aws.sqs), (eu_url, eu)):
            attrs = await client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
            assert set(attrs["Attributes"].values()) == {"0"}


def test_a_queue_url_of_another_region_signs_for_that_region() -> None:
    settings = load_settings(
        None,
        {
            "aws": {"region": "us-east-1"},
            "queues": {
                "a": {"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/a", "handlers": ["x"]},
                "b": {
                    "url": "https://sqs.us-east-1.amazonaws.com/123456789012/b",
                    "handlers": ["x"],
                    "region": "us-east-1",
                },
                "c": {"handlers": ["x"]},
            },
        },
    )
    assert {k: q.region_in(settings.aws) for k, q in settings.queues.items()} == {
        "a": "eu-central-1",
        "b": "us-east-1",
        "c": "us-east-1",
    }


async def test_dlq_and_iam_policy_find_queues_in_the_region_the_file_gives(aws: Aws, tmp_path: Path) -> None:
    p = f"rc{uuid.uuid4().hex[:8]}"
    spec = two_regions(p)
    conn = Connection(region="us-east-1", endpoint_url=aws.endpoint, timeout=10)
    async with provisioner(Topology(**spec), conn) as prov:
        await prov.apply(await prov.plan())
        dlq_url = prov.existing.queue_urls[f"{p}-eu-dlq"]
    async with get_session().create_client("sqs", endpoint_url=aws.endpoint, region_name=EU) as eu:
        await eu.send_message(QueueUrl=dlq_url, MessageBody='{"dead": true}')
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(spec))
    where = ["--endpoint-url", aws.endpoint, "--region", "us-east-1"]
    # --region names the session's region; the file says where the queue is.
    shown = await asyncio.to_thread(
        run_worker, ["dlq", "show", f"{p}-eu", "-t", str(path), "--json", "--endpoint-url", aws.endpoint]
    )
    assert shown.returncode == 0, shown.stderr
    assert [m["excerpt"] for m in json.loads(shown.stdout)] == ['{"dead": true}']
    # Was: with --region, the queue was looked for there, not where the file puts it.
    for queue in (f"{p}-eu", f"{p}-eu-dlq"):
        shown = await asyncio.to_thread(run_worker, ["dlq", "show", queue, "-t", str(path), "--json", *where])
        assert shown.returncode == 0, shown.stderr
        assert [m["excerpt"] for m in json.loads(shown.stdout)] == ['{"dead": true}']
        assert f"queue {queue!r} is in {EU}, as {path} says (not --region us-east-1)" in shown.stderr
    # stats reads every queue in its region: the eu queue's DLQ holds the message.
    stats = await asyncio.to_thread(run_worker, ["stats", "-t", str(path), "--json", *where])
    assert stats.returncode == 0, stats.stderr
    rows = {r["name"]: r for r in json.loads(stats.stdout)}
    assert (rows[f"{p}-eu"]["dlq"], rows[f"{p}-eu"]["dlq_depth"]) == (f"{p}-eu-dlq", 1)
    assert rows[f"{p}-us"]["dlq_depth"] is None
    # Each row says its region (was: never shown); the table has the column as they differ.
    assert (rows[f"{p}-eu"]["region"], rows[f"{p}-us"]["region"]) == (EU, "us-east-1")
    shown = await asyncio.to_thread(run_worker, ["stats", "-t", str(path), *where])
    assert shown.returncode == 0, shown.stderr
    header, *lines = shown.stdout.splitlines()
    assert header.split()[:3] == ["queue", "region", "visible"]
    table = {line.split()[0]: line.split() for line in lines}
    assert table[f"{p}-eu"][1:3] == [EU, "0"]
    assert table[f"{p}-us"][1] == "us-east-1"
    policy = await asyncio.to_thread(run_worker, ["iam-policy", "-t", str(path), *where])
    assert policy.returncode == 0, policy.stderr
    statements = {s["Sid"]: s for s in json.loads(policy.stdout)["worker"]["Statement"]}
    assert f"arn:aws:sqs:{EU}:000000000000:{p}-eu" in statements["ConsumeQueues"]["Resource"]
    assert f"arn:aws:sqs:us-east-1:000000000000:{p}-us" in statements["ConsumeQueues"]["Resource"]
    assert statements["MoveToDeadLetterQueues"]["Resource"] == [f"arn:aws:sqs:{EU}:000000000000:{p}-eu-dlq"]


def test_a_bucket_notifies_queues_of_its_own_region_only() -> None:
    spec: dict[str, Any] = {
        "queues": {"uploads": {"region": EU}},
        "buckets": {"files-bucket": {"region": "us-east-1", "notifications": [{"queue": "uploads"}]}},
    }
    with pytest.raises(ValueError, match="S3 notifies queues of the bucket's region only"):
        Topology(**spec)
    spec["buckets"]["files-bucket"]["region"] = EU
    assert Topology(**spec).region_of("bucket", "files-bucket") == EU


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://sqs.eu-west-1.amazonaws.com:443/123456789012/q", "eu-west-1"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/123456789012/q", "us-gov-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("https://sqs.ap-southeast-2.api.aws/123456789012/q", "ap-southeast-2"),
        ("https://vpce-0a1b-c2d3.sqs.eu-central-1.vpce.amazonaws.com/123456789012/q", "eu-central-1"),
        ("https://eu-west-2.queue.amazonaws.com/123456789012/q", "eu-west-2"),
        ("https://queue.amazonaws.com/123456789012/q", "us-east-1"),
        ("http://sqs.eu-west-1.localhost.localstack.cloud:4566/000000000000/q", "eu-west-1"),
        ("http://127.0.0.1:4566/queue/eu-west-1/000000000000/q", "eu-west-1"),
        ("http://localhost:4566/000000000000/q", None),
        ("not a url", None),
    ],
)
def test_the_region_of_a_queue_url(url: str, region: str | None) -> None:
    assert url_region(url) == region
