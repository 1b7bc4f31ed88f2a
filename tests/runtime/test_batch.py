"""Batch handlers against LocalStack: batches formed across receives up to max_size /
max_wait with every lease kept; per-message results; FIFO batches in group order with a
failure holding back the rest of its group."""

from __future__ import annotations

import json

from pydantic import BaseModel

from tests.conftest import Aws, eventually, running, settings_for
from worker import Message, PermanentFailure, Retry, Router


class Row(BaseModel):
    n: int


async def test_batches_are_formed_up_to_max_size_and_results_are_per_message(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=3)
    sizes: list[int] = []
    seen: dict[int, int] = {}
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.5)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        sizes.append(len(payloads))
        failed: dict[str, BaseException] = {}
        for row, message in zip(payloads, messages, strict=True):
            seen[row.n] = seen.get(row.n, 0) + 1
            if row.n == 3 and message.receive_count == 1:
                failed[message.message_id] = Retry(0, "try row 3 again")
            if row.n == 7:
                failed[message.message_id] = PermanentFailure("row 7 is bad")
        return failed or None

    await aws.send_many(queue.url, [{"n": i} for i in range(25)], "row")
    await aws.sqs.send_message(  # undecodable: rejected alone, never in a batch
        QueueUrl=queue.url,
        MessageBody=json.dumps({"n": "x"}),
        MessageAttributes={"type": {"DataType": "String", "StringValue": "row"}},
    )
    settings = settings_for(aws.endpoint, queue, max_in_flight=40)
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 24, timeout=30)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
    assert max(sizes) <= 10
    assert max(sizes) > 1  # batched, not one by one
    assert sum(sizes) == 26  # 25 rows + row 3 again
    assert seen[3] == 2
    assert all(count == 1 for n, count in seen.items() if n != 3)
    assert queue.dlq_url
    dead = await aws.drain(queue.dlq_url)
    assert sorted(str(json.loads(d["Body"])["n"]) for d in dead) == ["7", "x"]
    assert await aws.total(queue.url) == 0


async def test_a_batch_waits_at_most_max_wait_for_more(aws: Aws) -> None:
    queue = await aws.queue()
    sizes: list[int] = []
    router = Router()

    @router.batch_handler("row", max_size=100, max_wait=0.3)
    async def rows(payloads: list[Row]) -> None:
        sizes.append(len(payloads))

    await aws.send_many(queue.url, [{"n": i} for i in range(3)], "row")
    settings = settings_for(aws.endpoint, queue)
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 3, timeout=10)
    assert sum(sizes) == 3


async def test_a_raising_batch_handler_fails_every_message_of_the_batch(aws: Aws) -> None:
    queue = await aws.queue()
    calls: list[int] = []
    router = Router()

    @router.batch_handler("row", max_size=5, max_wait=0.2)
    async def rows(payloads: list[Row], messages: list[Message]) -> None:
        calls.append(len(payloads))
        if messages[0].receive_count == 1:
            raise RuntimeError("database down")

    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "row")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[1])
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 5, timeout=20)
    assert counters.failed >= 5
    assert sum(calls) >= 10


async def test_fifo_batches_keep_group_order_and_a_failure_holds_back_the_rest(aws: Aws) -> None:
    queue = await aws.queue(fifo=True, max_receive_count=5)
    handled: list[tuple[str, int]] = []
    failed_once: set[int] = set()
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        groups = {m.group_id for m in messages}
        assert len(groups) == 1  # a batch never mixes groups
        failed: dict[str, BaseException] = {}
        for row, message in zip(payloads, messages, strict=True):
            if failed:
                failed[message.message_id] = RuntimeError("held back")  # what the handler may do
                continue
            if row.n == 2 and row.n not in failed_once:
                failed_once.add(row.n)
                failed[message.message_id] = RuntimeError("row 2 fails once")
                continue
            handled.append((str(message.group_id), row.n))
        return failed or None

    for n in range(6):
        for group in ("a", "b"):
            await aws.send(queue.url, {"n": n}, "row", group=group)
    settings = settings_for(aws.endpoint, queue, retry_backoff=[0.5], max_in_flight=20)
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded >= 12, timeout=30)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
    for group in ("a", "b"):
        assert [n for g, n in handled if g == group] == list(range(6)), handled
    assert counters.released == 0
    assert queue.dlq_url
    assert await aws.total(queue.dlq_url) == 0


async def test_fifo_batch_members_that_succeeded_are_never_run_again(aws: Aws) -> None:
    # The handler reports only item 1 as failed: items 0, 2 and 3 succeeded (their effects
    # happened) and are deleted; only item 1 runs again, in place, its group behind it.
    queue = await aws.queue(fifo=True, max_receive_count=5)
    calls: list[list[int]] = []
    router = Router()

    @router.batch_handler("row", max_size=10, max_wait=0.2)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        calls.append([row.n for row in payloads])
        if len(calls) == 1:
            return {messages[1].message_id: RuntimeError("item 1 fails")}
        return None

    for n in range(4):
        await aws.send(queue.url, {"n": n}, "row", group="g")
    settings = settings_for(aws.endpoint, queue, retry_backoff=[0.5])
    async with running(settings, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded >= 4, timeout=30)
    assert calls[0] == [0, 1, 2, 3]
    assert calls[1] == [1]  # only the one that failed
    assert len(calls) == 2


async def test_a_plain_function_batch_handler_counts_as_a_running_handler_thread(aws: Aws) -> None:
    # The CLI skips waiting for the thread pool at exit only while this count is non-zero.
    from worker.runtime.steps.invoke import handler_threads_running

    queue = await aws.queue()
    seen: list[int] = []
    router = Router()

    @router.batch_handler("row", max_size=5, max_wait=0.2)
    def rows(payloads: list[dict[str, int]], messages: list[Message]) -> None:
        seen.append(handler_threads_running())

    async with running(settings_for(aws.endpoint, queue), router):
        for i in range(3):
            await aws.send(queue.url, {"n": i}, "row")
        await eventually(lambda: seen, timeout=15)
    assert seen[0] >= 1
    assert handler_threads_running() == 0
