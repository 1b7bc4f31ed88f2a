"""DynamoDB tables of the topology (``tables:``): the idempotency store's table.

An idempotency table has a string partition key ``id``, on-demand billing and DynamoDB's
time to live on ``expiration`` (``worker.idempotency.dynamodb``). Provision creates it,
turns its time to live on when it is off, tags it with the topology's scope, and never
deletes a table (not even with --prune: its records are what keeps effects single).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from botocore.exceptions import ClientError

from worker.aws import AwsClient, error_code
from worker.errors import ConfigError

KEY = "id"
TTL_ATTRIBUTE = "expiration"
MISSING_TABLE = frozenset({"ResourceNotFoundException"})


@dataclass(frozen=True)
class Table:
    """What an existing table has, as far as provision manages it."""

    key: str
    ttl: str
    """The time-to-live attribute when it is on (``ENABLED``/``ENABLING``), else ""."""

    def view(self) -> dict[str, str]:
        return {"PartitionKey": self.key, "TimeToLive": self.ttl}


def desired_view() -> dict[str, str]:
    return {"PartitionKey": f"{KEY} (S)", "TimeToLive": TTL_ATTRIBUTE}


async def read_table(dynamodb: AwsClient, name: str) -> Table | None:
    try:
        described = (await dynamodb.call("describe_table", TableName=name))["Table"]
    except ClientError as exc:
        if error_code(exc) in MISSING_TABLE:
            return None
        raise
    keys = {k["AttributeName"]: k["KeyType"] for k in described.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in described.get("AttributeDefinitions", [])}
    hash_key = next((k for k, kind in keys.items() if kind == "HASH"), "")
    key = f"{hash_key} ({types.get(hash_key, '?')})" + (" + sort key" if len(keys) > 1 else "")
    ttl = (await dynamodb.call("describe_time_to_live", TableName=name)).get("TimeToLiveDescription", {})
    on = ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
    return Table(key, str(ttl.get("AttributeName", "")) if on else "")


async def apply_table(
    dynamodb: AwsClient,
    name: str,
    current: Table | None,
    tags: dict[str, str],
    action: Literal["create", "update"],
) -> None:
    """Create the table (and wait until it is active) or fix its time to live. A table
    whose key is not ``id`` (string) cannot serve as the store: refused, not changed."""
    if current is not None and current.key != desired_view()["PartitionKey"]:
        raise ConfigError(
            f"tables.{name}: the existing table's key is {current.key}; an idempotency table needs "
            f"{KEY} (string) alone: choose another table name"
        )
    if current is None:
        await dynamodb.call(
            "create_table",
            TableName=name,
            KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )
        for _ in range(120):
            status = (await dynamodb.call("describe_table", TableName=name))["Table"].get("TableStatus")
            if status == "ACTIVE":
                break
            await asyncio.sleep(1)
    if current is None or current.ttl != TTL_ATTRIBUTE:
        await dynamodb.call(
            "update_time_to_live",
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
