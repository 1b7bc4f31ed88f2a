"""Consumer behaviour against LocalStack: FIFO order per group, parallel groups,
backpressure on messages in flight, adaptive concurrency (a backlog raises the limit and
the pollers, an idle queue keeps one long-polling poller), group ids on standard queues
(fair queues: no order, no holding)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, PermanentFailure, Retry, Router
from worker.observe.logs import configure_logging

if TYPE_CHECKING:
    from benchmarks.harness import Proxy


async def test_fifo_order_per_group_holds_under_failures_while_groups_run_in_parallel(aws: Aws) -> None:
    queue = await aws.queue(fifo=True, max_receive_count=5)
    groups, per_group = 4, 8
    done: dict[str, list[int]] = {f"g{g}": [] for g in range(groups)}
    running_now: dict[str, int] = {}
    overlap_in_group = 0
    max_groups_at_once = 0
    router = Router()

    @router.handler("step")
    async def step(payload: dict[str, int], message: Message) -> None:
        nonlocal overlap_in_group, max_groups_at_once
        group = message.group_id
        assert group is not None
        if running_now.get(group):
            overlap_in_group += 1
        running_now[group] = running_now.get(group, 0) + 1
        max_groups_at_once = max(max_groups_at_once, sum(1 for v in running_now.values() if v))
        try:
            await asyncio.sleep(0.1)
            if group == "g1" and payload["seq"] == 2 and message.receive_count == 1:
                raise RuntimeError("transient failure in the middle of a group")
            done[group].append(payload["seq"])
        finally:
            running_now[group] -= 1

    for seq in range(per_group):
        for g in range(groups):
            await aws.send(queue.url, {"seq": seq}, "step", group=f"g{g}")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1], max_in_flight=40, pollers=2)
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.succeeded == groups * per_group, timeout=40)
    assert overlap_in_group == 0
    assert max_groups_at_once >= 2
    for group, seqs in done.items():
        assert seqs == list(range(per_group)), group
    assert stats.failed == 1
    # Retried in place: g1's later messages were held, never given back or dead-lettered.
    assert stats.released == 0
    assert stats.dead_lettered == 0
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_pollers_never_hold_more_than_max_in_flight(aws: Aws) -> None:
    queue = await aws.queue()
    router = Router()
    active = 0
    peak = 0

    @router.handler("work")
    async def work(payload: dict[str, int]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        active -= 1

    await aws.send_many(queue.url, [{"n": i} for i in range(60)], "work")
    settings = settings_for(aws.endpoint, queue, pollers=4, max_in_flight=12, batch_size=10)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        in_flight_seen = 0
        while consumer.counters.succeeded < 60:
            in_flight_seen = max(in_flight_seen, consumer.in_flight)
            # Not received while no slot is free: SQS still shows them as visible.
            await asyncio.sleep(0.02)
    assert peak <= 12
    assert in_flight_seen <= 12
    assert peak >= 10  # and the bound is used


async def test_fifo_rejected_head_goes_to_the_dlq_alone_and_its_group_goes_on(aws: Aws) -> None:
    # maxReceiveCount 2: followers given back with the head would reach the DLQ unrun.
    queue = await aws.queue(fifo=True, max_receive_count=2)
    done: list[int] = []
    router = Router()

    @router.handler("step")
    async def step(payload: dict[str, int]) -> None:
        if payload["seq"] == 0:
            raise PermanentFailure("the first one is bad")
        done.append(payload["seq"])

    for seq in range(6):
        await aws.send(queue.url, {"seq": seq}, "step", group="g")
    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 5, timeout=30)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
    assert done == [1, 2, 3, 4, 5]
    assert queue.dlq_url
    dead = await aws.drain(queue.dlq_url)
    assert len(dead) == 1
    assert json.loads(dead[0]["Body"]) == {"seq": 0}
    attributes = dead[0]["MessageAttributes"]
    assert attributes["worker.failure_reason"]["StringValue"] == "the first one is bad"
    assert attributes["type"]["StringValue"] == "step"  # the original's attributes are kept
    assert dead[0]["Attributes"]["MessageGroupId"] == "g"
    assert await aws.total(queue.url) == 0


async def test_fifo_head_is_retried_in_place_then_dead_lettered_alone(aws: Aws) -> None:
    queue = await aws.queue(fifo=True, max_receive_count=3)
    attempts: list[int] = []
    done: list[int] = []
    router = Router()

    @router.handler("step")
    async def step(payload: dict[str, int], message: Message) -> None:
        if payload["seq"] == 0:
            attempts.append(message.receive_count)
            raise RuntimeError("always fails")
        done.append(payload["seq"])

    for seq in range(4):
        await aws.send(queue.url, {"seq": seq}, "step", group="g")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[0.5])
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 3, timeout=30)
    assert attempts == [1, 2, 3]  # its own attempts, counted in place
    assert done == [1, 2, 3]  # after the head, in order
    assert counters.released == 0
    assert counters.dead_lettered == 1
    assert queue.dlq_url
    assert len(await aws.drain(queue.dlq_url)) == 1


async def test_standard_queue_rejection_goes_to_the_dlq_at_once_with_its_reason(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    router = Router()

    @router.handler("bad")
    async def bad(payload: dict[str, int]) -> None:
        raise PermanentFailure("unknown customer")

    message_id = await aws.send(queue.url, {"n": 1}, "bad")
    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router) as worker:
        assert queue.dlq_url
        await eventually(lambda: aws.total(queue.dlq_url), timeout=20)
        counters = worker.consumers[0].counters
    assert counters.received == 1
    dead = await aws.drain(queue.dlq_url)
    attributes = dead[0]["MessageAttributes"]
    assert attributes["worker.original_message_id"]["StringValue"] == message_id
    assert attributes["worker.failure_reason"]["StringValue"] == "unknown customer"


async def test_a_backlog_raises_the_limit_and_the_pollers_and_scaling_down_drops_nothing(aws: Aws) -> None:
    queue = await aws.queue()
    n = 2000
    runs: Counter[str] = Counter()
    router = Router()

    @router.handler("io")
    async def io(payload: dict[str, int], message: Message) -> None:
        await asyncio.sleep(0.05)
        runs[message.message_id] += 1

    ids = await aws.send_many(queue.url, [{"n": i} for i in range(n)], "io")
    settings = settings_for(aws.endpoint, queue)  # pollers and max_in_flight: auto (defaults)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        limiter = consumer.limiter
        assert limiter is not None
        start = (limiter.limit, limiter.pollers)
        assert start == (60, 2)
        most = list(start)
        while sum(runs.values()) < n:
            most = [max(most[0], consumer.slots.limit), max(most[1], consumer.pollers_alive)]
            assert consumer.in_flight <= most[0]  # never more than the limit allowed
            await asyncio.sleep(0.02)
        assert most[0] >= 4 * start[0]  # the limit grew well above the start
        assert most[1] >= 4  # and so did the pollers
        # The backlog is gone: each empty long poll (1 s here) takes a poller away.
        await eventually(lambda: consumer.pollers_alive == 1, timeout=30)
        assert limiter.pollers == 1
        gauge = worker.metrics.registry.get_sample_value
        assert gauge("sqs_worker_pollers", {"queue": "q"}) == 1
        assert gauge("sqs_worker_in_flight_limit", {"queue": "q"}) == consumer.slots.limit
        await eventually(lambda: consumer.in_flight == 0, timeout=10)
    assert set(runs) == set(ids)  # every message ran, each once
    assert max(runs.values()) == 1
    assert consumer.counters.released == 0
    assert await aws.total(queue.url) == 0


async def test_an_idle_queue_keeps_one_poller_and_one_request_per_long_poll(aws: Aws, proxy: Proxy) -> None:
    """Idle cost: one poller, one ReceiveMessage per ``wait_time_seconds`` (with the default
    20 s: 3 a minute). Measured with 5 s long polls to keep the test short."""
    wait = 5
    queue = await aws.queue()
    settings = settings_for(proxy.url, queue, wait_time_seconds=wait)  # defaults: auto
    try:
        async with running(settings, Router()) as worker:
            consumer = worker.consumers[0]
            assert consumer.pollers_alive == 2  # the start, before anything is known
            # Both first long polls come back empty: one poller is left.
            await eventually(lambda: consumer.pollers_alive == 1, timeout=3 * wait)
            await asyncio.to_thread(proxy.reset)
            started = time.monotonic()
            await asyncio.sleep(2 * wait - 0.5)
            counts = await asyncio.to_thread(proxy.counts)
            minutes = (time.monotonic() - started) / 60
            assert consumer.pollers_alive == 1
            # One long poll per `wait` seconds: at most 2 started in 2 * wait - 0.5 s.
            assert 1 <= counts["total"] == counts["ops"].get("ReceiveMessage", 0) <= 2
            # The gaps between starts, not the starts over the window: a window of 9.5 s
            # holds two starts 5 s apart when the first falls just after the reset.
            assert (counts["total"] - 1) / minutes / consumer.pollers_alive <= 60 / wait * 1.02
            await asyncio.to_thread(proxy.faults, empty_receives=True)  # let the open poll end
    finally:
        await asyncio.to_thread(proxy.faults)


async def test_fixed_settings_stay_fixed(aws: Aws) -> None:
    queue = await aws.queue()
    settings = settings_for(aws.endpoint, queue, pollers=3, max_in_flight=30)
    async with running(settings, Router()) as worker:
        consumer = worker.consumers[0]
        assert consumer.limiter is None
        await asyncio.sleep(2.5)  # empty 1 s receives: an adaptive count would drop to 1
        assert consumer.pollers_alive == 3
        assert consumer.slots.limit == 30


async def send_grouped(aws: Aws, url: str, body: object, message_type: str, group: str) -> str:
    """Send to a standard queue with a MessageGroupId (a fair queue's tenant)."""
    response = await aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(body),
        MessageGroupId=group,
        MessageAttributes={"type": {"DataType": "String", "StringValue": message_type}},
    )
    return str(response["MessageId"])


async def test_a_standard_queue_runs_messages_of_one_group_side_by_side_and_logs_the_group(aws: Aws) -> None:
    """Fair queues: a MessageGroupId on a standard queue names a tenant, it orders nothing.
    Both messages of one group are in flight at once (a FIFO worker would hold the second
    until the first finished), the handler sees the group, every line about them names it."""
    queue = await aws.queue()
    router = Router()
    both_in_flight = asyncio.Event()
    in_flight: Counter[str | None] = Counter()
    most: Counter[str | None] = Counter()

    @router.handler("job")
    async def job(payload: dict[str, int], message: Message) -> None:
        in_flight[message.group_id] += 1
        most[message.group_id] = max(most[message.group_id], in_flight[message.group_id])
        if in_flight[message.group_id] == 2:
            both_in_flight.set()
        try:
            async with asyncio.timeout(5):  # a worker holding the group never gets here
                await both_in_flight.wait()
        finally:
            in_flight[message.group_id] -= 1
        if payload["n"] == 1 and message.receive_count == 1:
            raise Retry(0, "once more")

    ids = [await send_grouped(aws, queue.url, {"n": n}, "job", "acme") for n in range(2)]
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        settings = settings_for(aws.endpoint, queue, max_in_flight=10)
        async with running(settings, router) as worker:
            counters = worker.consumers[0].counters
            await eventually(lambda: counters.succeeded == 2, timeout=15)
    finally:
        configure_logging("info", "console")
    assert most["acme"] == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    about = [line for line in lines if line.get("message_id") in ids]
    events = {line["event"] for line in about}
    assert {"message_succeeded", "message_retry_requested", "message_retry_scheduled"} <= events, events
    assert all(line.get("group_id") == "acme" for line in about), [
        (line["event"], line.get("group_id")) for line in about
    ]


async def test_a_standard_queue_rejection_keeps_its_group_in_the_dlq_copy(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    assert queue.dlq_url
    router = Router()

    @router.handler("bad")
    async def bad(payload: dict[str, int]) -> None:
        raise PermanentFailure("unknown tenant")

    await send_grouped(aws, queue.url, {}, "bad", "acme")
    async with running(settings_for(aws.endpoint, queue), router):
        await eventually(lambda: aws.total(queue.dlq_url), timeout=10)
    [dead] = await aws.drain(queue.dlq_url)
    assert dead["Attributes"]["MessageGroupId"] == "acme"


async def test_a_bug_in_settling_logs_once_frees_the_slot_and_gives_the_message_back(aws: Aws) -> None:
    # A bug of ours after the handler ran (here: applying the outcome raises once): the
    # message must not stay leased for good; it is given back with the backoff and runs again.
    queue = await aws.queue(max_receive_count=5)
    runs: list[int] = []
    router = Router()

    @router.handler("work")
    async def work(payload: dict[str, int], message: Message) -> None:
        runs.append(message.receive_count)

    await aws.send(queue.url, {"n": 1}, "work")
    out = io.StringIO()
    configure_logging("info", "json", out)
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1], max_in_flight=10, pollers=1)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        consumer.settler.execute = _broken_once(consumer.settler.execute)  # type: ignore[method-assign]
        await eventually(lambda: consumer.counters.succeeded == 2 and consumer.in_flight == 0, timeout=20)
    assert runs == [1, 2]  # given back (visible after the 1 s backoff), run again, deleted
    assert await aws.total(queue.url) == 0
    _assert_one_consumer_error(out)


async def test_a_bug_in_a_fifo_groups_settling_logs_once_and_gives_the_group_back_in_order(aws: Aws) -> None:
    # The same bug on a FIFO queue, where a group's messages run in one task: the head's
    # success cannot be settled, so the head and the followers it held are given back with
    # the backoff (none left leased for good) and the group runs again, in order.
    queue = await aws.queue(fifo=True, max_receive_count=5)
    runs: list[int] = []
    router = Router()

    @router.handler("step")
    async def step(payload: dict[str, int]) -> None:
        runs.append(payload["seq"])

    for seq in range(3):
        await aws.send(queue.url, {"seq": seq}, "step", group="g")
    out = io.StringIO()
    configure_logging("info", "json", out)
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1], max_in_flight=10, pollers=1)
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        consumer.settler.settle_success = _broken_once(consumer.settler.settle_success)  # type: ignore[method-assign]
        # Four successes: the head's first run succeeded too, its settling failed.
        await eventually(lambda: consumer.counters.succeeded == 4 and consumer.in_flight == 0, timeout=30)
    assert runs == [0, 0, 1, 2]  # the head ran again; the followers once, after it, in order
    assert await aws.total(queue.url) == 0
    _assert_one_consumer_error(out)


async def test_a_finished_message_task_leaves_the_consumer(aws: Aws) -> None:
    """Every message runs in a task the consumer holds while it runs (shutdown cancels
    what is left); a task that ended, at once or after waiting, is held no longer: a
    long-running worker must not grow with the messages it has handled."""
    queue = await aws.queue()
    router = Router()

    @router.handler("now")
    async def now(payload: dict[str, int]) -> None:
        pass  # never waits: on Python 3.12+ it ends inside the eager start

    @router.handler("later")
    async def later(payload: dict[str, int]) -> None:
        await asyncio.sleep(0.01)

    await aws.send_many(queue.url, [{"n": i} for i in range(20)], "now")
    await aws.send_many(queue.url, [{"n": i} for i in range(20)], "later")
    async with running(settings_for(aws.endpoint, queue), router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 40, timeout=30)
        await eventually(lambda: not consumer.runner.tasks, timeout=5)


def _broken_once(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, except that its first call raises "a bug of ours" (a coroutine function's
    result is returned unawaited: its caller awaits it as before)."""
    broken = [True]

    def call(*args: Any) -> Any:
        if broken:
            broken.clear()
            raise RuntimeError("a bug of ours")
        return real(*args)

    return call


def _assert_one_consumer_error(out: io.StringIO) -> None:
    errors = [json.loads(line) for line in out.getvalue().splitlines() if '"consumer_error"' in line]
    assert len(errors) == 1
    assert "a bug of ours" in json.dumps(errors[0])


async def test_a_failure_between_receive_and_dispatch_leaves_no_lease_behind(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poller's bookkeeping after a receive raises once (a bug of ours): what it received
    # still runs (its leases were open), and the poller is restarted.
    from worker.runtime.poller import Poller

    queue = await aws.queue()
    router = Router()

    @router.handler("work")
    async def work(payload: dict[str, int]) -> None:
        pass

    real = Poller._count
    broken = [True]

    def count(self: Poller, leases: list[Any]) -> None:
        if broken and leases:
            broken.clear()
            raise RuntimeError("a bug of ours")
        real(self, leases)

    monkeypatch.setattr(Poller, "_count", count)
    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "work")
    async with running(settings_for(aws.endpoint, queue, pollers=1, max_in_flight=10), router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 3 and consumer.in_flight == 0, timeout=30)
        assert consumer.counters.poller_restarts == 1
    assert await aws.total(queue.url) == 0
