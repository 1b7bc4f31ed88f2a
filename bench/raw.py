"""The raw ceiling: the leanest honest aiobotocore loop. C tasks each receive ten with long
polling and delete them with one DeleteMessageBatch, until N messages are deleted."""

from __future__ import annotations

import argparse
import asyncio

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def main(endpoint: str, url: str, n: int, concurrency: int) -> None:
    config = AioConfig(
        max_pool_connections=concurrency + 2, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    deleted = 0
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", config=config
    ) as sqs:

        async def loop() -> None:
            nonlocal deleted
            while deleted < n:
                r = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                messages = r.get("Messages") or []
                if not messages:
                    continue
                d = await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )
                deleted += len(d.get("Successful", []))

        await asyncio.gather(*(loop() for _ in range(concurrency)))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()
    asyncio.run(main(a.endpoint, a.url, a.n, a.concurrency))
