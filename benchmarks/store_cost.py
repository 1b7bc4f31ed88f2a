"""What the idempotency store costs the client per message, alone: claim + completion
against a DynamoDB-compatible server in a loop, client CPU and pairs/s.

    python -m benchmarks.store_cost                        # starts moto's server (bench.moto_server)
    python -m benchmarks.store_cost --endpoint http://localhost:8000   # e.g. DynamoDB Local

``make bench`` measures the whole worker with the store (scenario ``idempotency``); this
separates the store's requests from the rest."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from aiobotocore.session import get_session

from benchmarks import moto_server
from worker.idempotency import IN_PROGRESS, Record
from worker.idempotency.dynamodb import DynamoDBStore
from worker.settings import AwsSettings


async def measure(endpoint: str, n: int, concurrency: int) -> tuple[float, float]:
    """(client CPU ms per claim + completion, pairs per second)."""
    table = f"cost-{uuid.uuid4().hex[:8]}"
    async with get_session().create_client("dynamodb", endpoint_url=endpoint, region_name="us-east-1") as c:
        await c.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    async with DynamoDBStore.connect(AwsSettings(endpoint_url=endpoint, region="us-east-1"), table) as store:
        gate = asyncio.Semaphore(concurrency)

        async def pair() -> None:
            async with gate:
                now = time.time()
                key = f"q:{uuid.uuid4().hex}"
                await store.claim(Record(key, IN_PROGRESS, "o", "m", 1, now + 30, now + 3600), now)
                await store.complete(key, "o", None, now + 3600)

        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(pair() for _ in range(n)))
        return 1000 * (time.process_time() - cpu) / n, n / (time.monotonic() - wall)


async def main_async(endpoint: str | None, n: int) -> None:
    server = None
    if endpoint is None:
        server, endpoint = await moto_server.start()
    try:
        for concurrency in (1, 20):
            cpu_ms, rate = await measure(endpoint, n, concurrency)
            print(
                f"concurrency {concurrency}: {cpu_ms:.2f} ms client CPU per claim + completion, {rate:.0f} pairs/s"
            )
    finally:
        if server is not None:
            server.kill()
            server.wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.store_cost", description=__doc__)
    p.add_argument("--endpoint", help="DynamoDB endpoint (default: start moto's server)")
    p.add_argument("--n", type=int, default=400)
    args = p.parse_args()
    if args.endpoint is None:  # moto takes any credentials; a given endpoint uses the standard chain
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    asyncio.run(main_async(args.endpoint, args.n))


if __name__ == "__main__":
    main()
