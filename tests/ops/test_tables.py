"""The idempotency table in the topology: provisioned on a DynamoDB server over HTTP (moto's),
with its key, on-demand billing, tags and time to live; idempotent; a table of the wrong
shape refused; the store works on what provision made; the worker's IAM policy grants it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tests.conftest import Aws
from worker.aws import AwsClient, aws_client
from worker.errors import ConfigError
from worker.idempotency import IN_PROGRESS, Record
from worker.idempotency.dynamodb import DynamoDBStore
from worker.ops.iam import iam_policies
from worker.ops.provision import Provisioner, render_plan
from worker.ops.topology import Topology
from worker.settings import AwsSettings, load_settings


@pytest.fixture
async def dynamodb(moto_endpoint: str) -> AsyncIterator[AwsClient]:
    async with aws_client("dynamodb", AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")) as client:
        yield client


async def test_provision_creates_the_table_once_with_its_time_to_live(
    aws: Aws, dynamodb: AwsClient, moto_endpoint: str
) -> None:
    name = f"idem-{uuid.uuid4().hex[:8]}"
    topology = Topology.model_validate({"name": "shop", "tables": {name: {}}})
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), dynamodb=dynamodb)
    plan = await p.plan()
    assert [(c.kind, c.name, c.action) for c in plan] == [("table", name, "create")]
    assert render_plan(plan).startswith(f"+ table        create  {name}\n")
    await p.apply(plan)

    table = (await dynamodb.call("describe_table", TableName=name))["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = (await dynamodb.call("describe_time_to_live", TableName=name))["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiration"}
    tags = (await dynamodb.call("list_tags_of_resource", ResourceArn=table["TableArn"]))["Tags"]
    assert {"Key": "managed-by", "Value": "sqs-worker"} in tags

    again = await Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), dynamodb=dynamodb).plan()
    assert [c.action for c in again] == ["unchanged"]

    # Someone turned the time to live off: the plan says so and apply turns it on again.
    await dynamodb.call(
        "update_time_to_live",
        TableName=name,
        TimeToLiveSpecification={"Enabled": False, "AttributeName": "expiration"},
    )
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), dynamodb=dynamodb)
    drifted = await p.plan()
    assert [c.action for c in drifted] == ["update"]
    assert drifted[0].diff["TimeToLive"] == ("", "expiration")
    await p.apply(drifted)
    ttl = (await dynamodb.call("describe_time_to_live", TableName=name))["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"

    # The store works on the table provision made.
    aws_settings = AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")
    async with DynamoDBStore.connect(aws_settings, name) as store:
        now = time.time()
        claim = Record("q:k", IN_PROGRESS, "o", "m", 1, now + 30, now + 3600)
        assert await store.claim(claim, now) is None
        assert await store.claim(claim, now) is not None


async def test_a_table_of_another_shape_is_refused(aws: Aws, dynamodb: AwsClient) -> None:
    name = f"other-{uuid.uuid4().hex[:8]}"
    await dynamodb.call(
        "create_table",
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    topology = Topology.model_validate({"tables": {name: {}}})
    p = Provisioner(topology, AwsClient(aws.sqs), AwsClient(aws.sns), dynamodb=dynamodb)
    plan = await p.plan()
    assert plan[0].action == "update"
    with pytest.raises(ConfigError, match=r"existing table's key is pk \(S\)"):
        await p.apply(plan)


def test_table_names_and_clients_are_checked() -> None:
    with pytest.raises(ValidationError, match="table names are 3-255"):
        Topology.model_validate({"tables": {"a b": {}}})
    with pytest.raises(ValidationError, match="Input should be 'idempotency'"):
        Topology.model_validate({"tables": {"t-1": {"kind": "cache"}}})
    with pytest.raises(ConfigError, match="provision needs a DynamoDB client"):
        Provisioner(Topology.model_validate({"tables": {"t-1": {}}}), AwsClient(None), AwsClient(None))


async def test_the_worker_policy_grants_its_idempotency_table() -> None:
    topology = Topology.model_validate({"queues": {"jobs": {}}})
    worker = load_settings(
        None,
        {"queues": {"jobs": {"handlers": ["x"]}}, "idempotency": {"store": "dynamodb", "table": "effects"}},
    )
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, worker, "123456789012", "eu-west-1"
    )
    [records] = [s for s in policies["worker"]["Statement"] if s["Sid"] == "IdempotencyRecords"]
    assert records["Resource"] == "arn:aws:dynamodb:eu-west-1:123456789012:table/effects"
    assert "dynamodb:PutItem" in records["Action"]
    memory = load_settings(
        None, {"queues": {"jobs": {"handlers": ["x"]}}, "idempotency": {"store": "memory"}}
    )
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, memory, "123456789012", "eu-west-1"
    )
    assert all(s["Sid"] != "IdempotencyRecords" for s in policies["worker"]["Statement"])


async def test_provision_endpoint_url_is_every_services_and_a_service_variable_overrides_it(
    aws: Aws, moto_endpoint: str, tmp_path: Path
) -> None:
    """Was: --endpoint-url, documented as the SQS/SNS endpoint, also sent DynamoDB to
    LocalStack (which has none here), and AWS_ENDPOINT_URL_DYNAMODB could not say otherwise;
    the error named neither the service nor the endpoint."""
    from tests.cli.test_cli import run_worker

    name = f"idem-{uuid.uuid4().hex[:8]}"
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({"name": "ep", "queues": {queue: {}}, "tables": {name: {}}}))
    args = ["provision", "-t", str(topology), "--endpoint-url", aws.endpoint, "--region", "us-east-1"]
    refused = await asyncio.to_thread(
        run_worker, [*args, "--timeout", "1"], {"AWS_ENDPOINT_URL_DYNAMODB": ""}
    )
    assert refused.returncode == 5, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert f"(DynamoDB, region us-east-1, endpoint {aws.endpoint} from --endpoint-url)" in line
    assert "if DynamoDB is served elsewhere, set AWS_ENDPOINT_URL_DYNAMODB" in line
    done = await asyncio.to_thread(run_worker, args, {"AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint})
    assert done.returncode == 0, done.stderr
    assert f"+ table        create  {name}" in done.stdout
    async with aws_client("dynamodb", AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")) as moto:
        assert (await moto.call("describe_table", TableName=name))["Table"]["TableName"] == name
    assert (await aws.sqs.get_queue_url(QueueName=queue))["QueueUrl"]  # SQS went to LocalStack
