"""/healthz, /readyz and /metrics of a running worker."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Aws, aws_clients, eventually, running, settings_for
from tests.servers import LocalStack, free_port
from tests.support.process import WorkerProcess, read_records
from worker import Message, PermanentFailure, Router


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_what_was_sent_and_handled(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    router = Router()

    @router.handler("ok")
    async def ok(payload: dict[str, int]) -> None:
        await asyncio.sleep(0.01)

    @router.handler("bad")
    async def bad(payload: dict[str, int], message: Message) -> None:
        raise PermanentFailure("never")

    settings = settings_for(aws.endpoint, queue, health={"enabled": True, "port": 0, "host": "127.0.0.1"})
    await aws.send_many(queue.url, [{"n": i} for i in range(7)], "ok")
    await aws.send(queue.url, {"n": 1}, "bad")
    await aws.send(queue.url, {"n": 1}, "mystery")
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.succeeded == 7 and stats.failed == 2, timeout=20)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)  # all settled
        worker.update_gauges()
        assert worker.health is not None
        assert worker.health.port
        status, text = await get(worker.health.port, "/metrics")
    assert status == 200
    m = samples(text)
    assert m[("sqs_worker_messages_received_total", (("queue", "q"), ("type", "ok")))] == 7
    assert m[("sqs_worker_messages_succeeded_total", (("queue", "q"), ("type", "ok")))] == 7
    assert (
        m[("sqs_worker_messages_failed_total", (("queue", "q"), ("reason", "rejected"), ("type", "bad")))]
        == 1
    )
    # Unknown types are one label value, whatever the message says.
    assert m[("sqs_worker_messages_received_total", (("queue", "q"), ("type", "unknown")))] == 1
    assert m[("sqs_worker_messages_dead_lettered_total", (("queue", "q"), ("type", "unknown")))] == 1
    assert m[("sqs_worker_handler_duration_seconds_count", (("queue", "q"), ("type", "ok")))] == 7
    assert m[("sqs_worker_in_flight", (("queue", "q"),))] == 0
    # Free slots are the slots' own count: pollers waiting in a long poll hold theirs.
    # Free slots: at most the in-flight limit (adaptive by default), all of it bar what the
    # pollers' receives in progress hold.
    limit = m[("sqs_worker_in_flight_limit", (("queue", "q"),))]
    pollers = m[("sqs_worker_pollers", (("queue", "q"),))]
    assert limit >= 10
    assert pollers >= 1
    assert limit - pollers * 10 <= m[("sqs_worker_free_slots", (("queue", "q"),))] <= limit
    assert m[("sqs_worker_aws_api_calls_total", (("operation", "receive_message"), ("outcome", "ok")))] >= 1
    deletes = m[
        ("sqs_worker_aws_api_calls_total", (("operation", "delete_message_batch"), ("outcome", "ok")))
    ]
    assert 1 <= deletes <= 7


async def test_sigterm_makes_readyz_fail_at_once_while_work_finishes(aws: Aws, tmp_path: Path) -> None:
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    port = free_port()
    await aws.send(queue.url, {"n": 1}, "work")
    config = {
        "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
        "health": {"enabled": True, "port": port, "host": "127.0.0.1"},
        "queues": {"q": {"name": queue.name, "handlers": ["tests.support.recorder"], "wait_time_seconds": 1}},
    }
    worker = WorkerProcess(tmp_path, config, {"RECORD_FILE": str(record), "WORK_SECONDS": "3"}).start()
    try:

        async def healthy() -> bool:
            try:
                return (await get(port, "/healthz"))[0] == 200 and (await get(port, "/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, timeout=30)
        await eventually(lambda: len(read_records(record)[0]) == 1, timeout=15)
        worker.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        status, body = await get(port, "/readyz")
        assert status == 503
        assert '"stopping": true' in body
        assert read_records(record)[1] == []  # the handler is still running
        assert await asyncio.to_thread(worker.wait, 20) == 0
        assert len(read_records(record)[1]) == 1  # and it finished
    finally:
        worker.kill()


async def test_readyz_follows_the_sqs_endpoint(own_server: LocalStack) -> None:
    router = Router()
    router.add("noop", lambda payload: None)
    async with aws_clients(own_server.endpoint) as aws:
        queue = await aws.queue()
        settings = settings_for(
            own_server.endpoint,
            queue,
            health={"enabled": True, "port": 0, "ready_window": 3, "host": "127.0.0.1"},
        )
        async with running(settings, router) as worker:
            assert worker.health is not None
            assert worker.health.port
            port = worker.health.port
            await eventually(lambda: worker.consumers[0].last_receive_ok is not None, timeout=10)
            assert (await get(port, "/readyz"))[0] == 200
            await asyncio.to_thread(own_server.kill)
            down = time.monotonic()

            async def status() -> int:
                return (await get(port, "/readyz"))[0]

            await eventually(lambda: _eq(status, 503), timeout=15)
            assert time.monotonic() - down >= 2.5  # not before the window
            assert (await get(port, "/healthz"))[0] == 200  # alive, just not ready
            await asyncio.to_thread(own_server.start)
            await aws.sqs.create_queue(QueueName=queue.name)
            await eventually(lambda: _eq(status, 200), timeout=40)


async def _eq(fn: object, expected: int) -> bool:
    return await fn() == expected  # type: ignore[operator, no-any-return]
