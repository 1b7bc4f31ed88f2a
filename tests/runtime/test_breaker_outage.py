"""A downstream outage with the circuit breaker: messages wait, leased, instead of walking
to the DLQ on their receive counts; the queue stops receiving while every route is open;
flow resumes when the dependency is back. A real worker process on LocalStack."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.conftest import Aws, eventually
from tests.support.process import WorkerProcess

pytestmark = pytest.mark.timeout(180)


def _done(record: Path) -> dict[str, int]:
    if not record.exists():
        return {}
    return {line.split()[0]: int(line.split()[1]) for line in record.read_text().splitlines()}


async def test_an_outage_dead_letters_nothing_and_flow_resumes_when_it_ends(aws: Aws, tmp_path: Path) -> None:
    queue = await aws.queue(max_receive_count=3, visibility=10)
    assert queue.dlq_url
    down, record = tmp_path / "down", tmp_path / "record.txt"
    down.write_text("")
    config = {
        "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
        "shutdown_grace": 5,
        "breaker": {"failures": 2, "open_for": 1, "max_open_for": 2},
        "queues": {
            "q": {
                "name": queue.name,
                "handlers": ["tests.support.dependency"],
                "wait_time_seconds": 1,
                "visibility_timeout": 10,
                "retry_backoff": [1],
                "retry_jitter": 0,
            }
        },
    }
    worker = WorkerProcess(tmp_path, config, {"DOWN_FILE": str(down), "RECORD_FILE": str(record)}).start()
    try:
        for i in range(20):
            await aws.send(queue.url, {"n": i}, "charge")
        # Down for 12 s: without the breaker, a 1 s backoff and 3 receives put every
        # message in the DLQ within a few seconds.
        await eventually(lambda: '"breaker_opened"' in worker.log(), timeout=30)
        await asyncio.sleep(12)
        assert await aws.total(queue.dlq_url) == 0
        assert _done(record) == {}
        down.unlink()
        await eventually(lambda: len(_done(record)) == 20, timeout=40)
        await eventually(lambda: _empty(aws, queue.url), timeout=20)
    finally:
        worker.signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, worker.log()[-2000:]
    assert await aws.total(queue.dlq_url) == 0
    counts = _done(record)
    assert max(counts.values()) <= 3, counts  # the outage raised no message's count past its DLQ limit
    events = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "breaker_half_open" in names
    assert names.index("breaker_closed") > names.index("breaker_opened")
    failed = [e for e in events if e["event"] == "message_failed"]
    # Only the calls that ran before it opened spend an attempt (a receive of up to 10 runs
    # at once); failed probes wait like the rest.
    assert len(failed) <= 10, len(failed)
    # Probes ran during the outage and failed (each a transition line, whatever the level of
    # a message's repeated waits).
    assert any(e["event"] == "breaker_opened" and e["why"] == "probe failed" for e in events)
    assert any(e["event"] == "message_waiting" and e["dependency"] == "payments" for e in events)


async def _empty(aws: Aws, url: str) -> bool:
    return await aws.total(url) == 0
