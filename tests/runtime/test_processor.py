"""Handler outcomes against LocalStack: retries spaced by the schedule, DLQ after
maxReceiveCount and not before, permanent failures, bad input, timeouts, blocking handlers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, PermanentFailure, Retry, Router
from worker.messages.envelope import parse_message
from worker.messages.routing import Registry
from worker.observe.metrics import NullMetrics
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, Leases
from worker.runtime.processor import Processor
from worker.runtime.rules import CANCELLED, SUCCEEDED, Outcome
from worker.runtime.steps.deadline import Deadlines, DeadlineStep
from worker.settings import QueueSettings
from worker.testing import sqs_message


class Order(BaseModel):
    order_id: str
    amount: float


async def test_failing_message_reaches_dlq_after_max_receive_count_and_not_before(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=3)
    assert queue.dlq_url
    attempts: list[int] = []
    router = Router()

    @router.handler("boom")
    async def boom(payload: dict[str, str], message: Message) -> None:
        attempts.append(message.receive_count)
        raise RuntimeError("downstream is down")

    settings = settings_for(aws.endpoint, queue, retry_backoff=[1])
    await aws.send(queue.url, {"x": 1}, "boom")
    async with running(settings, router):
        await eventually(lambda: len(attempts) == 2, timeout=15)
        assert await aws.total(queue.dlq_url) == 0  # not before maxReceiveCount
        await eventually(lambda: len(attempts) == 3, timeout=15)
        assert await aws.total(queue.dlq_url) == 0
        await eventually(lambda: aws.total(queue.dlq_url), timeout=15)
        await asyncio.sleep(1.5)
    assert attempts == [1, 2, 3]
    dead = await aws.drain(queue.dlq_url)
    assert len(dead) == 1
    assert dead[0]["Body"] == '{"x": 1}'
    assert await aws.total(queue.url) == 0


async def test_retries_are_spaced_by_the_backoff_schedule(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    seen: list[float] = []
    router = Router()

    @router.handler("flaky")
    async def flaky(payload: dict[str, str], message: Message) -> None:
        seen.append(time.monotonic())
        if message.receive_count < 3:
            raise RuntimeError("not yet")

    settings = settings_for(aws.endpoint, queue, retry_backoff=[1, 4], retry_jitter=0)
    await aws.send(queue.url, {"x": 1}, "flaky")
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=20)
    assert len(seen) == 3
    first_gap, second_gap = seen[1] - seen[0], seen[2] - seen[1]
    # LocalStack's visibility expiry runs up to ~1 s late; wait_time_seconds=1 adds up to 1 s.
    assert 1 <= first_gap < 3.5
    assert 4 <= second_gap < 6.5


async def test_retry_exception_sets_the_delay(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    seen: list[float] = []
    router = Router()

    @router.handler("later")
    async def later(payload: dict[str, str], message: Message) -> None:
        seen.append(time.monotonic())
        if message.receive_count == 1:
            raise Retry(delay=3, reason="rate limited")

    settings = settings_for(aws.endpoint, queue, retry_backoff=[20])
    await aws.send(queue.url, {"x": 1}, "later")
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=15)
    assert 3 <= seen[1] - seen[0] < 6  # the requested 3 s, not the 20 s schedule


async def test_permanent_failure_goes_to_dlq_without_backoff(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=2)
    assert queue.dlq_url
    router = Router()
    calls: list[int] = []

    @router.handler("never")
    async def never(payload: dict[str, str], message: Message) -> None:
        calls.append(message.receive_count)
        raise PermanentFailure("customer does not exist")

    settings = settings_for(aws.endpoint, queue, retry_backoff=[300])
    started = time.monotonic()
    await aws.send(queue.url, {"x": 1}, "never")
    async with running(settings, router):
        await eventually(lambda: aws.total(queue.dlq_url), timeout=15)
    assert time.monotonic() - started < 15  # the 300 s backoff was not applied
    assert calls == [1]  # not run (nor logged) again when redelivered on its way to the DLQ


async def test_bad_messages_end_in_dlq_and_the_worker_keeps_running(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=2)
    assert queue.dlq_url
    handled: list[str] = []
    router = Router()

    @router.handler("order")
    async def order(payload: Order) -> None:
        handled.append(payload.order_id)

    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router) as worker:
        await aws.send(queue.url, {"order_id": "1", "amount": 3}, "order")
        await aws.send(queue.url, "this is not JSON", "order")  # undecodable body
        await aws.send(queue.url, {"order_id": "2"}, "order")  # invalid payload (no amount)
        await aws.send(queue.url, {"order_id": "3", "amount": 1}, "refund")  # unknown type
        await aws.send(queue.url, {"order_id": "4", "amount": 1})  # no type at all
        await aws.send(queue.url, {"type": "order", "order_id": "5", "amount": 2})  # type in body
        await eventually(lambda: aws.total(queue.dlq_url), timeout=20)

        async def settled() -> bool:
            return await aws.total(queue.dlq_url) == 4 and await aws.total(queue.url) == 0  # type: ignore[arg-type]

        await eventually(settled, timeout=20)
        # Still alive and serving after the poison messages.
        await aws.send(queue.url, {"order_id": "6", "amount": 1}, "order")
        await eventually(lambda: "6" in handled, timeout=10)
        assert worker.consumers[0].counters.poller_restarts == 0
    assert sorted(handled) == ["1", "5", "6"]
    bodies = sorted(m["Body"] for m in await aws.drain(queue.dlq_url))
    assert bodies == sorted(
        [
            "this is not JSON",
            '{"order_id": "2"}',
            '{"order_id": "3", "amount": 1}',
            '{"order_id": "4", "amount": 1}',
        ]
    )


async def test_handler_over_max_processing_time_is_cancelled_and_retried(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    router = Router()
    attempts: list[int] = []
    cancelled = asyncio.Event()

    @router.handler("hang")
    async def hang(payload: dict[str, str], message: Message) -> None:
        attempts.append(message.receive_count)
        if message.receive_count == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    settings = settings_for(
        aws.endpoint, queue, max_processing_time=2, visibility_timeout=5, retry_backoff=[1]
    )
    await aws.send(queue.url, {"x": 1}, "hang")
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=20)
    assert cancelled.is_set()
    assert attempts == [1, 2]


async def test_plain_functions_run_in_threads_without_blocking_the_loop(aws: Aws) -> None:
    queue = await aws.queue()
    router = Router()
    threads: set[str] = set()

    @router.handler("block")
    def block(payload: dict[str, int]) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(1)

    settings = settings_for(aws.endpoint, queue, max_in_flight=10, thread_pool_size=10)
    await aws.send_many(queue.url, [{"n": i} for i in range(10)], "block")
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.received == 10, timeout=10)
        started = time.monotonic()
        ticks = 0
        while stats.succeeded < 10:  # the loop keeps ticking while handlers block
            await asyncio.sleep(0.05)
            ticks += 1
        elapsed = time.monotonic() - started
    assert elapsed < 3  # ten 1 s handlers overlapped
    assert ticks >= 5
    assert all(name.startswith("handler") for name in threads)
    assert len(threads) > 1


async def test_bodies_never_reach_the_logs(aws: Aws) -> None:
    import io
    import json as jsonlib

    from worker.observe.logs import configure_logging

    queue = await aws.queue(max_receive_count=1)
    router = Router()

    @router.handler("secret")
    async def secret(payload: dict[str, str], message: Message) -> None:
        raise RuntimeError("failed")  # with a traceback whose frames hold the body

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        settings = settings_for(aws.endpoint, queue)
        # Markers no UUID, timestamp or number in a log line can contain by chance.
        await aws.send(queue.url, {"card": "card-SECRETBODYONE"}, "secret")
        await aws.send(queue.url, "SECRETBODYTWO not json", "secret")
        async with running(settings, router) as worker:
            await eventually(lambda: worker.consumers[0].counters.failed == 2, timeout=15)
    finally:
        configure_logging("info", "console")
    lines = [jsonlib.loads(line) for line in out.getvalue().splitlines()]
    assert {"message_failed", "message_rejected"} <= {line["event"] for line in lines}
    failed = next(line for line in lines if line["event"] == "message_failed")
    assert failed["exception"]  # the traceback is there, without locals
    assert "SECRETBODYONE" not in out.getvalue()
    assert "SECRETBODYTWO" not in out.getvalue()
    assert "ReceiptHandle" not in out.getvalue()


async def test_a_handlers_own_cancelled_error_is_a_failure_not_a_shutdown(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    attempts: list[int] = []
    router = Router()

    @router.handler("inner")
    async def inner(payload: dict[str, int], message: Message) -> None:
        attempts.append(message.receive_count)
        if message.receive_count == 1:
            task = asyncio.create_task(asyncio.sleep(10))
            task.cancel()
            await task  # raises CancelledError inside the handler

    await aws.send(queue.url, {"n": 1}, "inner")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1])
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 1, timeout=20)
    assert attempts == [1, 2]
    assert counters.failed == 1
    assert counters.released == 0


async def test_a_body_that_json_cannot_convert_is_rejected_not_retried(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=5)
    router = Router()

    @router.handler("num")
    async def num(payload: object) -> None:
        raise AssertionError("never runs")

    await aws.sqs.send_message(
        QueueUrl=queue.url,
        MessageBody="1" * 5000,  # ValueError (too many digits), not a JSONDecodeError
        MessageAttributes={"type": {"DataType": "String", "StringValue": "num"}},
    )
    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        assert queue.dlq_url
        await eventually(lambda: aws.total(queue.dlq_url), timeout=20)
    assert counters.rejected == 1
    assert counters.received == 1  # moved to the DLQ at once, not after five receives


async def test_rejections_without_a_dlq_follow_the_backoff_instead_of_spinning(aws: Aws) -> None:
    queue = await aws.queue()  # no redrive policy
    runs: list[float] = []
    router = Router()

    @router.handler("bad")
    async def bad(payload: dict[str, int]) -> None:
        runs.append(time.monotonic())
        raise PermanentFailure("never valid")

    await aws.send(queue.url, {"n": 1}, "bad")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[3])
    async with running(settings, router) as worker:
        await asyncio.sleep(5)
        counters = worker.consumers[0].counters
    assert len(runs) == 1  # ran once; its redelivery is not run again by this process
    assert counters.received <= 3  # back after 3 s, not hundreds of receives per second
    assert await aws.total(queue.url) == 1  # kept: nothing is lost without a DLQ


# -- max_processing_time without a timer per message (processor._Deadlines) -----------------
def _processor(router: Router, max_processing_time: float = 0.2) -> tuple[Processor, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    settings = QueueSettings(handlers=["<testing>"], max_processing_time=max_processing_time, retry_jitter=0)
    ctx = QueueContext.standalone("q", settings, Registry.of(router), executor=executor)
    ctx.metrics = NullMetrics()
    return Processor(ctx), executor


def _deadlines(processor: Processor) -> Deadlines:
    step = processor.steps[0]
    assert isinstance(step, DeadlineStep)
    return step.deadlines


def _lease(message_type: str) -> Lease:
    raw = sqs_message({"n": 1}, type=message_type)
    return Leases(lambda lease: None).open(parse_message(raw), raw, time.monotonic(), 30)


async def _run_in_task(processor: Processor, lease: Lease) -> tuple[Outcome, int]:
    """The outcome, and the task's pending cancel requests after it (must be 0)."""

    async def run() -> tuple[Outcome, int]:
        outcome = await processor.run_one(lease)
        task = asyncio.current_task()
        assert task is not None
        return outcome, task.cancelling()

    return await asyncio.create_task(run())


async def test_a_handler_past_max_processing_time_is_cancelled_and_fails_as_a_timeout() -> None:
    router = Router()
    cancelled = asyncio.Event()

    @router.handler("hang")
    async def hang(message: Message) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    processor, executor = _processor(router, 0.2)
    with executor:
        started = time.monotonic()
        outcome, cancelling = await _run_in_task(processor, _lease("hang"))
    assert cancelled.is_set()
    assert 0.2 <= time.monotonic() - started < 0.5
    assert (outcome.kind, outcome.reason) == ("failed", "ran longer than max_processing_time (0.2s)")
    assert cancelling == 0
    assert not _deadlines(processor)._slots  # its timer fired


async def test_deadlines_behave_as_asyncio_timeout_when_the_handler_catches_the_cancel() -> None:
    router = Router()

    @router.handler("swallow")
    async def swallow(message: Message) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    @router.handler("convert")
    async def convert(message: Message) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("gave up") from None

    @router.handler("own_timeout")
    async def own_timeout(message: Message) -> None:
        raise TimeoutError("the handler's own")

    processor, executor = _processor(router, 0.1)
    with executor:
        swallowed = await _run_in_task(processor, _lease("swallow"))
        converted = await _run_in_task(processor, _lease("convert"))
        own = await _run_in_task(processor, _lease("own_timeout"))
    assert swallowed == (SUCCEEDED, 0)  # as with asyncio.timeout: it returned, it succeeded
    assert converted[0].reason.startswith("ran longer than max_processing_time")
    assert converted[1] == 0
    assert (own[0].kind, own[0].reason, own[1]) == ("failed", "TimeoutError: the handler's own", 0)


async def test_a_cancel_from_outside_is_a_shutdown_not_a_timeout() -> None:
    router = Router()
    running_now = asyncio.Event()

    @router.handler("slow")
    async def slow(message: Message) -> None:
        running_now.set()
        await asyncio.sleep(3600)

    processor, executor = _processor(router, 60)
    with executor:
        task = asyncio.create_task(processor.run_one(_lease("slow")))
        await running_now.wait()
        processor.ctx.halt.end_grace()  # the shutdown says so; the cancel alone would not
        task.cancel()
        outcome = await task
    assert outcome is CANCELLED
    assert not any(_deadlines(processor)._slots.values())  # its slot's timer will fire for nothing


async def test_handlers_due_together_share_one_timer_and_none_is_held_after_them() -> None:
    router = Router()
    gate = asyncio.Event()

    @router.handler("wait")
    async def wait(message: Message) -> None:
        await gate.wait()

    processor, executor = _processor(router, 60)
    with executor:
        tasks = [asyncio.create_task(processor.run_one(_lease("wait"))) for _ in range(100)]
        await asyncio.sleep(0.05)
        assert 1 <= len(_deadlines(processor)._slots) <= 10  # not one per handler
        gate.set()
        outcomes = await asyncio.gather(*tasks)
    assert all(o is SUCCEEDED for o in outcomes)
    assert not any(_deadlines(processor)._slots.values())


async def test_a_deadline_is_late_by_a_thousandth_of_max_processing_time_at_most() -> None:
    router = Router()

    @router.handler("hang")
    async def hang(message: Message) -> None:
        await asyncio.sleep(3600)

    processor, executor = _processor(router, 2.0)
    with executor:
        started = time.monotonic()
        outcome, _ = await _run_in_task(processor, _lease("hang"))
    assert outcome.reason == "ran longer than max_processing_time (2s)"
    assert 2.0 <= time.monotonic() - started < 2.0 + 2.0 / 1000 + 0.1  # (+ the loop's own delay)
