"""Real receipts for the runtime's tests: messages received from the server with a lease
each, and a message deleted through another receipt (what a lapsed lease meets)."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Aws
from worker.messages.envelope import parse_message
from worker.runtime.lease import Leases


async def leases_for(aws: Aws, url: str, n: int, visibility: int = 30) -> tuple[Leases, list[Any]]:
    """``n`` messages sent and received for real, each with its lease."""
    await aws.send_many(url, [{"n": i} for i in range(n)], "t")
    leases = Leases(lambda lease: None)
    out: list[Any] = []
    while len(out) < n:
        r = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, WaitTimeSeconds=1
        )
        for raw in r.get("Messages") or []:
            out.append(leases.open(parse_message(raw), raw, time.monotonic(), visibility))
    return leases, out


async def delete_elsewhere(aws: Aws, url: str) -> None:
    """The queue's one message, once its visibility ran out: received again and deleted."""
    while True:
        r = await aws.sqs.receive_message(QueueUrl=url, VisibilityTimeout=60, WaitTimeSeconds=1)
        if r.get("Messages"):
            await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=r["Messages"][0]["ReceiptHandle"])
            return
