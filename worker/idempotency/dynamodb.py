"""Idempotency records in a DynamoDB table, shared by every replica.

The table has a string partition key ``id`` and DynamoDB's time to live on the number
attribute ``expiration`` (epoch seconds); ``worker provision`` creates it from a topology
``tables:`` entry. TTL deletes lazily (within days), so every condition also treats a
record past its ``expiration`` as absent. Each write is one conditional request
(``claim``: PutItem; ``extend``/``complete``: UpdateItem; ``release``: DeleteItem); a
claim that finds a holder gets it back in the same answer
(``ReturnValuesOnConditionCheckFailure``), else reads it consistently.

Transient errors are retried for ``retry_for`` seconds (10 by default); then the error goes
to the handler run, which fails the message (it is tried again later; the handler has not
run) or, after the handler succeeded, logs that the record could not be completed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import ClientError

from worker.aws import AwsClient, aws_client, error_code
from worker.idempotency.store import COMPLETED, IN_PROGRESS, LEASE_SKEW, Record
from worker.settings import AwsSettings

_NAMES = {
    "#id": "id",
    "#st": "status",
    "#owner": "owner",
    "#mid": "message_id",
    "#rc": "receive_count",
    "#lease": "lease_expires",
    "#exp": "expiration",
    "#res": "result",
}
_CLAIM = (
    "attribute_not_exists(#id) OR #exp <= :now"
    " OR (#st = :ip AND (#lease <= :now OR (#mid = :mid AND #rc < :rc AND #lease <= :skewed)))"
)
CONDITION_FAILED = "ConditionalCheckFailedException"


def _item(record: Record) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": {"S": record.key},
        "status": {"S": record.status},
        "owner": {"S": record.owner},
        "message_id": {"S": record.message_id},
        "receive_count": {"N": str(record.receive_count)},
        "lease_expires": {"N": repr(record.lease_expires)},
        "expiration": {"N": str(int(record.expires))},
    }
    if record.result is not None:
        item["result"] = {"S": record.result}
    return item


def _record(item: dict[str, Any]) -> Record:
    status = item["status"]["S"]
    return Record(
        key=item["id"]["S"],
        status=COMPLETED if status == COMPLETED else IN_PROGRESS,
        owner=item.get("owner", {}).get("S", ""),
        message_id=item.get("message_id", {}).get("S", ""),
        receive_count=int(item.get("receive_count", {}).get("N", "0")),
        lease_expires=float(item.get("lease_expires", {}).get("N", "0")),
        expires=float(item["expiration"]["N"]),
        result=item["result"]["S"] if "result" in item else None,
    )


def _names(expression: str) -> dict[str, str]:
    return {k: v for k, v in _NAMES.items() if k in expression}


class DynamoDBStore:
    def __init__(self, client: AwsClient, table: str) -> None:
        self.client = client
        self.table = table

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, aws: AwsSettings, table: str, retry_for: float = 10.0, pool_size: int = 32
    ) -> AsyncIterator[DynamoDBStore]:
        async with aws_client(
            "dynamodb", aws, pool_size, read_timeout=10.0, retry_for=retry_for, validate=False
        ) as client:
            yield cls(client, table)

    async def claim(self, record: Record, now: float) -> Record | None:
        try:
            await self.client.call(
                "put_item",
                TableName=self.table,
                Item=_item(record),
                ConditionExpression=_CLAIM,
                ExpressionAttributeNames=_names(_CLAIM),
                ExpressionAttributeValues={
                    ":now": {"N": repr(now)},
                    ":skewed": {"N": repr(now + LEASE_SKEW)},
                    ":ip": {"S": IN_PROGRESS},
                    ":mid": {"S": record.message_id},
                    ":rc": {"N": str(record.receive_count)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            item = exc.response.get("Item")
            if not item:
                got = await self.client.call(
                    "get_item", TableName=self.table, Key={"id": {"S": record.key}}, ConsistentRead=True
                )
                item = got.get("Item")
                if not item:  # removed in between: try once more
                    return await self.claim(record, now)
            return _record(item)
        return None

    async def _update(
        self, key: str, expression: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """None when written, else the item that failed the condition ({} when there is none)."""
        try:
            await self.client.call(
                "update_item",
                TableName=self.table,
                Key={"id": {"S": key}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(expression + condition),
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return dict(exc.response.get("Item") or {})
            raise
        return None

    async def extend(self, key: str, owner: str, lease_expires: float) -> bool:
        return None is await self._update(
            key,
            "SET #lease = :lease",
            "#owner = :owner AND #st = :ip",
            {":lease": {"N": repr(lease_expires)}, ":owner": {"S": owner}, ":ip": {"S": IN_PROGRESS}},
        )

    def completion_item(self, key: str, owner: str, result: str | None, expires: float) -> dict[str, Any]:
        """``complete`` as a ``TransactWriteItems`` item (for a handler's own transaction)."""
        expression, values = self._completion(owner, result, expires)
        condition = "#owner = :owner"
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"id": {"S": key}},
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": _names(expression + condition),
                "ExpressionAttributeValues": values,
            }
        }

    @staticmethod
    def _completion(owner: str, result: str | None, expires: float) -> tuple[str, dict[str, Any]]:
        values: dict[str, Any] = {
            ":done": {"S": COMPLETED},
            ":exp": {"N": str(int(expires))},
            ":owner": {"S": owner},
        }
        if result is None:
            return "SET #st = :done, #exp = :exp REMOVE #res", values
        values[":res"] = {"S": result}
        return "SET #st = :done, #exp = :exp, #res = :res", values

    async def complete(self, key: str, owner: str, result: str | None, expires: float) -> bool:
        expression, values = self._completion(owner, result, expires)
        values[":ip"] = {"S": IN_PROGRESS}
        failed = await self._update(key, expression, "#owner = :owner AND #st = :ip", values)
        if failed is None:
            return True
        if not failed:  # a server that does not return the item with the failure
            got = await self.client.call(
                "get_item", TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True
            )
            failed = dict(got.get("Item") or {})
        # Completed already by this run, in the handler's own transaction: left as it is.
        return bool(
            failed.get("owner", {}).get("S") == owner and failed.get("status", {}).get("S") == COMPLETED
        )

    async def release(self, key: str, owner: str) -> None:
        try:
            await self.client.call(
                "delete_item",
                TableName=self.table,
                Key={"id": {"S": key}},
                ConditionExpression="#owner = :owner AND #st = :ip",
                ExpressionAttributeNames={"#owner": "owner", "#st": "status"},
                ExpressionAttributeValues={":owner": {"S": owner}, ":ip": {"S": IN_PROGRESS}},
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise  # else: not ours any more (taken over), or completed by the handler's own transaction

    async def close(self) -> None:
        return None
