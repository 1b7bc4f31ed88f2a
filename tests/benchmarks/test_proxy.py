"""The fault proxy's per-operation faults (benchmarks/proxy.py): extra latency for one SQS
operation, and the next N requests of one operation black-holed while the rest pass."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from benchmarks.harness import Proxy
from tests.conftest import Aws


async def test_op_latency_and_op_blackhole(aws: Aws) -> None:
    queue = await aws.queue()
    for i in range(3):
        await aws.send(queue.url, {"n": i})
    proxy = await asyncio.to_thread(Proxy, aws.endpoint)
    config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=10)
    try:
        async with get_session().create_client(
            "sqs", endpoint_url=proxy.url, region_name="us-east-1", config=config
        ) as sqs:
            got = (await sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10))["Messages"]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(got)
            ]

            async def change() -> float:
                start = time.monotonic()
                await sqs.change_message_visibility_batch(QueueUrl=queue.url, Entries=entries)
                return time.monotonic() - start

            await asyncio.to_thread(
                proxy.faults,
                op_latency={"ChangeMessageVisibilityBatch": 0.3},
                blackhole_ops={"ChangeMessageVisibilityBatch": 1},
                blackhole_op_seconds=1.5,
            )
            start = time.monotonic()
            held = asyncio.create_task(change())
            await asyncio.sleep(0.2)
            # Other operations pass while that one is held.
            await sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["QueueArn"])
            assert time.monotonic() - start < 1
            with pytest.raises(Exception) as dropped:  # noqa: PT011 - whatever the client makes of a drop
                await held
            assert time.monotonic() - start >= 1.5
            assert "ConnectionClosed" in type(dropped.value).__name__ or "Connection" in str(dropped.value)
            # Only the next one: the second goes through, 0.3 s late.
            assert 0.3 <= await change() < 1.5
            before: dict[str, Any] = await asyncio.to_thread(proxy.counts)
            await asyncio.to_thread(proxy.faults)
            assert await change() < 0.3
    finally:
        await asyncio.to_thread(proxy.stop)
    assert before["outcomes"]["blackholed_op"] == 1
    assert before["outcomes"]["blackholed_op:ChangeMessageVisibilityBatch"] == 1
    assert before["ops"]["ChangeMessageVisibilityBatch"] == 2
    assert before["open"] == {}
