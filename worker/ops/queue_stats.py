"""Queue statistics as SQS and CloudWatch report them: depth, in flight, DLQ depth, oldest age."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from worker.aws import MISSING_QUEUE, AwsClient, Regional, error_code
from worker.errors import NotFoundError
from worker.ops.topology import Topology


@dataclass
class QueueRow:
    name: str
    visible: int
    in_flight: int
    delayed: int
    dlq: str | None
    dlq_depth: int | None
    oldest_age: float | None
    """Seconds; from CloudWatch's ApproximateAgeOfOldestMessage where the server reports it."""
    region: str | None = None
    """Where the queue was read: the region the topology gives it, else the session's."""
    # From the workers' metrics (``worker stats --metrics-url``; ``request_cost.QueueCost``);
    # None: not measured (no metrics read, or no worker reported the queue).
    requests: int | None = None
    received: int | None = None
    requests_per_message: float | None = None
    requests_per_second: float | None = None
    monthly_cost: float | None = None
    price_per_million: float | None = None
    rate_basis: str | None = None
    """``interval`` (between two reads of the workers' metrics) or ``since_start``."""
    rate_seconds: float | None = None


async def queue_counts(sqs: AwsClient, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed) of one queue: the one place these attributes are read."""
    a = (
        await sqs.call(
            "get_queue_attributes",
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    )["Attributes"]
    return (
        int(a["ApproximateNumberOfMessages"]),
        int(a["ApproximateNumberOfMessagesNotVisible"]),
        int(a["ApproximateNumberOfMessagesDelayed"]),
    )


async def _counts(sqs: AwsClient, name: str) -> tuple[int, int, int]:
    try:
        url = (await sqs.call("get_queue_url", QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) in MISSING_QUEUE:
            raise NotFoundError(
                f"queue {name!r} of the topology does not exist (worker provision creates it)"
            ) from None
        raise
    return await queue_counts(sqs, url)


class OldestAge:
    """ApproximateAgeOfOldestMessage from CloudWatch; gives up quietly where there is none."""

    def __init__(self, cloudwatch: Any | None, regional: Regional | None = None) -> None:
        self.cloudwatch = cloudwatch
        self.regional = regional

    async def get(self, queue: str, region: str | None = None) -> float | None:
        if self.cloudwatch is None:
            return None
        now = dt.datetime.now(dt.UTC)
        try:
            client = self.cloudwatch
            if region is not None and self.regional is not None:
                client = (await self.regional("cloudwatch", region)).client
            r = await client.get_metric_statistics(
                Namespace="AWS/SQS",
                MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=[{"Name": "QueueName", "Value": queue}],
                StartTime=now - dt.timedelta(minutes=5),
                EndTime=now,
                Period=60,
                Statistics=["Maximum"],
            )
        except Exception:
            self.cloudwatch = None  # not available here (LocalStack without CloudWatch, no permission)
            return None
        points = sorted(r.get("Datapoints", []), key=lambda p: p["Timestamp"])
        return float(points[-1]["Maximum"]) if points else None


async def queue_stats(
    sqs: AwsClient,
    topology: Topology,
    oldest: OldestAge,
    regional: Regional | None = None,
    session_region: str | None = None,
) -> list[QueueRow]:
    """One row per queue that is not a DLQ (its DLQ's depth in the row), each read in the
    region the topology gives it (through ``regional`` when not ``session_region``)."""
    rows: list[QueueRow] = []
    dlqs = topology.dead_letter_queues()
    for name, spec in topology.queues.items():
        if name in dlqs:
            continue  # shown in its source queue's row
        given = topology.region_of("queue", name)
        region = None if given == session_region or regional is None else given
        client = sqs if region is None or regional is None else await regional("sqs", region)
        visible, in_flight, delayed = await _counts(client, name)
        dlq = spec.dead_letter.queue if spec.dead_letter else None
        dlq_depth = sum(await _counts(client, dlq)) if dlq else None  # a DLQ is in its source's region
        age = await oldest.get(name, region)
        rows.append(
            QueueRow(name, visible, in_flight, delayed, dlq, dlq_depth, age, region=region or session_region)
        )
    return rows
