"""Buckets in the topology: validation, the queue policy for S3, and against LocalStack the
bucket provisioned with its encryption, lifecycle rule and notification, idempotently and
without touching configurations it does not manage; an upload then reaches a handler."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.cli.test_cli import run_worker
from tests.conftest import Aws
from worker import Message, Router, S3EventRecord
from worker.aws import AwsClient
from worker.messages.envelope import parse_message
from worker.messages.payload_store import s3_client
from worker.ops.provision import Provisioner
from worker.ops.topology import Topology, queue_policy
from worker.settings import AwsSettings, ConfigError
from worker.testing import HandlerKit


def bucket_topology(p: str) -> dict[str, Any]:
    return {
        "name": p,
        "queues": {f"{p}-uploads": {"visibility_timeout": 60}, f"{p}-other": {}},
        "buckets": {
            f"{p}-files": {
                "lifecycle": [{"prefix": "payloads/", "expire_days": 7}],
                "notifications": [
                    {
                        "queue": f"{p}-uploads",
                        "events": ["s3:ObjectCreated:*"],
                        "prefix": "incoming/",
                        "suffix": ".csv",
                    }
                ],
            }
        },
    }


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"notifications": [{"queue": "nope"}]}, "unknown queue 'nope'"),
        ({"notifications": [{"queue": "q.fifo"}]}, "S3 cannot notify a FIFO queue"),
        ({"notifications": [{"queue": "q", "events": ["ObjectCreated:*"]}]}, "not an S3 event type"),
        ({"lifecycle": [{"prefix": "a/", "expire_days": 1}] * 2}, "a prefix is listed twice"),
    ],
)
def test_bucket_references_are_checked(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        Topology.model_validate({"queues": {"q": {}, "q.fifo": {}}, "buckets": {"my-bucket": change}})


@pytest.mark.parametrize("name", ["ab", "My-Bucket", "-bucket", "bucket-", "a..b", "x" * 64])
def test_bucket_names_are_checked(name: str) -> None:
    with pytest.raises(ValidationError, match="bucket names are 3-63"):
        Topology.model_validate({"buckets": {name: {}}})


def test_the_queue_policy_lets_the_buckets_send() -> None:
    arn = "arn:aws:sqs:eu-west-1:123456789012:uploads"
    policy = queue_policy(arn, [], ["b-two", "b-one"])
    assert policy is not None
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Resource"] == arn
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": ["arn:aws:s3:*:*:b-one", "arn:aws:s3:*:*:b-two"]},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    both = queue_policy(arn.replace(":aws:", ":aws-cn:"), ["arn:aws-cn:sns:x:1:t"], ["b"])
    assert both is not None
    assert [s["Sid"] for s in both["Statement"]] == ["AllowSnsTopics", "AllowS3Notifications"]
    assert both["Statement"][1]["Condition"]["ArnLike"]["aws:SourceArn"] == ["arn:aws-cn:s3:*:*:b"]
    assert queue_policy(arn, [], []) is None
    assert Topology(**bucket_topology("x")).notified_by("x-uploads") == ["x-files"]


def test_a_topology_needs_s3_for_buckets() -> None:
    with pytest.raises(ConfigError, match="needs an S3 client"):
        Provisioner(Topology(**bucket_topology("x")), AwsClient(None), AwsClient(None))


@pytest.fixture
async def s3(aws: Aws) -> AsyncIterator[AwsClient]:
    async with s3_client(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as client:
        yield client


async def test_provisioned_bucket_notifies_its_queue_and_the_handler_gets_the_upload(
    aws: Aws, s3: AwsClient
) -> None:
    p = f"b{uuid.uuid4().hex[:8]}"
    topology = Topology(**bucket_topology(p))
    bucket, queue = f"{p}-files", f"{p}-uploads"
    first = Provisioner(
        topology, AwsClient(aws.sqs), AwsClient(aws.sns), s3, cloudwatch=AwsClient(aws.cloudwatch)
    )
    plan = await first.plan()
    [created] = [c for c in plan if c.kind == "bucket"]
    assert (created.action, sorted(created.diff)) == ("create", ["Encryption", "Lifecycle", "Notifications"])
    await first.apply(plan)
    again = await Provisioner(
        topology, AwsClient(aws.sqs), AwsClient(aws.sns), s3, cloudwatch=AwsClient(aws.cloudwatch)
    ).plan()
    assert [c for c in again if c.action != "unchanged"] == []

    # What exists is what was asked for, the queue policy included.
    url = (await aws.sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    attrs = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    [statement] = json.loads(attrs["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert attrs["MaximumMessageSize"] == "1048576"
    rules = (await s3.call("get_bucket_lifecycle_configuration", Bucket=bucket))["Rules"]
    assert [(r["ID"], r["Expiration"]["Days"]) for r in rules] == [("sqs-worker-expire-0", 7)]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }  # cancelled uploads' parts
    config = await s3.call("get_bucket_notification_configuration", Bucket=bucket)
    [notify] = config["QueueConfigurations"]
    assert notify["Id"] == f"sqs-worker-{queue}-0"
    assert notify["QueueArn"] == attrs["QueueArn"]

    # S3 may announce the notification with a test event: the worker settles it unhandled.
    router = Router()
    seen: list[tuple[str, str, int | None]] = []

    @router.handler("s3:ObjectCreated:*")
    async def uploaded(record: S3EventRecord, message: Message) -> None:
        assert message.type == "s3:ObjectCreated:Put"
        seen.append((record.bucket, record.key, record.size))

    await aws.drain(url)  # a test event, if any, is not what this test is about
    await s3.call("put_object", Bucket=bucket, Key="incoming/q3 report.csv", Body=b"a,b\n1,2\n")
    await s3.call("put_object", Bucket=bucket, Key="incoming/ignored.txt", Body=b"-")  # suffix filter
    await s3.call("put_object", Bucket=bucket, Key="elsewhere/x.csv", Body=b"-")  # prefix filter
    raws = await _wait_for(aws, url, 1)
    async with HandlerKit(router) as kit:
        results = [await kit.run(raw) for raw in raws]
        test_event = {
            "MessageId": "t",
            "ReceiptHandle": "r",
            "Body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}),
        }
        assert (await kit.run(test_event)).outcome == "succeeded"
    assert [r.outcome for r in results] == ["succeeded"]
    assert seen == [(bucket, "incoming/q3 report.csv", 8)]
    assert parse_message(raws[0]).type == "s3:ObjectCreated:Put"


async def _wait_for(aws: Aws, url: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(10):
        got += [m for m in await aws.drain(url) if "TestEvent" not in m["Body"]]
        if len(got) >= count:
            await asyncio.sleep(1)
            return got + [m for m in await aws.drain(url) if "TestEvent" not in m["Body"]]
    return got


async def test_provision_keeps_what_it_does_not_manage(aws: Aws, s3: AwsClient) -> None:
    p = f"b{uuid.uuid4().hex[:8]}"
    topology = Topology(**bucket_topology(p))
    bucket = f"{p}-files"
    provisioner = Provisioner(
        topology, AwsClient(aws.sqs), AwsClient(aws.sns), s3, cloudwatch=AwsClient(aws.cloudwatch)
    )
    await provisioner.apply(await provisioner.plan())
    # Someone else's rule and notification on the same bucket.
    other_url = (await aws.sqs.get_queue_url(QueueName=f"{p}-other"))["QueueUrl"]
    other_arn = (await aws.sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    rules = (await s3.call("get_bucket_lifecycle_configuration", Bucket=bucket))["Rules"]
    theirs = {"ID": "theirs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    await s3.call(
        "put_bucket_lifecycle_configuration",
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [*rules, theirs]},
    )
    config = await s3.call("get_bucket_notification_configuration", Bucket=bucket)
    queues = [
        *config["QueueConfigurations"],
        {"Id": "theirs", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]},
    ]
    await s3.call(
        "put_bucket_notification_configuration",
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": queues},
    )
    # Change what the file says: the managed parts change, theirs stay.
    changed = bucket_topology(p)
    changed["buckets"][bucket]["lifecycle"][0]["expire_days"] = 14
    changed["buckets"][bucket]["notifications"][0]["suffix"] = ".json"
    update = Provisioner(
        Topology(**changed), AwsClient(aws.sqs), AwsClient(aws.sns), s3, cloudwatch=AwsClient(aws.cloudwatch)
    )
    plan = await update.plan()
    [c] = [c for c in plan if c.kind == "bucket"]
    assert (c.action, sorted(c.diff)) == ("update", ["Lifecycle", "Notifications"])
    await update.apply(plan)
    rules = (await s3.call("get_bucket_lifecycle_configuration", Bucket=bucket))["Rules"]
    assert sorted((r["ID"], r["Expiration"]["Days"]) for r in rules) == [
        ("sqs-worker-expire-0", 14),
        ("theirs", 30),
    ]
    config = await s3.call("get_bucket_notification_configuration", Bucket=bucket)
    ids = sorted(q["Id"] for q in config["QueueConfigurations"])
    assert ids == [f"sqs-worker-{p}-uploads-0", "theirs"]
    assert [c for c in await update.plan() if c.action != "unchanged"] == []


async def test_provision_command_with_a_bucket(aws: Aws, tmp_path: Path) -> None:
    p = f"b{uuid.uuid4().hex[:8]}"
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(bucket_topology(p)))
    args = ["provision", "-t", str(path), "--endpoint-url", aws.endpoint, "--region", "us-east-1"]
    dry = await asyncio.to_thread(run_worker, [*args, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert f"+ bucket       create  {p}-files" in dry.stdout
    done = await asyncio.to_thread(run_worker, args)
    assert done.returncode == 0, done.stderr
    again = await asyncio.to_thread(run_worker, args)
    assert "No changes" in again.stdout, again.stdout


async def test_iam_policy_grants_the_offloaded_payloads() -> None:
    from worker.ops.iam import iam_policies
    from worker.settings import load_settings

    topology = Topology.model_validate({"queues": {"jobs": {}}})
    worker = load_settings(
        None, {"queues": {"jobs": {"handlers": ["x"]}}, "payloads": {"bucket": "big-bodies", "prefix": "p/"}}
    )
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, worker, "123456789012", "eu-west-1"
    )
    [read] = [s for s in policies["worker"]["Statement"] if s["Sid"] == "ReadOffloadedPayloads"]
    assert read["Action"] == ["s3:GetObject", "s3:DeleteObject"]
    assert read["Resource"] == "arn:aws:s3:::big-bodies/p/*"
    [write] = [s for s in policies["producer"]["Statement"] if s["Sid"] == "OffloadPayloads"]
    assert write["Action"] == ["s3:PutObject", "s3:DeleteObject"]
    plain = load_settings(None, {"queues": {"jobs": {"handlers": ["x"]}}})
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, plain, "123456789012", "eu-west-1"
    )
    assert all("Payload" not in s["Sid"] for s in policies["worker"]["Statement"])


async def test_the_uploads_example_processes_an_uploaded_file(
    aws: Aws, s3: AwsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import structlog

    from handlers.uploads import router as uploads
    from worker.ops.topology import load_topology
    from worker.settings import load_settings

    shipped = load_topology("config/uploads-topology.yaml")
    assert shipped.notified_by("uploads") == ["sqs-worker-uploads"]
    assert load_settings("config/uploads.yaml").payloads.prefix == "payloads/"
    # The shipped shape, under names of this test's own.
    p = f"u{uuid.uuid4().hex[:8]}"
    spec = shipped.model_dump()
    spec["name"] = p
    spec["queues"] = {f"{p}-{k}": v for k, v in spec["queues"].items()}
    spec["queues"][f"{p}-uploads"]["dead_letter"]["queue"] = f"{p}-uploads-dlq"
    spec["queues"][f"{p}-uploads"]["receive_wait_time"] = 0
    [bucket_spec] = spec.pop("buckets").values()
    bucket_spec["notifications"][0]["queue"] = f"{p}-uploads"
    spec["buckets"] = {f"{p}-files": bucket_spec}
    provisioner = Provisioner(
        Topology(**spec), AwsClient(aws.sqs), AwsClient(aws.sns), s3, cloudwatch=AwsClient(aws.cloudwatch)
    )
    await provisioner.apply(await provisioner.plan())
    url = (await aws.sqs.get_queue_url(QueueName=f"{p}-uploads"))["QueueUrl"]
    await aws.drain(url)
    await s3.call("put_object", Bucket=f"{p}-files", Key="incoming/orders.csv", Body=b"id\n1\n2\n")
    [raw] = await _wait_for(aws, url, 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    with structlog.testing.capture_logs() as logs:
        async with HandlerKit(uploads) as kit:
            result = await kit.run(raw)
    assert result.outcome == "succeeded", result.reason
    [done] = [e for e in logs if e["event"] == "upload_processed"]
    assert (done["key"], done["bytes"], done["lines"]) == ("incoming/orders.csv", 7, 3)
