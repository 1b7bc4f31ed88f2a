"""How closely a configured rate is kept (issue 34): a queue with ``rate`` and a backlog
far above it, one worker, the start times of its messages over ``--seconds``.

    python -m benchmarks.flow --endpoint URL [--rate 20] [--seconds 60] [--docs]

Reports the observed start rate over the run after the first burst, and its error
against the configured rate (the target: within 5%)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "flow-results.json"
DOC = ROOT / "docs" / "benchmarks.md"


async def run(endpoint: str, rate: float, seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="flow-"))
    name = f"flow-{uuid.uuid4().hex[:8]}"
    backlog = int(rate * (seconds + 20) * 1.5)
    session = get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="b",
        aws_secret_access_key="b",
    ) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        for _ in range(0, backlog, 10):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": "{}",
                    "MessageAttributes": {"type": {"DataType": "String", "StringValue": "tick"}},
                }
                for i in range(10)
            ]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        config = {
            "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
            "log": {"level": "warning"},
            "queues": {"q": {"name": name, "handlers": ["benchmarks.flow_handlers"], "rate": rate}},
        }
        path = work / "worker.yaml"
        path.write_text(yaml.safe_dump(config))
        record = work / "starts"
        env = {
            **os.environ,
            "FLOW_RECORD": str(record),
            "AWS_ACCESS_KEY_ID": "b",
            "AWS_SECRET_ACCESS_KEY": "b",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--config", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(seconds + 10)
        finally:
            proc.terminate()
            proc.wait(30)
        await sqs.delete_queue(QueueUrl=url)
    starts = sorted(float(line) for line in record.read_text().splitlines())
    first = starts[0] + 5  # after the first burst and the start-up
    window = [t for t in starts if first <= t < first + seconds]
    observed = len(window) / seconds
    return {
        "rate": rate,
        "seconds": seconds,
        "observed_rate": round(observed, 3),
        "error_pct": round(100 * (observed - rate) / rate, 2),
        "started_total": len(starts),
    }


def section(data: dict[str, Any]) -> str:
    ok = "met" if abs(data["error_pct"]) <= 5 else "**missed**"
    return (
        "## Rate accuracy\n\n"
        f"A queue with `rate: {data['rate']:g}` and a backlog far above it, one worker: over "
        f"{data['seconds']:g} s after the first burst it started {data['observed_rate']:g} messages/s, "
        f"{data['error_pct']:+g}% off the configured rate (target: within 5%: {ok}). "
        "`python -m benchmarks.flow --docs`.\n"
    )


def write_section(data: dict[str, Any]) -> None:
    text = DOC.read_text()
    new = section(data)
    start = text.find("## Rate accuracy\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + new + (text[end:] if end >= 0 else "")
    else:
        anchor = text.find("## How it is measured")
        text = text[:anchor] + new + "\n" + text[anchor:] if anchor >= 0 else text + "\n" + new
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default=os.environ.get("SQS_WORKER_TEST_ENDPOINT"))
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args(argv)
    if not args.endpoint:
        parser.error("--endpoint (or SQS_WORKER_TEST_ENDPOINT): a LocalStack")
    data = asyncio.run(run(args.endpoint, args.rate, args.seconds))
    print(json.dumps(data, indent=2))
    if args.docs:
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_section(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
