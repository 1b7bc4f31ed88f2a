"""Redrive against LocalStack: bounded runs, each message moved at most once, true summaries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Aws, TestQueue, eventually
from worker.aws import AwsClient
from worker.errors import ConfigError, NotFoundError
from worker.ops import dlq
from worker.ops.dlq import RUN_ATTRIBUTE, DlqPair, RedriveResult


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


async def seed(aws: Aws, url: str, kinds: list[str]) -> None:
    """One message per entry of ``kinds`` (its type), body {"n": index}."""
    for start in range(0, len(kinds), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps({"n": start + i}),
                "MessageAttributes": {"type": {"DataType": "String", "StringValue": kind}},
            }
            for i, kind in enumerate(kinds[start : start + 10])
        ]
        response = await aws.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed")


async def pair_of(aws: Aws, queue: TestQueue) -> DlqPair:
    return await dlq.resolve(AwsClient(aws.sqs), queue.name)


class FailingConsumer:
    """A consumer of the source queue whose every message fails and goes back to the DLQ:
    either by SQS's redrive policy (``sqs``: received and never deleted, visibility 0, so
    the next receive exceeds maxReceiveCount 1 and SQS moves it, same message id) or as the
    worker's own DLQ move does it (``worker``: a copy with the attributes and
    ``worker.original_message_id`` sent to the DLQ, the original deleted; a new id)."""

    def __init__(self, aws: Aws, queue: TestQueue, how: str) -> None:
        self.aws = aws
        self.queue = queue
        self.how = how
        self.received: dict[str, str] = {}  # message id -> body, of every copy received

    async def run(self) -> None:
        sqs = self.aws.sqs
        while True:
            r = await sqs.receive_message(
                QueueUrl=self.queue.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=0,
                MessageAttributeNames=["All"],
            )
            for m in r.get("Messages") or []:
                self.received[m["MessageId"]] = m["Body"]
                if self.how == "worker":
                    attrs = {
                        k: {f: v for f, v in a.items() if f in ("DataType", "StringValue")}
                        for k, a in (m.get("MessageAttributes") or {}).items()
                    }
                    attrs.setdefault(
                        "worker.original_message_id", {"DataType": "String", "StringValue": m["MessageId"]}
                    )
                    await sqs.send_message(
                        QueueUrl=self.queue.dlq_url, MessageBody=m["Body"], MessageAttributes=attrs
                    )
                    await sqs.delete_message(QueueUrl=self.queue.url, ReceiptHandle=m["ReceiptHandle"])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FailingConsumer]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def assert_progress_ends_at_total(progress: Progress, total: int) -> None:
    assert progress.calls, "progress was never called"
    assert all(t == total and 0 <= d <= total for d, t in progress.calls), progress.calls
    assert [d for d, _ in progress.calls] == sorted(d for d, _ in progress.calls)
    assert progress.calls[-1] == (total, total)


async def test_type_filtered_redrive_counts_are_true(aws: Aws) -> None:
    """Was: 1 of 21 moved, the summary said "left in DLQ 10" while 20 were left, and the
    progress ended at 1/21."""
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["other"] * 10 + ["wanted"] + ["other"] * 10)
    progress = Progress()
    result = await dlq.redrive(
        AwsClient(aws.sqs), await pair_of(aws, queue), message_type="wanted", progress=progress
    )
    assert result == RedriveResult(total=21, moved=1, skipped=20, failed=0, returned=0, left=20)
    assert_progress_ends_at_total(progress, 21)
    assert (await aws.counts(queue.dlq_url))["visible"] == 20  # skipped ones are visible again
    moved = await aws.drain(queue.url)
    assert [json.loads(m["Body"])["n"] for m in moved] == [10]
    assert moved[0]["MessageAttributes"]["type"]["StringValue"] == "wanted"
    assert RUN_ATTRIBUTE in moved[0]["MessageAttributes"]


async def test_limit_counts_the_rest_as_skipped(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["a"] * 6)
    progress = Progress()
    result = await dlq.redrive(AwsClient(aws.sqs), await pair_of(aws, queue), limit=2, progress=progress)
    assert (result.total, result.moved, result.skipped, result.failed, result.left) == (6, 2, 4, 0, 4)
    assert result.method == "manual"
    # With a limit the bar counts what is moved, up to the limit (was: 6/6, all looked at).
    assert_progress_ends_at_total(progress, 2)
    assert await aws.total(queue.url) == 2
    assert await aws.total(queue.dlq_url) == 4


class LaggingCounts(AwsClient):
    """SQS's approximate counts as they can be right after a delete: still the old ones."""

    def __init__(self, client: object) -> None:
        super().__init__(client)
        self.first: dict[str, Any] | None = None

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        if operation == "get_queue_attributes" and "All" not in params.get("AttributeNames", []):
            if self.first is None:
                self.first = await super().call(operation, **params)
            return self.first
        return await super().call(operation, **params)


async def test_a_limited_run_says_what_it_left_whatever_the_lagging_count_says(aws: Aws) -> None:
    """Was: "--limit 3" of 9 said "left in DLQ 9" (SQS's count before the deletes showed)
    and its bar 9/9."""
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["a"] * 9)
    progress = Progress()
    sqs = LaggingCounts(aws.sqs)
    result = await dlq.redrive(sqs, await dlq.resolve(sqs, queue.name), limit=3, progress=progress)
    assert (result.total, result.moved, result.skipped, result.left) == (9, 3, 6, 6)
    assert progress.calls[-1] == (3, 3)
    assert await aws.total(queue.dlq_url) == 6
    # Fewer to move than the limit: the bar ends where the run did, short of the limit.
    progress = Progress()
    result = await dlq.redrive(
        AwsClient(aws.sqs),
        await pair_of(aws, queue),
        message_type="none-of-these",
        limit=3,
        progress=progress,
    )
    assert (result.total, result.moved, result.skipped, result.left) == (6, 0, 6, 6)
    assert progress.calls[-1] == (0, 3)


@pytest.mark.parametrize("how", ["sqs", "worker"])
async def test_redrive_ends_while_a_failing_consumer_returns_every_copy(aws: Aws, how: str) -> None:
    """Was: the same message moved 2,026 times in 10 minutes. Now the run stops at the depth
    it started with and moves every message at most once, even though each copy is back in
    the DLQ moments after it was moved."""
    queue = await aws.queue(max_receive_count=1, visibility=1)
    assert queue.dlq_url
    kinds = ["wanted", "other"] * 20  # 40 messages, 20 to move
    await seed(aws, queue.dlq_url, kinds)
    consumer = FailingConsumer(aws, queue, how)
    progress = Progress()
    async with consumer.running():
        started = time.monotonic()
        result = await asyncio.wait_for(
            dlq.redrive(
                AwsClient(aws.sqs), await pair_of(aws, queue), message_type="wanted", progress=progress
            ),
            timeout=60,
        )
        elapsed = time.monotonic() - started

        dlq_url = queue.dlq_url

        async def all_back() -> bool:
            return await aws.total(dlq_url) == 40 and await aws.total(queue.url) == 0

        await eventually(all_back, timeout=20)
    assert elapsed < 20
    assert (result.total, result.moved, result.skipped, result.failed) == (40, 20, 20, 0)
    assert_progress_ends_at_total(progress, 40)
    # Each of the 20 was sent once: 20 copies reached the source, one per message.
    bodies = Counter(json.loads(b)["n"] for b in consumer.received.values())
    assert len(consumer.received) == 20
    assert sorted(bodies) == [n for n, k in enumerate(kinds) if k == "wanted"]
    assert set(bodies.values()) == {1}


@pytest.mark.parametrize("how", ["sqs", "worker"])
async def test_a_copy_back_in_the_dlq_is_never_moved_again(aws: Aws, how: str) -> None:
    """The depth bound aside (LocalStack hands out the oldest messages first, so a run of
    the real entry point sees every original before any copy comes back): a run asked to
    look at more messages than there are ends only when the DLQ holds nothing but the
    copies it sent, each moved once, whether SQS or the worker put it back."""
    queue = await aws.queue(max_receive_count=1, visibility=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["wanted"] * 15)
    consumer = FailingConsumer(aws, queue, how)
    async with consumer.running():
        result = await asyncio.wait_for(
            dlq._manual(  # the bound set high on purpose
                AwsClient(aws.sqs),
                await pair_of(aws, queue),
                None,
                None,
                1000,
                None,
                "type",
            ),
            timeout=60,
        )
    assert (result.moved, result.skipped, result.failed) == (15, 0, 0)
    assert result.returned >= 1  # came back during the run and was recognised
    assert len(consumer.received) == 15
    assert sorted(json.loads(b)["n"] for b in consumer.received.values()) == list(range(15))


async def test_a_later_run_moves_what_an_earlier_run_moved(aws: Aws) -> None:
    """The mark of a run is only that run's: the next run moves the same messages again."""
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["a"] * 3)
    pair = await pair_of(aws, queue)
    first = await dlq.redrive(AwsClient(aws.sqs), pair, use_move_task=False)
    assert (first.moved, first.left) == (3, 0)
    for m in await aws.drain(queue.url):  # fail again, the way the worker moves them
        attrs = {
            k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
            for k, v in m["MessageAttributes"].items()
        }
        await aws.sqs.send_message(QueueUrl=queue.dlq_url, MessageBody=m["Body"], MessageAttributes=attrs)
    second = await dlq.redrive(AwsClient(aws.sqs), pair, use_move_task=False)
    assert (second.total, second.moved, second.returned, second.left) == (3, 3, 0, 0)
    again = await aws.drain(queue.url)
    marks = {m["MessageAttributes"][RUN_ATTRIBUTE]["StringValue"] for m in again}
    assert len(marks) == 1  # the second run's mark replaced the first's


async def test_move_task_summary_is_true(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    await seed(aws, queue.dlq_url, ["a"] * 5)
    progress = Progress()
    result = await asyncio.wait_for(
        dlq.redrive(AwsClient(aws.sqs), await pair_of(aws, queue), progress=progress), timeout=60
    )
    assert result.method == "StartMessageMoveTask"
    assert (result.total, result.moved, result.skipped, result.failed, result.left) == (5, 5, 0, 0, 0)
    assert_progress_ends_at_total(progress, 5)
    assert await aws.total(queue.url) == 5


async def test_an_empty_dlq_is_a_quick_no_op(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    progress = Progress()
    result = await dlq.redrive(
        AwsClient(aws.sqs), await pair_of(aws, queue), message_type="x", progress=progress
    )
    assert result == RedriveResult(total=0)
    assert progress.calls == []


async def test_resolve_errors_name_the_queue(aws: Aws) -> None:
    sqs = AwsClient(aws.sqs)
    with pytest.raises(NotFoundError, match="queue 'no-such-queue-q1' does not exist"):
        await dlq.resolve(sqs, "no-such-queue-q1")
    plain = await aws.queue()
    with pytest.raises(NotFoundError, match=f"queue '{plain.name}' has no redrive policy"):
        await dlq.resolve(sqs, plain.name)
    shared = await aws.queue()
    policy: dict[str, Any] = {"deadLetterTargetArn": shared.arn, "maxReceiveCount": "3"}
    for _ in range(2):
        await aws.sqs.create_queue(
            QueueName=f"{shared.name}-src{_}", Attributes={"RedrivePolicy": json.dumps(policy)}
        )
    with pytest.raises(ConfigError, match=r"dead-letter queue of several queues .*name the source queue"):
        await dlq.resolve(sqs, shared.name)
    # A source whose DLQ was deleted.
    orphan = await aws.queue(max_receive_count=1)
    assert orphan.dlq_url
    await aws.sqs.delete_queue(QueueUrl=orphan.dlq_url)
    with pytest.raises(
        NotFoundError, match=f"the dead-letter queue of '{orphan.name}', '{orphan.name}-dlq' .*does not exist"
    ):
        await dlq.resolve(sqs, orphan.name)
