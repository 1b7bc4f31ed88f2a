"""Settling against LocalStack and the fault proxy: a lease holds its slot and its
extensions until SQS confirms the delete; slow deletes slow receiving; failed entries come
back after a backoff; a stop during an outage ends at its deadline."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import pytest
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from benchmarks.harness import Proxy
from tests.conftest import Aws, eventually, running, settings_for
from tests.support import outage
from tests.support.receipts import delete_elsewhere, leases_for
from worker import Message, Router
from worker.aws import AwsClient
from worker.messages.envelope import parse_message
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker, retry_delay
from worker.runtime.context import QueueContext
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Lease, Leases, State


async def test_a_message_received_twice_is_deleted_without_batch_id_clash(aws: Aws) -> None:
    """Two receipts of one message in one DeleteMessageBatch: ids stay unique."""
    queue = await aws.queue()
    await aws.sqs.send_message(QueueUrl=queue.url, MessageBody="{}")
    first = (await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=0))["Messages"][0]
    await asyncio.sleep(1)  # LocalStack makes it visible again a little late
    second = (await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=30))["Messages"][0]
    assert first["MessageId"] == second["MessageId"]
    acker = Acker(
        QueueContext.link(AwsClient(aws.sqs), "dup", queue.url, QueueCounters(), Metrics()),
        flush_interval=0.01,
    )
    ended: list[Any] = []
    leases = Leases(ended.append)
    acker.start()
    for raw in (first, second):
        lease = leases.open(parse_message(raw), raw, time.monotonic(), 30)
        lease.settle_delete()
        acker.submit(lease)
    assert await acker.close(time.monotonic() + 10) == 0
    assert len(ended) == 2
    assert {lease.state for lease in ended} <= {State.SETTLED, State.LAPSED}
    assert await aws.total(queue.url) == 0


async def test_slot_and_extensions_are_kept_until_the_delete_is_confirmed(aws: Aws, proxy: Proxy) -> None:
    # Deletes take 5 s, the visibility is 3 s: without extensions while the delete is
    # pending, the message would be handed out again and run twice.
    await asyncio.to_thread(proxy.faults, op_latency={"DeleteMessageBatch": 5})
    queue = await aws.queue(visibility=3)
    runs: Counter[str] = Counter()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int], message: Message) -> None:
        runs[message.message_id] += 1

    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "quick")
    cfg = settings_for(
        proxy.url, queue, visibility_timeout=3, heartbeat_interval=1, max_in_flight=5, batch_size=5
    )
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: len(runs) == 5, timeout=20)
        await asyncio.sleep(1)
        assert consumer.in_flight == 5  # handled, delete pending: still leased
        assert consumer.slots.free == 0  # so nothing more is received meanwhile
        await eventually(lambda: consumer.in_flight == 0, timeout=20)
        assert consumer.counters.overdue == 0
    assert max(runs.values()) == 1
    assert await aws.total(queue.url) == 0


async def test_slow_deletes_slow_receiving(aws: Aws, proxy: Proxy) -> None:
    # Every delete takes 2 s and only 10 messages may be in flight (handled or waiting for
    # their delete): 40 no-op messages need at least four delete rounds.
    await asyncio.to_thread(proxy.faults, op_latency={"DeleteMessageBatch": 2})
    queue = await aws.queue()
    seen = 0
    peak = 0
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        nonlocal seen

        seen += 1

    await aws.send_many(queue.url, [{"n": i} for i in range(40)], "quick")
    cfg = settings_for(proxy.url, queue, max_in_flight=10, pollers=2)
    started = time.monotonic()
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]

        async def done() -> bool:
            nonlocal peak
            peak = max(peak, consumer.in_flight)
            return consumer.counters.succeeded == 40 and consumer.in_flight == 0

        await eventually(done, timeout=60, every=0.05)
    assert peak <= 10
    assert time.monotonic() - started >= 4 * 2 - 0.5


async def test_failed_delete_entries_come_back_after_a_backoff(aws: Aws, proxy: Proxy) -> None:
    await asyncio.to_thread(proxy.faults, batch_entry_fail_rate=1.0)
    queue = await aws.queue()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        pass

    await aws.send(queue.url, {"n": 1}, "quick")
    cfg = settings_for(proxy.url, queue)
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.counters.succeeded == 1, timeout=20)
        before = (await asyncio.to_thread(proxy.counts))["ops"].get("DeleteMessageBatch", 0)
        await asyncio.sleep(1.5)
        during = (await asyncio.to_thread(proxy.counts))["ops"].get("DeleteMessageBatch", 0) - before
        assert during <= 4  # 0.2, 0.4, 0.8 s ... not a retry every few milliseconds
        assert consumer.in_flight == 1  # still leased, still extended
        await asyncio.to_thread(proxy.faults)
        await eventually(lambda: consumer.in_flight == 0, timeout=20)
    assert await aws.total(queue.url) == 0


def _counting(runs: Counter[str]) -> Router:
    """A router whose ``quick`` handler counts its runs per message id."""
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int], message: Message) -> None:
        runs[message.message_id] += 1

    return router


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
async def test_a_message_delivered_again_while_its_delete_is_pending_is_deleted_without_running_again(
    aws: Aws, proxy: Proxy, fifo: bool
) -> None:
    # Every delete entry fails and every extension hangs (an outage of both): the handled
    # message's visibility runs out and SQS hands it out again while its delete is still
    # being retried. The new delivery is deleted with its own receipt handle; the handler
    # does not run twice, and nothing says "delete_failed".
    await outage.begin(proxy)
    queue = await aws.queue(visibility=2, fifo=fifo)
    runs: Counter[str] = Counter()
    await aws.send(queue.url, {"n": 1}, "quick", group="g" if fifo else None)
    cfg = settings_for(proxy.url, queue, **outage.SHORT_LEASES)
    with structlog.testing.capture_logs() as logs:
        async with running(cfg, _counting(runs)) as worker:
            consumer = worker.consumers[0]
            await eventually(lambda: consumer.counters.redelivered_deleted == 1, timeout=30)
            await asyncio.to_thread(proxy.faults)
            await eventually(lambda: consumer.in_flight == 0, timeout=30)
            assert consumer.counters.received == 2  # delivered twice
            assert consumer.counters.delete_failed == 0
    assert list(runs.values()) == [1]  # run once
    assert await aws.total(queue.url) == 0
    events = [e["event"] for e in logs]
    assert events.count("message_redelivered_while_deleting") == 1
    assert "delete_failed" not in events


async def test_a_message_delivered_again_after_its_delete_failed_as_stale_is_deleted_without_running(
    aws: Aws, proxy: Proxy
) -> None:
    # An outage of deletes and extensions outlasts the visibility; the delete reaches the
    # FIFO queue only once the message is visible again, and fails as stale (SQS hands it
    # out again: `delete_failed`). The new delivery comes back to this worker, which knows
    # its handler ran: deleted with its own receipt handle, not run again.
    await outage.begin(proxy)
    queue = await aws.queue(visibility=2, fifo=True)
    runs: Counter[str] = Counter()
    await aws.send(queue.url, {"n": 1}, "quick", group="g")
    cfg = settings_for(proxy.url, queue, **outage.SHORT_LEASES)
    with structlog.testing.capture_logs() as logs:
        async with running(cfg, _counting(runs)) as worker:
            consumer = worker.consumers[0]
            await eventually(lambda: sum(runs.values()) == 1, timeout=20)
            # (Else the new delivery would take over the pending delete: the test above.)
            await outage.deletes_land_after_the_visibility(proxy)
            await eventually(lambda: consumer.counters.delete_failed == 1, timeout=20)
            await asyncio.to_thread(proxy.faults)
            await eventually(lambda: consumer.counters.redelivered_deleted == 1, timeout=30)
            await eventually(lambda: consumer.in_flight == 0, timeout=30)
            assert consumer.counters.received == 2  # delivered twice
    assert list(runs.values()) == [1]  # run once
    assert await aws.total(queue.url) == 0
    taken = [e for e in logs if e["event"] == "message_redelivered_while_deleting"]
    assert [(e["earlier_delete"], e["receive_count"]) for e in taken] == [("failed", 2)]


async def test_a_stop_during_an_outage_ends_at_its_deadline(aws: Aws, proxy: Proxy) -> None:
    queue = await aws.queue()
    router = Router()

    @router.handler("quick")
    async def quick(payload: dict[str, int]) -> None:
        await proxy_blackholed.wait()

    proxy_blackholed = asyncio.Event()
    await aws.send_many(queue.url, [{"n": i} for i in range(5)], "quick")
    cfg = settings_for(proxy.url, queue, shutdown_grace=1, shutdown_flush=2)
    worker_ctx = running(cfg, router)
    worker = await worker_ctx.__aenter__()
    await eventually(lambda: worker.consumers[0].in_flight == 5, timeout=20)
    await asyncio.to_thread(proxy.faults, blackhole_seconds=60)
    proxy_blackholed.set()
    stopped = time.monotonic()
    await worker_ctx.__aexit__(None, None, None)
    assert time.monotonic() - stopped < 1 + 2 + 2  # not 2 minutes of retries per batch
    await asyncio.to_thread(proxy.faults)


def _acker(client: Any, url: str, **kwargs: Any) -> tuple[Acker, QueueCounters, AwsClient]:
    sqs = AwsClient(client)
    counters = QueueCounters()
    return (
        Acker(QueueContext.link(sqs, "q", url, counters, Metrics()), **kwargs, flush_interval=0.05),
        counters,
        sqs,
    )


async def test_deletes_go_ten_per_request_and_nothing_is_left_behind(aws: Aws) -> None:
    queue = await aws.queue()
    leases, held = await leases_for(aws, queue.url, 25)
    acker, _, sqs = _acker(aws.sqs, queue.url)
    acker.start()
    for lease in held:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(leases) == 0, timeout=10)
    assert sqs.calls["delete_message_batch"] == 3  # 10 + 10 + 5
    assert all(lease.state is State.SETTLED for lease in held)
    assert acker.pending == 0
    # Nothing kept per lease once it ended (a long-running worker must not grow).
    assert not acker._open
    assert not acker._retries
    assert not acker._timers
    await asyncio.sleep(0.05)
    assert not acker._inflight
    assert await acker.close(time.monotonic() + 5) == 0
    assert await aws.total(queue.url) == 0


async def test_visibility_changes_are_sent_and_end_the_lease_as_released(aws: Aws) -> None:
    queue = await aws.queue()
    _, (now, later) = await leases_for(aws, queue.url, 2)
    acker, _, sqs = _acker(aws.sqs, queue.url)
    acker.start()
    now.settle_visibility(0)
    later.settle_visibility(600)
    acker.submit(now)
    acker.submit(later)
    await eventually(lambda: not now.live and not later.live, timeout=10)
    assert (now.state, later.state) == (State.RELEASED, State.RELEASED)
    assert sqs.calls["change_message_visibility_batch"] == 1
    assert sqs.calls.get("delete_message_batch", 0) == 0
    await asyncio.sleep(1)  # LocalStack applies visibility a little late
    counts = await aws.counts(queue.url)
    assert (counts["visible"], counts["in_flight"]) == (1, 1)  # made visible / hidden for 10 min
    await acker.close(time.monotonic() + 5)


async def test_a_receipt_that_no_longer_works_ends_the_lease_and_is_counted(aws: Aws) -> None:
    queue = await aws.queue()
    leases = Leases(lambda lease: None)
    bogus = leases.open(
        parse_message({"MessageId": "m-1", "ReceiptHandle": "not-a-receipt", "Body": "{}"}),
        {},
        time.monotonic(),
        30,
    )
    _, (good,) = await leases_for(aws, queue.url, 1)
    acker, counters, _ = _acker(aws.sqs, queue.url)
    acker.start()
    for lease in (bogus, good):
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: not bogus.live and not good.live, timeout=10)
    assert bogus.state is State.LAPSED
    assert good.state is State.SETTLED
    assert counters.delete_failed == 1
    assert acker.pending == 0
    await acker.close(time.monotonic() + 5)


async def test_a_failed_request_is_sent_again_and_a_stuck_one_is_given_up(aws: Aws, proxy: Proxy) -> None:
    queue = await aws.queue()
    _, held = await leases_for(aws, queue.url, 3)
    cfg = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)
    async with get_session().create_client(
        "sqs", endpoint_url=proxy.url, region_name="us-east-1", config=cfg
    ) as client:
        acker, _, sqs = _acker(client, queue.url, call_timeout=1.0)
        # The first delete is held forever by the proxy: the acker gives up after 1 s and
        # sends the entries again in a fresh request.
        await asyncio.to_thread(proxy.faults, blackhole_ops={"DeleteMessageBatch": 1})
        acker.start()
        started = time.monotonic()
        for lease in held:
            lease.settle_delete()
            acker.submit(lease)
        assert acker.pending == 3  # every open lease counts until confirmed
        await eventually(lambda: all(lease.state is State.SETTLED for lease in held), timeout=15)
        assert time.monotonic() - started < 5
        assert sqs.calls["delete_message_batch"] >= 2
        await acker.close(time.monotonic() + 5)
    assert await aws.total(queue.url) == 0


def test_retries_back_off_doubling_from_a_fifth_of_a_second() -> None:
    assert [retry_delay(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_a_receipt_of_a_message_deleted_elsewhere_ends_the_lease_at_once(aws: Aws) -> None:
    """The lease's visibility ran out, another receive got the message and deleted it: SQS
    refuses the old receipt handle for a visibility change (LocalStack:
    InvalidParameterValueException). That ends the lease as lapsed at the first answer;
    it is not retried until the deadline (a request per retry, as long as the worker runs)."""
    queue = await aws.queue()
    _, (stale,) = await leases_for(aws, queue.url, 1, visibility=1)
    await delete_elsewhere(aws, queue.url)
    acker, _, sqs = _acker(aws.sqs, queue.url)
    acker.start()
    stale.settle_visibility(0)
    acker.submit(stale)
    await eventually(lambda: not stale.live, timeout=5)
    assert stale.state is State.LAPSED
    assert sqs.calls["change_message_visibility_batch"] == 1
    assert acker.pending == 0
    await acker.close(time.monotonic() + 5)


# Server-free tests of the acker's own decisions (when a batch goes, what is retried and
# when, what is kept): a fake SQS client that records each call's time and receipts.


class _Sqs:
    """DeleteMessageBatch / ChangeMessageVisibilityBatch that refuse every entry of the first
    ``refuse`` calls (a retryable code), then grant all."""

    def __init__(self, refuse: int = 0) -> None:
        self.calls: list[tuple[float, str, list[str]]] = []
        self.entries: list[dict[str, Any]] = []
        self.refuse = refuse

    def _answer(self, op: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((time.monotonic(), op, [e["ReceiptHandle"] for e in entries]))
        self.entries = entries  # the last request's, whole
        if self.refuse > 0:
            self.refuse -= 1
            busy = {"Code": "InternalError", "Message": "busy", "SenderFault": False}
            return {"Successful": [], "Failed": [{"Id": e["Id"], **busy} for e in entries]}
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        return self._answer("delete", Entries)

    async def change_message_visibility_batch(
        self, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self._answer("change", Entries)


def _running(n: int, first: int = 0) -> list[Lease]:
    leases = Leases(lambda lease: None)
    return [
        leases.open(Message(f"m{i}", "{}", {}, "t", 1, receipt_handle=f"r{i}"), {}, time.monotonic(), 30)
        for i in range(first, first + n)
    ]


async def test_ten_of_a_kind_go_at_once_and_fewer_wait_for_the_flush_interval() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=1.0
    )
    acker.start()
    for lease in _running(10):
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 1, timeout=0.6, every=0.01)
    for lease in _running(10, first=10):
        lease.settle_visibility(0)
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 2, timeout=0.6, every=0.01)
    assert [op for _, op, _ in fake.calls] == ["delete", "change"]
    # One arrives and waits for more; the tenth, 0.1 s later, ends the wait.
    first, *rest = _running(10, first=20)
    first.settle_delete()
    acker.submit(first)
    await asyncio.sleep(0.1)
    tenth = time.monotonic()
    for lease in rest:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 3, timeout=3, every=0.01)
    assert fake.calls[2][0] - tenth < 0.6  # not the interval (1 s) after the first
    # Fewer than ten wait for the flush interval.
    started = time.monotonic()
    for lease in _running(3, first=30):
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 4, timeout=3, every=0.01)
    assert fake.calls[3][0] - started >= 0.95
    assert fake.calls[3][2] == ["r30", "r31", "r32"]
    await acker.close(time.monotonic() + 1)


async def test_the_rest_of_a_full_batch_waits_for_more_to_join_it() -> None:
    """Leases that settle one by one under load (plain functions finishing in their threads)
    go ten to a request: the three left over from thirteen wait for the next seven."""
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=1.0
    )
    acker.start()
    held = _running(20)
    for lease in held[:13]:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 1, timeout=0.5, every=0.01)
    await asyncio.sleep(0.1)
    assert len(fake.calls) == 1  # the three wait
    for lease in held[13:]:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 2, timeout=0.5, every=0.01)
    assert [receipts for _, _, receipts in fake.calls] == [
        [f"r{i}" for i in range(10)],
        [f"r{i}" for i in range(10, 20)],
    ]
    # A rest that nothing joins goes once its oldest has waited the interval.
    rest = _running(13, first=20)
    started = time.monotonic()
    for lease in rest:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 4, timeout=3, every=0.01)
    assert fake.calls[2][0] - started < 0.5
    assert 0.95 <= fake.calls[3][0] - started < 1.5
    assert fake.calls[3][2] == ["r30", "r31", "r32"]
    assert not any(lease.live for lease in held + rest)
    await acker.close(time.monotonic() + 1)


async def test_a_stop_sends_a_rest_that_is_not_due_yet_at_once() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=5.0
    )
    acker.start()
    held = _running(3)
    for lease in held:
        lease.settle_delete()
        acker.submit(lease)
    await asyncio.sleep(0.05)
    stopped = time.monotonic()
    assert await acker.close(stopped + 3) == 0
    assert time.monotonic() - stopped < 1
    assert [receipts for _, _, receipts in fake.calls] == [["r0", "r1", "r2"]]


@pytest.mark.timeout(20)
async def test_ten_changes_waiting_for_their_extensions_leave_the_event_loop_running() -> None:
    """Ten visibility changes, each waiting for an extension still in flight, once made the
    flush loop spin without yielding: the extensions' answers could never arrive."""
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.05
    )
    acker.start()
    held = _running(12)
    sent_at = time.monotonic()
    for lease in held:
        lease.extension_sent()
        lease.settle_visibility(0)
        acker.submit(lease)
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)  # the event loop goes on
        ticks += 1
    assert ticks == 20
    assert not fake.calls  # nothing goes while its extension is out
    for lease in held:
        lease.extension_done(sent_at, True)
    await eventually(lambda: not any(lease.live for lease in held), timeout=2, every=0.01)
    assert [len(receipts) for _, _, receipts in fake.calls] == [10, 2]
    await acker.close(time.monotonic() + 1)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("count", [5, 9])
async def test_a_few_short_of_ten_wait_for_the_interval_with_the_event_loop_running(count: int) -> None:
    """Fewer than ten ready are not ten: miscounting them sent the flush loop round without
    ever waiting (nothing due to send, the loop frozen)."""
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.5
    )
    acker.start()
    held = _running(count)
    started = time.monotonic()
    for lease in held:
        lease.settle_delete()
        acker.submit(lease)
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 20
    assert not fake.calls
    await eventually(lambda: not any(lease.live for lease in held), timeout=3, every=0.01)
    assert fake.calls[0][0] - started >= 0.45
    assert [len(receipts) for _, _, receipts in fake.calls] == [count]
    await acker.close(time.monotonic() + 1)


async def test_a_refused_request_of_a_full_batch_is_sent_again_once_per_lease() -> None:
    """Ten go while three wait; the ten are refused: each goes again once, in one request,
    never twice in a request (an entry both kept in the buffer and put back by its retry)."""
    fake = _Sqs(refuse=1)
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=1.0
    )
    acker.start()
    held = _running(13)
    for lease in held:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: not any(lease.live for lease in held[:10]), timeout=3, every=0.01)
    await eventually(lambda: not any(lease.live for lease in held), timeout=3, every=0.01)
    sent = [receipts for _, _, receipts in fake.calls]
    assert sent[0] == [f"r{i}" for i in range(10)]  # refused
    # The ten back at 0.2 s join the three waiting: ten go, the rest of three when due.
    assert sent[1:] == [["r10", "r11", "r12", *(f"r{i}" for i in range(7))], ["r7", "r8", "r9"]]
    assert not acker._inflight  # finished requests leave
    await acker.close(time.monotonic() + 1)


async def test_each_retry_of_an_entry_waits_twice_as_long_as_the_one_before() -> None:
    fake = _Sqs(refuse=3)
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    acker.submit(lease)
    await eventually(lambda: not lease.live, timeout=5, every=0.01)
    times = [at for at, _, _ in fake.calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert expected - 0.02 <= gap <= expected + 0.15
    await acker.close(time.monotonic() + 1)


async def test_a_visibility_change_waiting_for_an_extension_goes_once_it_is_back() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.05
    )
    acker.start()
    lease, other = _running(2)
    lease.extension_sent()
    sent_at = time.monotonic()
    for each in (lease, other):
        each.settle_visibility(0)
        acker.submit(each)
    await eventually(lambda: not other.live, timeout=2, every=0.01)  # the other one goes
    await asyncio.sleep(0.3)
    assert [receipts for _, _, receipts in fake.calls] == [["r1"]]
    # (its visibility would be overwritten by the extension's answer)
    lease.extension_done(sent_at, True)
    await eventually(lambda: not lease.live, timeout=2, every=0.01)  # no second submit needed
    assert [(op, receipts) for _, op, receipts in fake.calls] == [("change", ["r1"]), ("change", ["r0"])]
    assert lease.state is State.RELEASED
    await acker.close(time.monotonic() + 1)


async def test_a_refused_entry_is_sent_again_a_fifth_of_a_second_later_and_then_forgotten() -> None:
    fake = _Sqs(refuse=1)
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    acker.submit(lease)
    await eventually(lambda: not lease.live, timeout=3, every=0.01)
    (first, _, _), (second, _, _) = fake.calls
    assert 0.18 <= second - first <= 0.37  # retry_delay(1): the first retry's backoff (not 0.4)
    assert lease.state is State.SETTLED
    # Nothing kept for it (read before `pending`, which also sweeps ended leases).
    assert (acker._open, acker._retries, acker._timers) == ({}, {}, {})
    await acker.close(time.monotonic() + 1)


async def test_a_stop_sends_a_retry_waiting_for_its_backoff_at_once() -> None:
    fake = _Sqs(refuse=3)  # backoffs 0.2, 0.4, then 0.8 s
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    acker.submit(lease)
    await eventually(lambda: len(fake.calls) == 3, timeout=3, every=0.01)
    stopped = time.monotonic()
    assert await acker.close(stopped + 2) == 0
    assert len(fake.calls) == 4
    assert fake.calls[3][0] - stopped < 0.6  # not after the 0.8 s backoff: there is no later
    assert lease.state is State.SETTLED


async def test_deletes_and_visibility_changes_submitted_together_go_in_requests_of_their_own() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.05
    )
    acker.start()
    held = _running(6)
    for i, lease in enumerate(held):  # delete, change, delete, change, ...
        if i % 2:
            lease.settle_visibility(0)
        else:
            lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: not any(lease.live for lease in held), timeout=2, every=0.01)
    assert sorted((op, receipts) for _, op, receipts in fake.calls) == [
        ("change", ["r1", "r3", "r5"]),
        ("delete", ["r0", "r2", "r4"]),
    ]
    assert [lease.state for lease in held] == [State.SETTLED, State.RELEASED] * 3
    await acker.close(time.monotonic() + 1)


async def test_a_visibility_change_that_gets_no_answer_is_given_up_and_sent_again() -> None:
    class _Silent(_Sqs):
        async def change_message_visibility_batch(
            self, QueueUrl: str, Entries: list[dict[str, Any]]
        ) -> dict[str, Any]:
            if not self.calls:
                self.calls.append((time.monotonic(), "change", []))
                await asyncio.sleep(60)  # a black hole
            return self._answer("change", Entries)

    fake = _Silent()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()),
        flush_interval=0.01,
        call_timeout=0.3,
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_visibility(0)
    acker.submit(lease)
    await eventually(lambda: not lease.live, timeout=3, every=0.01)
    assert len(fake.calls) == 2
    assert 0.45 <= fake.calls[1][0] - fake.calls[0][0] < 1.5  # its 0.3 s limit, then the 0.2 s backoff
    await acker.close(time.monotonic() + 1)


async def test_a_visibility_change_asks_for_the_leases_own_timeout() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    backoff, now = _running(2)
    backoff.settle_visibility(7)
    now.settle_visibility(0)
    for lease in (backoff, now):
        acker.submit(lease)
    await eventually(lambda: not backoff.live and not now.live, timeout=2, every=0.01)
    assert [(e["Id"], e["ReceiptHandle"], e["VisibilityTimeout"]) for e in fake.entries] == [
        ("0", "r0", 7),
        ("1", "r1", 0),
    ]
    await acker.close(time.monotonic() + 1)


async def test_each_entry_of_a_partly_failed_batch_gets_its_own_outcome() -> None:
    class _Mixed(_Sqs):
        """The first call: entry 1 refused (retryable), the receipts of entries 2 and 3 no
        longer work."""

        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            answer = self._answer("delete", Entries)
            if len(self.calls) == 1:
                busy = {"Id": "1", "Code": "InternalError", "Message": "busy", "SenderFault": False}
                stale = [
                    {"Id": i, "Code": "ReceiptHandleIsInvalid", "Message": "old", "SenderFault": True}
                    for i in ("2", "3")
                ]
                answer = {"Successful": [{"Id": "0"}], "Failed": [busy, *stale]}
            return answer

    fake = _Mixed()
    counters = QueueCounters()
    registry = CollectorRegistry()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", counters, Metrics(registry)), flush_interval=0.01
    )
    acker.start()
    held = _running(4)
    with structlog.testing.capture_logs() as logs:
        for lease in held:
            lease.settle_delete()
            acker.submit(lease)
        await eventually(lambda: not any(lease.live for lease in held), timeout=3, every=0.01)
    # Nothing kept for any of them (read before `pending`, which sweeps ended leases).
    assert (acker._open, acker._retries, acker._timers, acker.deliveries._deleting) == ({}, {}, {}, {})
    assert [receipts for _, _, receipts in fake.calls] == [["r0", "r1", "r2", "r3"], ["r1"]]
    assert [lease.state for lease in held] == [State.SETTLED, State.SETTLED, State.LAPSED, State.LAPSED]
    assert counters.delete_failed == 2
    assert registry.get_sample_value("sqs_worker_delete_failed_total", {"queue": "q"}) == 2
    events = [(e["event"], e.get("message_id"), e.get("code")) for e in logs]
    assert ("ack_entry_retry", "m1", "InternalError") in events
    assert ("delete_failed", "m2", "ReceiptHandleIsInvalid") in events
    failed = [e for e in logs if e["event"] == "delete_failed"]
    assert [e["message_id"] for e in failed] == ["m2", "m3"]  # once each
    assert all(e["redelivery_expected"] is True and e["log_level"] == "warning" for e in failed)
    assert acker.pending == 0
    await acker.close(time.monotonic() + 1)


async def test_a_request_that_raises_frees_its_call_and_is_sent_again() -> None:
    class _Failing(_Sqs):
        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            if not self.calls:
                self.calls.append((time.monotonic(), "delete", []))
                raise ConnectionResetError("reset by peer")
            return self._answer("delete", Entries)

    fake = _Failing()
    # One call at a time: the retry can only go if the failed call gave its place back.
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()),
        flush_interval=0.01,
        max_calls=1,
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    with structlog.testing.capture_logs() as logs:
        acker.submit(lease)
        await eventually(lambda: not lease.live, timeout=3, every=0.01)
    assert len(fake.calls) == 2
    (retry,) = [e for e in logs if e["event"] == "ack_batch_retry"]
    assert (retry["operation"], retry["entries"]) == ("delete", 1)
    assert "reset by peer" in retry["detail"]
    assert lease.state is State.SETTLED
    await acker.close(time.monotonic() + 1)


async def test_a_stop_waits_for_a_request_in_flight_until_its_deadline() -> None:
    class _Slow(_Sqs):
        def __init__(self, delay: float) -> None:
            super().__init__()
            self.delay = delay

        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            await asyncio.sleep(self.delay)
            return self._answer("delete", Entries)

    # Answered before the deadline: confirmed, nothing left.
    acker = Acker(
        QueueContext.link(AwsClient(_Slow(0.6)), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    acker.submit(lease)
    await asyncio.sleep(0.05)  # sent, not answered
    stopped = time.monotonic()
    assert await acker.close(stopped + 2) == 0
    assert 0.3 <= time.monotonic() - stopped < 1.5  # waited for the answer (0.6 s after sending)
    assert lease.state is State.SETTLED
    # Not answered by the deadline: the request is cancelled and its lease left as it was.
    acker = Acker(
        QueueContext.link(AwsClient(_Slow(60)), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.settle_delete()
    acker.submit(lease)
    await asyncio.sleep(0.05)
    stopped = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        assert await acker.close(stopped + 0.3) == 1
    assert 0.25 <= time.monotonic() - stopped < 1.0
    assert lease.live
    assert lease.sending is False
    (incomplete,) = [e for e in logs if e["event"] == "ack_flush_incomplete"]
    assert (incomplete["queue"], incomplete["unconfirmed"]) == ("q", 1)


async def test_a_stop_with_nothing_pending_returns_at_once() -> None:
    acker = Acker(
        QueueContext.link(AwsClient(_Sqs()), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    stopped = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        assert await acker.close(stopped + 5) == 0
    assert time.monotonic() - stopped < 0.5
    assert not [e for e in logs if e["event"] == "ack_flush_incomplete"]


async def test_a_stop_ends_the_flush_loop_and_is_not_held_up_by_a_full_set_of_calls() -> None:
    class _Hanging(_Sqs):
        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.calls.append((time.monotonic(), "delete", [e["ReceiptHandle"] for e in Entries]))
            await asyncio.sleep(60)
            return {}

    fake = _Hanging()
    # One call at a time, and it hangs: the second lease waits for the call's place.
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()),
        flush_interval=0.01,
        max_calls=1,
    )
    acker.start()
    first, second = _running(2)
    first.settle_delete()
    acker.submit(first)
    await eventually(lambda: len(fake.calls) == 1, timeout=2, every=0.01)
    second.settle_delete()
    acker.submit(second)
    await asyncio.sleep(0.05)
    stopped = time.monotonic()
    assert await acker.close(stopped + 0.3) == 2
    assert 0.25 <= time.monotonic() - stopped < 0.8  # the deadline, not a second more
    assert acker._task is not None
    assert acker._task.done()  # the flush loop ended with the stop
    assert [receipts for _, _, receipts in fake.calls] == [["r0"]]


async def test_a_stop_sends_a_change_as_soon_as_its_extension_is_back() -> None:
    fake = _Sqs()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    (lease,) = _running(1)
    lease.extension_sent()
    sent_at = time.monotonic()
    lease.settle_visibility(0)
    acker.submit(lease)
    await asyncio.sleep(0.05)

    async def extension_answered() -> None:
        await asyncio.sleep(0.1)
        lease.extension_done(sent_at, True)

    answer = asyncio.create_task(extension_answered())
    stopped = time.monotonic()
    assert await acker.close(stopped + 5) == 0
    assert time.monotonic() - stopped < 0.5  # looked again within a few ms of the answer
    assert lease.state is State.RELEASED
    await answer


async def test_a_stop_sends_what_was_waiting_for_a_call_when_one_frees_up() -> None:
    class _Held(_Sqs):
        """Answers once ``go`` is set."""

        def __init__(self) -> None:
            super().__init__()
            self.go = asyncio.Event()

        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            await self.go.wait()
            return self._answer("delete", Entries)

    fake = _Held()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()),
        flush_interval=0.01,
        max_calls=1,
    )
    acker.start()
    first, second = _running(2)
    first.settle_delete()
    acker.submit(first)
    await eventually(lambda: acker._calls.locked(), timeout=2, every=0.005)  # its call is out
    second.settle_delete()
    acker.submit(second)
    await eventually(lambda: not acker._deletes, timeout=2, every=0.005)
    # The flush loop holds the second, waiting for the call's place (the first is unanswered).
    assert acker._calls.locked()
    assert not fake.calls

    async def answer_soon() -> None:
        await asyncio.sleep(0.1)
        fake.go.set()

    answering = asyncio.create_task(answer_soon())
    stopped = time.monotonic()
    assert await acker.close(stopped + 3) == 0  # not left behind by the stop
    assert time.monotonic() - stopped < 2.5
    assert [receipts for _, _, receipts in fake.calls] == [["r0"], ["r1"]]
    assert (first.state, second.state) == (State.SETTLED, State.SETTLED)
    await answering


async def test_a_new_delivery_takes_over_a_pending_delete_and_the_old_lease_ends_quietly() -> None:
    class _Slow(_Sqs):
        """The first delete is answered once ``answer`` is set, with the receipt stale."""

        def __init__(self) -> None:
            super().__init__()
            self.answer = asyncio.Event()

        async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            answer = self._answer("delete", Entries)
            if len(self.calls) == 1:
                await self.answer.wait()
                stale = {"Code": "ReceiptHandleIsInvalid", "Message": "old", "SenderFault": True}
                return {"Successful": [], "Failed": [{"Id": e["Id"], **stale} for e in Entries]}
            return answer

    fake = _Slow()
    counters = QueueCounters()
    registry = CollectorRegistry()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", counters, Metrics(registry)), flush_interval=0.01
    )
    acker.start()
    ended: list[Lease] = []
    leases = Leases(ended.append)
    message = Message("m0", "{}", {}, "t", 1, receipt_handle="r-old")
    old = leases.open(message, {}, time.monotonic() - 31, 30)  # (its answer comes late too)
    other = leases.open(Message("m1", "{}", {}, "t", 1, receipt_handle="r1"), {}, time.monotonic(), 30)
    other.settle_visibility(5)  # a pending change is never taken over: a retry runs again
    acker.submit(other)
    old.settle_delete()
    acker.submit(old)
    await eventually(lambda: old.sending and other.state is State.RELEASED, timeout=3, every=0.01)
    assert ended == [other]  # its change went through; the delete is still out

    again = Message("m0", "{}", {}, "t", 2, receipt_handle="r-new")
    new = leases.open(again, {}, time.monotonic(), 30)
    assert acker.deliveries.pending_delete(old) is None  # itself
    assert (
        acker.deliveries.pending_delete(
            leases.open(Message("m1", "{}", {}, "t", 2, receipt_handle="r1b"), {}, 0, 30)
        )
        is None
    )
    assert acker.deliveries.pending_delete(new) is old
    acker.supersede(old)
    assert id(old) not in acker._open  # forgotten: nothing of it is kept
    assert "m0" not in acker.deliveries._deleting
    assert old.state is State.SUPERSEDED
    assert ended == [other, old]
    assert acker.deliveries.pending_delete(new) is None  # once

    with structlog.testing.capture_logs() as logs:
        new.settle_delete()
        acker.submit(new)
        fake.answer.set()  # the old receipt's answer: stale, and nobody cares any more
        await eventually(lambda: new.state is State.SETTLED, timeout=3, every=0.01)
        await asyncio.sleep(0.3)  # past the first retry's backoff: nothing is sent again
    deletes = [receipts for _, op, receipts in fake.calls if op == "delete"]
    assert deletes == [["r-old"], ["r-new"]]
    assert old.state is State.SUPERSEDED
    assert counters.delete_failed == 0
    assert counters.lapsed == 0
    assert registry.get_sample_value("sqs_worker_delete_failed_total", {"queue": "q"}) in (None, 0)
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == []
    assert acker.deliveries._deleting == {}
    assert (
        list(acker.deliveries._unsure) == []
    )  # a superseded lease's late answer: the new delivery's delete landed
    await acker.close(time.monotonic() + 1)


class _Stale(_Sqs):
    """Deletes whose entries all fail with a stale receipt handle."""

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self._answer("delete", Entries)
        stale = {"Code": "ReceiptHandleIsInvalid", "Message": "old", "SenderFault": True}
        return {"Successful": [], "Failed": [{"Id": e["Id"], **stale} for e in Entries]}


def _delivery(leases: Leases, n: int, granted_at: float, message_id: str = "m0") -> Lease:
    return leases.open(Message(message_id, "{}", {}, "t", n, receipt_handle=f"r-{n}"), {}, granted_at, 30)


@pytest.mark.parametrize("why", ["confirmed_late", "failed"])
async def test_a_delete_confirmed_after_the_visibility_ran_out_or_failed_stale_is_remembered_once(
    why: str,
) -> None:
    # AWS: a delete with a receipt handle older than the latest delivery's succeeds without
    # deleting. So a delete confirmed once the lease could have expired may not have landed,
    # and one refused as stale did not: a new delivery of either is answered once.
    fake = _Sqs() if why == "confirmed_late" else _Stale()
    acker = Acker(
        QueueContext.link(AwsClient(fake), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    leases = Leases(lambda lease: None)
    now = time.monotonic()
    late = _delivery(leases, 1, now - 31)  # its visibility ran out a second ago
    timely = _delivery(leases, 1, now, message_id="m1")
    overdue = _delivery(leases, 1, now, message_id="m2")
    overdue.overdue = True  # the heartbeat saw it lapse once: whatever was granted after
    for lease in (late, timely, overdue):
        lease.settle_delete()
        acker.submit(lease)
    retry = _delivery(leases, 1, now - 31, message_id="m5")  # a failure: it must run again
    retry.settle_visibility(0)
    acker.submit(retry)
    await eventually(lambda: not any(x.live for x in (late, timely, overdue, retry)), timeout=3, every=0.01)
    assert acker.deliveries.unsure_delete(_delivery(leases, 2, now, message_id="m2")) == (why, None)
    assert acker.deliveries.unsure_delete(_delivery(leases, 2, now, message_id="m5")) is None
    assert acker.deliveries.pending_delete(_delivery(leases, 2, now)) is None  # not pending any more
    if why == "confirmed_late":
        assert (
            acker.deliveries.unsure_delete(_delivery(leases, 2, now, message_id="m1")) is None
        )  # in time: landed
    assert acker.deliveries.unsure_delete(_delivery(leases, 2, now)) == (why, None)
    assert acker.deliveries.unsure_delete(_delivery(leases, 3, now)) is None  # once
    assert acker.deliveries.unsure_delete(_delivery(leases, 2, now, message_id="m9")) is None
    await acker.close(time.monotonic() + 1)


class _Clock:
    """``time`` for one module, ``ahead`` seconds in the future."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


async def test_what_may_not_have_landed_is_forgotten_after_its_window_and_beyond_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.runtime import acker as module

    monkeypatch.setattr(module, "UNSURE_MAX", 3)
    clock = _Clock()
    monkeypatch.setattr(module, "time", clock)  # the acker's clock only
    acker = Acker(
        QueueContext.link(AwsClient(_Sqs()), "q", "url", QueueCounters(), Metrics()), flush_interval=0.01
    )
    acker.start()
    leases = Leases(lambda lease: None)
    ids = [f"m{i}" for i in range(5)]
    late = [_delivery(leases, 1, time.monotonic() - 31, message_id=i) for i in ids]
    for lease in late:
        lease.settle_delete()
        acker.submit(lease)
    await eventually(lambda: not any(lease.live for lease in late), timeout=3, every=0.01)
    assert list(acker.deliveries._unsure) == ids[2:]  # the cap: the oldest went first
    again = _delivery(leases, 2, time.monotonic() - 31, message_id="m3")
    again.settle_delete()
    acker.submit(again)
    await eventually(lambda: not again.live, timeout=3, every=0.01)
    assert list(acker.deliveries._unsure) == ["m2", "m4", "m3"]  # remembered again: the newest now, none lost
    assert acker.deliveries.unsure_delete(_delivery(leases, 3, time.monotonic(), message_id="m0")) is None
    assert acker.deliveries.unsure_delete(_delivery(leases, 3, time.monotonic(), message_id="m2")) == (
        "confirmed_late",
        None,
    )
    clock.ahead = module.UNSURE_FOR + 1
    assert (
        acker.deliveries.unsure_delete(_delivery(leases, 3, time.monotonic(), message_id="m4")) is None
    )  # too old
    assert list(acker.deliveries._unsure) == []  # pruned on the way: nothing kept past the window
    await acker.close(time.monotonic() + 1)
