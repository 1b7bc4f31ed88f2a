"""Graceful shutdown of the real process: SIGTERM in the middle of work loses nothing and
redelivers nothing finished; received-but-not-started messages go back at once; a second
signal exits at once."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Aws, TestQueue, eventually
from tests.servers import free_port
from tests.support.process import WorkerProcess, read_records


def config(aws: Aws, queue: TestQueue, **overrides: object) -> dict[str, object]:
    q: dict[str, object] = {
        "name": queue.name,
        "handlers": ["tests.support.recorder"],
        "wait_time_seconds": 20,
        "pollers": 2,
        "max_in_flight": 10,
        "visibility_timeout": 20,
        "retry_backoff": [1],
    }
    q.update(overrides)
    return {
        "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
        "shutdown_grace": 10,
        "queues": {"q": q},
    }


@pytest.fixture
def procs() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for p in started:
        p.kill()


async def test_sigterm_mid_work_loses_nothing_and_redelivers_nothing_finished(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    total = 40
    await aws.send_many(queue.url, [{"n": i} for i in range(total)], "work")
    env = {"RECORD_FILE": str(record), "WORK_SECONDS": "1.5"}
    first = WorkerProcess(tmp_path, config(aws, queue), env).start()
    procs.append(first)
    await eventually(lambda: len(read_records(record)[1]) >= 10, timeout=30)
    await eventually(lambda: len(read_records(record)[0]) > len(read_records(record)[1]), timeout=10)
    first.signal(signal.SIGTERM)  # handlers are mid-way
    stopped_at = time.monotonic()
    assert await asyncio.to_thread(first.wait, 20) == 0, first.log()
    assert time.monotonic() - stopped_at < 10  # within the grace period
    started, done = read_records(record)
    assert sorted(started) == sorted(done)  # every running handler was allowed to finish
    events = [json.loads(line)["event"] for line in first.log().splitlines() if line.startswith("{")]
    assert "shutdown_complete" in events
    # Everything finished was deleted; everything else is still in the queue.
    assert await aws.total(queue.url) == total - len(done)
    # A second worker handles the rest; nothing finished by the first one runs again.
    second = WorkerProcess(tmp_path, config(aws, queue, wait_time_seconds=1), env).start()
    procs.append(second)
    await eventually(lambda: len(read_records(record)[1]) >= total, timeout=60)
    second.signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, 20) == 0
    _, done = read_records(record)
    assert len(done) == total
    assert len(set(done)) == total  # no duplicates
    assert await aws.total(queue.url) == 0


async def test_fifo_messages_received_but_not_started_are_visible_again_at_once(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue(fifo=True)
    record = tmp_path / "record.txt"
    for i in range(10):
        await aws.send(queue.url, {"n": i}, "work", group="only-group")
    worker = WorkerProcess(
        tmp_path, config(aws, queue, visibility_timeout=60), {"RECORD_FILE": str(record), "WORK_SECONDS": "2"}
    ).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 1, timeout=30)
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 20) == 0, worker.log()
    started, done = read_records(record)
    assert started == done
    assert len(done) == 1
    # The nine that were received with the first but never started are visible now,
    # not after the 60 s visibility timeout.
    counts = await aws.counts(queue.url)
    assert counts == {"visible": 9, "in_flight": 0, "delayed": 0}, counts


@pytest.mark.parametrize(("second", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 1)])
async def test_second_signal_exits_at_once(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess], second: signal.Signals, code: int
) -> None:
    """A second Ctrl-C exits as an interrupted command does (130), a second SIGTERM with 1."""
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    await aws.send(queue.url, {"n": 1}, "work")
    worker = WorkerProcess(
        tmp_path, config(aws, queue), {"RECORD_FILE": str(record), "WORK_SECONDS": "60"}
    ).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 1, timeout=30)
    worker.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    worker.signal(second)
    started = time.monotonic()
    assert await asyncio.to_thread(worker.wait, 10) == code
    assert time.monotonic() - started < 3
    assert read_records(record)[1] == []  # not finished, so not deleted: it will come back
    assert await aws.total(queue.url) == 1


async def test_ctrl_c_says_what_it_waits_for_and_exits_130(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue()
    worker = WorkerProcess(tmp_path, config(aws, queue, wait_time_seconds=2), {"WORK_SECONDS": "0"}).start()
    procs.append(worker)
    await eventually(lambda: "consumer_started" in worker.log(), timeout=30)
    worker.signal(signal.SIGINT)
    assert await asyncio.to_thread(worker.wait, 20) == 130, worker.log()
    line = next(json.loads(x) for x in worker.log().splitlines() if '"signal_received"' in x)
    assert (
        line["waiting_for"]
        == "no running messages and the open long polls (up to 2 s); then deletes are flushed"
    )
    assert line["at_most_seconds"] == 20  # shutdown_grace 10 + shutdown_flush 10
    assert "second Ctrl-C" in line["hint"]


async def test_stop_lets_long_polls_return_so_messages_sent_right_after_are_not_hidden(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    # A long poll cancelled on our side stays open on the server, which hands it the next
    # messages: invisible to everyone for a visibility timeout (20 s here).
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    env = {"RECORD_FILE": str(record), "WORK_SECONDS": "0"}
    worker = WorkerProcess(tmp_path, config(aws, queue, wait_time_seconds=4), env).start()
    procs.append(worker)
    await eventually(lambda: "consumer_started" in worker.log(), timeout=30)
    await asyncio.sleep(1)  # the long polls are in progress
    worker.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    await asyncio.sleep(0.5)
    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "work")
    sent_at = time.monotonic()
    assert await asyncio.to_thread(worker.wait, 15) == 0, worker.log()
    assert time.monotonic() - stopped_at < 4 + 3  # the polls' wait time, not the grace
    second = WorkerProcess(tmp_path, config(aws, queue, wait_time_seconds=1), env).start()
    procs.append(second)
    await eventually(lambda: len(read_records(record)[1]) == 5, timeout=30)
    assert time.monotonic() - sent_at < 15  # not after a 20 s visibility timeout


async def test_plain_function_handler_finishing_after_the_grace_is_deleted_not_redone(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    await aws.send(queue.url, {"n": 1}, "work_sync")
    cfg = config(aws, queue, wait_time_seconds=5)
    cfg |= {"shutdown_grace": 1, "shutdown_flush": 8}
    at_exit = tmp_path / "atexit.txt"
    env = {"RECORD_FILE": str(record), "WORK_SECONDS": "4", "ATEXIT_FILE": str(at_exit)}
    worker = WorkerProcess(tmp_path, cfg, env).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 1, timeout=30)
    worker.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    await asyncio.sleep(2)  # past the grace, the thread still runs
    counts = await aws.counts(queue.url)
    assert counts["visible"] == 0, counts  # never released while its thread runs
    assert await asyncio.to_thread(worker.wait, 15) == 0, worker.log()
    assert time.monotonic() - stopped_at < 1 + 8 + 2
    assert read_records(record)[1] == read_records(record)[0]
    assert await aws.total(queue.url) == 0  # finished, so deleted
    assert at_exit.exists()  # an idle pool thread is no reason to skip the exit handlers


async def test_plain_function_handler_past_the_final_deadline_is_left_to_reappear(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    await aws.send(queue.url, {"n": 1}, "work_sync")
    cfg = config(aws, queue, visibility_timeout=6, wait_time_seconds=2)
    cfg |= {"shutdown_grace": 1, "shutdown_flush": 1}
    worker = WorkerProcess(tmp_path, cfg, {"RECORD_FILE": str(record), "WORK_SECONDS": "30"}).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 1, timeout=30)
    worker.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await asyncio.to_thread(worker.wait, 10) == 0, worker.log()
    assert time.monotonic() - stopped_at < 1 + 1 + 3  # the thread does not keep the process up
    assert "handler_thread_abandoned" in worker.log()
    counts = await aws.counts(queue.url)
    assert counts["visible"] == 0, counts  # not released: it reappears after its visibility


async def test_sigterm_works_when_nobody_reads_the_log(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    queue = await aws.queue()
    port = free_port()
    cfg = config(aws, queue, wait_time_seconds=1)
    cfg["health"] = {"enabled": True, "host": "127.0.0.1", "port": port, "ready_window": 5}
    worker = WorkerProcess(tmp_path, cfg, {"RECORD_FILE": "/dev/null"})
    worker.start(closed_log=True)
    procs.append(worker)
    await eventually(lambda: _ready(port), timeout=60)  # started (signals wired); stderr closed
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 10) == 0


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("silent", [False, True])
async def test_startup_timeout_is_a_real_upper_bound(silent: bool) -> None:
    # Refused at once (port 9), or a server that accepts and never answers.
    from worker.aws import AwsError
    from worker.messages.routing import Registry, Router
    from worker.runtime.supervisor import Supervisor
    from worker.settings import load_settings

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1] if silent else 9
    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1", "startup_timeout": 2},
            "queues": {"q": {"handlers": ["tests.support.noop"]}},
        },
    )
    started = time.monotonic()
    try:
        with pytest.raises(AwsError, match="startup_timeout"):
            await Supervisor(settings, {"q": Registry(Router().routes)}).run()
    finally:
        server.close()
    assert time.monotonic() - started < 2 + 1


async def test_a_failing_startup_hook_stops_the_worker_before_any_receive(aws: Aws) -> None:
    from tests.conftest import settings_for
    from worker import Resources, Router
    from worker.messages.routing import Registry
    from worker.runtime.hooks import StartupError
    from worker.runtime.supervisor import Supervisor

    queue = await aws.queue()
    await aws.send(queue.url, {"n": 1}, "job")
    router = Router()
    ran: list[str] = []

    @router.on_startup
    async def broken(resources: Resources) -> None:
        raise ConnectionError("database refused")

    @router.handler("job")
    async def job(payload: dict[str, int]) -> None:
        ran.append("job")

    supervisor = Supervisor(settings_for(aws.endpoint, queue), {"q": Registry.of(router)})
    with pytest.raises(
        StartupError, match=r"start-up hook .*broken failed: ConnectionError: database refused"
    ):
        await supervisor.run()
    assert ran == []
    assert await aws.counts(queue.url) == {"visible": 1, "in_flight": 0, "delayed": 0}


async def test_a_handler_needing_a_resource_nobody_provides_is_refused_at_start(aws: Aws) -> None:
    from tests.conftest import settings_for
    from worker import Router
    from worker.messages.routing import Registry
    from worker.runtime.hooks import StartupError
    from worker.runtime.supervisor import Supervisor

    class Pool:
        pass

    queue = await aws.queue()
    router = Router()

    async def job(payload: dict[str, int], pool: Pool) -> None:
        pass

    job.__annotations__["pool"] = Pool  # a local class: give the hint as an object
    router.add("job", job)
    supervisor = Supervisor(settings_for(aws.endpoint, queue), {"q": Registry.of(router)})
    with pytest.raises(StartupError, match="needs Pool, which no start-up hook provided"):
        await supervisor.run()


@pytest.mark.parametrize("missing", ["first", "second"])
async def test_queues_are_resolved_together_and_the_first_failure_in_order_is_reported(
    aws: Aws, missing: str
) -> None:
    from worker.aws import AwsNotFound
    from worker.messages.routing import Registry, Router
    from worker.runtime.supervisor import Supervisor
    from worker.settings import load_settings

    queue = await aws.queue()
    names = {"first": queue.name, "second": queue.name, "third": "no-such-queue-either"}
    names[missing] = "no-such-queue-here"
    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
            "queues": {
                key: {"name": name, "handlers": ["tests.support.noop"]} for key, name in names.items()
            },
        },
    )
    registries = {key: Registry(Router().routes) for key in names}
    with pytest.raises(AwsNotFound) as failure:
        await Supervisor(settings, registries).run()
    # As if resolved one after another: the first missing queue in configuration order.
    # With where it was looked for, as every command says it (configuration.md).
    assert str(failure.value).startswith(
        f"queues.{missing}: queue 'no-such-queue-here' does not exist "
        f"(region us-east-1, endpoint {aws.endpoint})"
    )


async def test_a_missing_queue_at_start_suggests_a_close_name(aws: Aws) -> None:
    from worker.aws import AwsNotFound
    from worker.messages.routing import Registry, Router
    from worker.runtime.supervisor import Supervisor
    from worker.settings import load_settings

    queue = await aws.queue(prefix="zsuggest")  # (a prefix few queues of the test server share)
    typo = queue.name[:-1] + ("x" if queue.name[-1] != "x" else "y")
    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
            "queues": {"orders": {"name": typo, "handlers": ["tests.support.noop"]}},
        },
    )
    with pytest.raises(AwsNotFound) as failure:
        await Supervisor(settings, {"orders": Registry(Router().routes)}).run()
    assert f"did you mean {queue.name!r}" in str(failure.value)


async def test_a_server_that_keeps_failing_at_start_is_unreachable_not_refused() -> None:
    # HTTP 503 on every call (a transient error) until startup_timeout: exit code 5, not 4.
    from worker.aws import AwsUnreachable
    from worker.messages.routing import Registry, Router
    from worker.runtime.supervisor import Supervisor
    from worker.settings import load_settings

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                body = b'{"__type": "ServiceUnavailable", "message": "try later"}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.0\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(unavailable, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = load_settings(
        None,
        {
            "aws": {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1", "startup_timeout": 2},
            "queues": {"q": {"handlers": ["tests.support.noop"]}},
        },
    )
    try:
        with pytest.raises(AwsUnreachable, match="startup_timeout"):
            await Supervisor(settings, {"q": Registry(Router().routes)}).run()
    finally:
        server.close()


async def test_the_process_exits_by_grace_plus_flush_whatever_threads_remain(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    # An async handler cancelled at the grace leaves its asyncio.to_thread call running;
    # Python would join that thread at exit for as long as it sleeps (30 s). On Kubernetes
    # that ends in SIGKILL: the process ends by grace + flush instead, naming the thread.
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    await aws.send(queue.url, {"n": 1}, "work_in_thread")
    cfg = config(aws, queue, wait_time_seconds=1)
    cfg |= {"shutdown_grace": 1, "shutdown_flush": 2}
    worker = WorkerProcess(tmp_path, cfg, {"RECORD_FILE": str(record), "WORK_SECONDS": "30"}).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 1, timeout=30)
    worker.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await asyncio.to_thread(worker.wait, 40) == 0, worker.log()
    assert time.monotonic() - stopped_at < 1 + 2 + 1.5, worker.log()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    [left] = [line for line in lines if line["event"] == "threads_left_behind"]
    assert left["threads"]
    assert await aws.total(queue.url) == 1  # released at the grace: it runs again elsewhere


async def test_a_plain_function_batch_keeps_its_leases_through_the_grace_and_runs_once(
    aws: Aws, tmp_path: Path, procs: list[WorkerProcess]
) -> None:
    # The thread cannot be stopped: past the grace its messages stay leased (never released
    # for a second worker to run while it still runs), and its result counts when it ends
    # before the final deadline: deleted, not run again.
    queue = await aws.queue()
    record = tmp_path / "record.txt"
    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "rows_sync")
    cfg = config(aws, queue, wait_time_seconds=1, visibility_timeout=4)
    cfg |= {"shutdown_grace": 1, "shutdown_flush": 8}
    worker = WorkerProcess(tmp_path, cfg, {"RECORD_FILE": str(record), "WORK_SECONDS": "4"}).start()
    procs.append(worker)
    await eventually(lambda: len(read_records(record)[0]) == 3, timeout=30)
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0, worker.log()
    started, done = read_records(record)
    assert len(started) == 3
    assert sorted(done) == sorted(started)  # the thread finished within grace + flush
    events = [json.loads(line)["event"] for line in worker.log().splitlines() if line.startswith("{")]
    assert "message_released" not in events
    assert "handler_thread_still_running" in events
    assert await aws.total(queue.url) == 0  # its result counted: deleted, not run again
