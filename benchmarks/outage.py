"""A downstream outage, with the circuit breaker and without, side by side (issue 34).

    python -m benchmarks.outage --endpoint URL [--rate 50] [--outage 300] [--docs]

Two workers, each on its own queue (maxReceiveCount 3, the default retry backoff), one
with the handler's dependency declared (its breaker on), one without; a producer sends
``--rate`` messages per second to each for the whole run; the dependency is down for
``--outage`` seconds in the middle (``benchmarks.outage_handlers``). Reported per variant:
messages sent, handled, dead-lettered, lost (sent - handled - in the DLQ - still queued),
the most a handled message's receive count rose, and how long after the dependency's
return the handled rate was back to the sending rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks.result import ROOT, replace_section

RESULTS = ROOT / "benchmarks" / "outage-results.json"
DOC = ROOT / "docs" / "reliability.md"


async def _queue(sqs: Any, name: str) -> tuple[str, str]:
    dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})
    url = (await sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy}))["QueueUrl"]
    return url, dlq


async def _count(sqs: Any, url: str) -> int:
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def _spawn(endpoint: str, name: str, work: Path, breaker: bool, down: Path) -> subprocess.Popen[bytes]:
    config = {
        "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
        "log": {"level": "warning"},
        "shutdown_grace": 10,
        "queues": {"pay": {"name": name, "handlers": ["benchmarks.outage_handlers"]}},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "OUTAGE_DOWN_FILE": str(down),
        "OUTAGE_BREAKER": "on" if breaker else "off",
        "OUTAGE_RECORD": str(work / f"{name}.record"),
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
    }
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the process's
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--config", str(path), "--log-format", "json"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def _produce(sqs: Any, urls: list[str], rate: float, seconds: float, sent: list[int]) -> None:
    interval = 10 / rate
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        for url in urls:
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps({"n": n + i}),
                    "MessageAttributes": {"type": {"DataType": "String", "StringValue": "pay"}},
                }
                for i in range(10)
            ]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        n += 10
        sent[0] = n
        await asyncio.sleep(max(0.0, start + (n / 10) * interval - time.monotonic()))


def _recovery(records: list[tuple[str, int, float]], back_at: float, rate: float) -> float | None:
    """Seconds after ``back_at`` until a 5 s window handled at least 90% of ``rate``."""
    times = sorted(t for _, _, t in records if t >= back_at)
    for i, t in enumerate(times):
        window = [x for x in times[i:] if x < t + 5]
        if len(window) >= 0.9 * rate * 5:
            return round(t - back_at, 1)
    return None


async def run(endpoint: str, rate: float, outage: float, before: float, after: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="outage-"))
    down = work / "down"
    tag = uuid.uuid4().hex[:8]
    names = {"breaker": f"outage-on-{tag}", "no breaker": f"outage-off-{tag}"}
    session = get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as sqs:
        queues = {k: await _queue(sqs, n) for k, n in names.items()}
        procs = {k: _spawn(endpoint, n, work, k == "breaker", down) for k, n in names.items()}
        sent = [0]
        total = before + outage + after
        urls = [u for u, _ in queues.values()]
        back_at = 0.0

        async def switch() -> None:
            nonlocal back_at
            await asyncio.sleep(before)
            down.write_text("")
            print(f"outage: dependency down for {outage:g} s", flush=True)
            await asyncio.sleep(outage)
            down.unlink()
            back_at = time.monotonic()
            print("outage: dependency back", flush=True)

        await asyncio.gather(_produce(sqs, urls, rate, total, sent), switch())
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            queued = [await _count(sqs, url) for url, _ in queues.values()]
            if not any(queued):
                break
            await asyncio.sleep(2)
        await asyncio.sleep(3)
        result: dict[str, Any] = {"rate": rate, "outage_s": outage, "sent_per_queue": sent[0]}
        for key, (url, dlq) in queues.items():
            procs[key].terminate()
            procs[key].wait(30)
            record = work / f"{names[key]}.record"
            lines = record.read_text().splitlines() if record.exists() else []
            records = [(a, int(b), float(c)) for a, b, c in (line.split() for line in lines)]
            handled = {m for m, _, _ in records}
            in_dlq, left = await _count(sqs, dlq), await _count(sqs, url)
            result[key] = {
                "handled": len(handled),
                "handled_twice": len(records) - len(handled),
                "dead_lettered": in_dlq,
                "left_in_queue": left,
                "lost": sent[0] - len(handled) - in_dlq - left,
                "max_receive_count": max((c for _, c, _ in records), default=0),
                "recovery_s": _recovery(records, back_at, rate),
            }
    return result


def section(data: dict[str, Any]) -> str:
    rows = []
    for key in ("breaker", "no breaker"):
        r = data[key]
        rows.append(
            f"| {key} | {r['handled']} | {r['dead_lettered']} | {r['lost']} | {r['handled_twice']} | "
            f"{r['max_receive_count']} | {r['recovery_s'] if r['recovery_s'] is not None else '-'} |"
        )
    return (
        "## Downstream outage: the circuit breaker\n\n"
        f"A steady {data['rate']:g} messages/s to each of two queues (maxReceiveCount 3, the default "
        f"backoff 10/60/300 s), the handler's dependency down for {data['outage_s']:g} s in the middle; "
        "one worker declares the dependency (its breaker on), the other does not "
        f"(`python -m benchmarks.outage --docs`; {data['sent_per_queue']} messages per queue):\n\n"
        "| variant | handled | dead-lettered | lost | handled twice | highest receive count | "
        "full rate again (s after return) |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def write_section(data: dict[str, Any]) -> None:
    """Replace the page's "Downstream outage: the circuit breaker" section (``replace_section``)."""
    replace_section(DOC, "Downstream outage: the circuit breaker", section(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default=os.environ.get("SQS_WORKER_TEST_ENDPOINT"), required=False)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--outage", type=float, default=300)
    parser.add_argument("--before", type=float, default=20)
    parser.add_argument("--after", type=float, default=60)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args(argv)
    if not args.endpoint:
        parser.error("--endpoint (or SQS_WORKER_TEST_ENDPOINT): a LocalStack")
    data = asyncio.run(run(args.endpoint, args.rate, args.outage, args.before, args.after))
    print(json.dumps(data, indent=2))
    if args.docs:
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_section(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
