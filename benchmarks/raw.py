"""The raw loop: the leanest honest aiobotocore consumer. C tasks each receive ten with long
polling, run the handler on each (nothing, or ``--handler-ms`` of asyncio sleep, the ten at
once; with ``--threads T``, ``--handler-ms`` of blocking ``time.sleep`` in a pool of T
threads) and delete them with one DeleteMessageBatch, until N messages are deleted. A FIFO
queue needs nothing else: SQS hands out a group's next messages once these are deleted.

With $BENCH_PROFILE set, a cProfile runs from the first message to the end (as the worker's
bench handlers do) and is written there.

At exit it prints one JSON line: ``first`` (time.monotonic() when the first received message
was handed to its handler) and ``cpu_first`` (the process's CPU seconds then), so the
benchmark can tell start-up from steady state exactly as it does for the worker; with
``--latency``, also ``latencies``: for each message, seconds from the send time in its body
to its receive (the latency scenario's reference)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

WORKER_SYSTEM_ATTRIBUTES = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
]
"""What the worker's receive asks for (worker.runtime.poller.SYSTEM_ATTRIBUTES; a test keeps
them equal): with ``--worker-receive`` the raw loop asks the same, to show what asking for
them costs (the raw loop does not import the worker: its start-up is a reference)."""


async def main(
    endpoint: str,
    url: str,
    n: int,
    concurrency: int,
    handler_ms: float,
    threads: int,
    latency: bool = False,
    wait: int = 1,
    worker_receive: bool = False,
) -> None:
    config = AioConfig(
        max_pool_connections=concurrency + 2, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    deleted = 0
    first: list[float] = []
    latencies: list[float] = []
    pause = handler_ms / 1000
    profile_path = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile()

    pool = ThreadPoolExecutor(threads) if threads else None

    async def handle(message: dict[str, Any]) -> None:
        if pool is None:
            await asyncio.sleep(pause)
        else:
            await asyncio.get_running_loop().run_in_executor(pool, time.sleep, pause)

    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", config=config
    ) as sqs:
        extra: dict[str, Any] = {}
        if worker_receive:  # the worker's receive parameters (worker.runtime.poller._receive)
            extra = {
                "VisibilityTimeout": 30,
                "MessageAttributeNames": ["All"],
                "MessageSystemAttributeNames": WORKER_SYSTEM_ATTRIBUTES,
            }

        async def loop() -> None:
            nonlocal deleted
            while deleted < n:
                if worker_receive and url.endswith(".fifo"):
                    extra["ReceiveRequestAttemptId"] = uuid.uuid4().hex
                r = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, **extra
                )
                messages = r.get("Messages") or []
                if not messages:
                    continue
                if latency:  # the body's send time to now, as the worker's latency handler does
                    now = time.time()
                    latencies.extend(round(now - json.loads(m["Body"])["t"], 5) for m in messages)
                if not first:
                    first.extend((time.monotonic(), time.process_time()))
                    if profile_path:
                        profiler.enable()
                if pause:
                    await asyncio.gather(*(handle(m) for m in messages))
                d = await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )
                deleted += len(d.get("Successful", []))

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    if profile_path and first:
        profiler.disable()
        profiler.dump_stats(profile_path)
    if first:
        out: dict[str, Any] = {"first": first[0], "cpu_first": first[1]}
        if latency:
            out["latencies"] = latencies
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--handler-ms", type=float, default=0.0, help="asyncio sleep per message (0: none)")
    p.add_argument("--threads", type=int, default=0, help="blocking sleep in a pool of this many threads")
    p.add_argument("--wait", type=int, default=1, help="WaitTimeSeconds of each receive")
    p.add_argument(
        "--latency", action="store_true", help='record each message\'s latency (body {"t": send time})'
    )
    p.add_argument(
        "--worker-receive",
        action="store_true",
        help="ask for what the worker's receive asks for (attributes, a visibility timeout)",
    )
    a = p.parse_args()
    asyncio.run(
        main(
            a.endpoint,
            a.url,
            a.n,
            a.concurrency,
            a.handler_ms,
            a.threads,
            a.latency,
            a.wait,
            a.worker_receive,
        )
    )
