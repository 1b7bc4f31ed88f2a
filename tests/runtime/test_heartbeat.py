"""The heartbeat against LocalStack and the fault proxy: slow handlers run exactly once,
extension keeps up with 1,000 leases at 300 ms per call and through a black-holed call,
and never re-hides a message that was meanwhile given a retry delay."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from benchmarks.harness import Proxy
from tests.conftest import Aws, eventually, running, settings_for
from tests.support.receipts import delete_elsewhere, leases_for
from worker import Message, Retry, Router
from worker.aws import AwsClient
from worker.messages.envelope import parse_message
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.context import QueueContext
from worker.runtime.counters import QueueCounters
from worker.runtime.heartbeat import Heartbeat, call_timeout, next_slowest
from worker.runtime.lease import Lease, Leases, State
from worker.runtime.supervisor import Supervisor


async def test_handler_slower_than_visibility_timeout_runs_exactly_once(aws: Aws) -> None:
    queue = await aws.queue(visibility=2)
    calls: list[str] = []
    router = Router()

    @router.handler("slow")
    async def slow(payload: dict[str, int], message: Message) -> None:
        calls.append(message.message_id)
        await asyncio.sleep(7)  # 3.5x the visibility timeout

    settings = settings_for(aws.endpoint, queue, visibility_timeout=2, heartbeat_interval=0.8, pollers=3)
    message_id = await aws.send(queue.url, {"n": 1}, "slow")
    async with running(settings, router) as worker:
        stats = worker.consumers[0].counters
        await eventually(lambda: stats.succeeded == 1, timeout=20)
        await eventually(lambda: worker.consumers[0].acker.pending == 0)
        await asyncio.sleep(0.5)
    assert calls == [message_id]
    assert stats.extended >= 5  # every 0.8 s over 7 s, batched per queue
    assert stats.received == 1
    assert await aws.total(queue.url) == 0  # deleted


async def test_extensions_are_batched_per_queue(aws: Aws) -> None:
    queue = await aws.queue(visibility=2)
    router = Router()
    done = asyncio.Event()

    @router.handler("slow")
    async def slow(payload: dict[str, int]) -> None:
        await done.wait()

    settings = settings_for(aws.endpoint, queue, visibility_timeout=3, heartbeat_interval=1)
    await aws.send_many(queue.url, [{"n": i} for i in range(20)], "slow")
    async with running(settings, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.in_flight == 20)
        before = consumer.heartbeat._sqs.calls["change_message_visibility_batch"]
        await asyncio.sleep(3.2)
        worker_calls = consumer.heartbeat._sqs.calls["change_message_visibility_batch"]
        extended = consumer.counters.extended
        done.set()
        await eventually(lambda: consumer.counters.succeeded == 20)
    # 20 messages, ~3 ticks: ~6 batch calls, not ~60 single ones.
    assert extended >= 40
    assert worker_calls - before <= extended / 10 + 3


async def _hold_many(
    aws: Aws, proxy: Proxy, n: int, hold: float, **settings: Any
) -> tuple[Counter[str], Supervisor]:
    """``n`` messages held by a handler for ``hold`` seconds behind the fault proxy; the
    ids each handler call saw."""
    queue = await aws.queue(visibility=int(settings.get("visibility_timeout", 30)))
    runs: Counter[str] = Counter()
    release = asyncio.Event()
    router = Router()

    @router.handler("hold")
    async def hold_it(payload: dict[str, int], message: Message) -> None:
        runs[message.message_id] += 1
        await release.wait()

    await aws.send_many(queue.url, [{"n": i} for i in range(n)], "hold")
    cfg = settings_for(proxy.url, queue, max_in_flight=n, pollers=4, **settings)
    async with running(cfg, router) as worker:
        consumer = worker.consumers[0]
        await eventually(lambda: consumer.in_flight == n, timeout=60)
        await asyncio.sleep(hold)
        release.set()
        await eventually(lambda: consumer.counters.succeeded == n, timeout=60)
        await eventually(lambda: consumer.in_flight == 0, timeout=30)
    return runs, worker


async def test_keeps_1000_leases_at_300ms_per_call(aws: Aws, proxy: Proxy) -> None:
    # 100 calls per interval of 3.3 s at 0.3 s each: more than one connection can carry,
    # less than the 32 calls in flight the heartbeat may use.
    await asyncio.to_thread(proxy.faults, op_latency={"ChangeMessageVisibilityBatch": 0.3})
    runs, worker = await _hold_many(aws, proxy, 1000, 12, visibility_timeout=10, heartbeat_calls=32)
    counters = worker.consumers[0].counters
    assert counters.overdue == 0
    assert counters.lapsed == 0
    assert len(runs) == 1000
    assert max(runs.values()) == 1  # no message ran twice
    assert counters.extended >= 2 * 1000  # every lease was extended (12 s / 3.3 s)


async def test_a_black_holed_extension_call_is_given_up_and_sent_again_in_time(
    aws: Aws, proxy: Proxy
) -> None:
    await asyncio.to_thread(proxy.faults, blackhole_ops={"ChangeMessageVisibilityBatch": 1})
    runs, worker = await _hold_many(aws, proxy, 10, 10, visibility_timeout=4, heartbeat_interval=1)
    counters = worker.consumers[0].counters
    counts = await asyncio.to_thread(proxy.counts)
    assert (
        counts["outcomes"].get("blackholed_op", 0)
        + counts.get("open", {}).get("ChangeMessageVisibilityBatch", 0)
        >= 1
    )
    assert counters.overdue == 0
    assert max(runs.values()) == 1


async def test_a_message_given_a_retry_delay_is_not_hidden_again_by_a_late_extension(
    aws: Aws, proxy: Proxy
) -> None:
    # Each extension takes 1.5 s. The handler fails while one is in flight and asks to be
    # retried at once: the visibility change must wait for the extension to come back and
    # then win, instead of the extension re-hiding the message for a whole visibility.
    await asyncio.to_thread(proxy.faults, op_latency={"ChangeMessageVisibilityBatch": 1.5})
    queue = await aws.queue(visibility=8)
    attempts: list[float] = []
    failed_at: list[float] = []
    router = Router()

    @router.handler("once")
    async def once(payload: dict[str, int], message: Message) -> None:
        attempts.append(time.monotonic())
        if message.receive_count == 1:
            await asyncio.sleep(1.5)  # the extension sent at ~1 s is in flight now
            failed_at.append(time.monotonic())
            raise Retry(0)

    await aws.send(queue.url, {"n": 1}, "once")
    cfg = settings_for(proxy.url, queue, visibility_timeout=8, heartbeat_interval=1)
    async with running(cfg, router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=30)
    assert len(attempts) == 2
    # Visible again once the change went through (~1.5 s later), not after 8 s.
    assert attempts[1] - failed_at[0] < 5, attempts[1] - failed_at[0]


async def test_an_extension_refused_for_a_message_deleted_elsewhere_stops_extending(aws: Aws) -> None:
    """The lease's visibility ran out and another consumer received and deleted the
    message: the extension is refused (LocalStack: InvalidParameterValueException). The
    lease is marked lost and not extended again (no request per tick for the rest of its
    handler's run)."""
    queue = await aws.queue()
    leases, (stale,) = await leases_for(aws, queue.url, 1, visibility=1)
    await delete_elsewhere(aws, queue.url)
    sqs = AwsClient(aws.sqs)
    heartbeat = Heartbeat(QueueContext.link(sqs, "q", queue.url, QueueCounters(), Metrics()), leases, 0.0, 1)
    await heartbeat.extend_due()
    await eventually(lambda: not stale.extending, timeout=5)
    assert stale.lost
    await heartbeat.extend_due()
    await asyncio.sleep(0.2)
    assert sqs.calls["change_message_visibility_batch"] == 1


async def test_an_extension_that_loses_the_race_to_its_delete_is_no_news(aws: Aws) -> None:
    """The handler finished and the delete reached SQS before an extension of the same
    lease: the extension is refused (the message is gone). That is the usual race, not a
    lapse: the lease stays until the delete's own answer ends it, and nothing is logged."""
    queue = await aws.queue()
    leases, (lease,) = await leases_for(aws, queue.url, 1)
    lease.settle_delete()
    await aws.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=lease.receipt_handle)
    sqs = AwsClient(aws.sqs)
    heartbeat = Heartbeat(QueueContext.link(sqs, "q", queue.url, QueueCounters(), Metrics()), leases, 0.0, 1)
    with structlog.testing.capture_logs() as logs:
        await heartbeat.extend_due()
        await eventually(lambda: not lease.extending, timeout=5)
    assert sqs.calls["change_message_visibility_batch"] == 1
    assert lease.live  # the delete's answer ends it
    assert lease.lost  # not extended again
    assert not [e for e in logs if e["event"] == "visibility_extend_failed"]


def test_a_call_gets_half_the_time_left_while_two_calls_fit_else_all_of_it() -> None:
    assert call_timeout(4.0, 0.3) == 2.0  # room for a second call if this one is lost
    assert call_timeout(4.0, 1.0) == 2.0
    assert call_timeout(4.0, 1.2) == 4.0  # a second call could not arrive in time: wait
    assert call_timeout(0.2, 0.0) == 0.5  # never below MIN_CALL_TIMEOUT
    assert call_timeout(60.0, 0.0) == 10.0  # nor above MAX_CALL_TIMEOUT
    assert call_timeout(60.0, 20.0) == 10.0


def test_the_slowest_call_is_remembered_at_once_and_forgotten_slowly() -> None:
    assert next_slowest(2.0, 0.5) == 2.0  # a slower call: at once
    assert next_slowest(0.1, 1.0) == pytest.approx(0.95)  # a faster one: 5% less per call
    slowest = 1.0
    for _ in range(14):
        slowest = next_slowest(0.01, slowest)
    assert 0.45 < slowest < 0.5  # about half after 14 fast calls
    assert next_slowest(0.6, 1.0) == pytest.approx(0.95)  # not below the decayed value


async def test_calls_slower_than_half_the_time_left_are_waited_for_once_seen(aws: Aws, proxy: Proxy) -> None:
    """Every extension call takes 2.5 s, more than half of the 4 s a lease has left when
    it is due (visibility 6 s, extended every 2 s). The first lease's call is cut at half
    (2 s), too early, and its last chance comes too late: it lapses. From then on the
    heartbeat knows how slow calls are and waits for them: the second lease, due later,
    is extended and kept. (Cutting every call at half made every lease lapse; at a slight
    overload in the benchmark, 1,110 of 1,000 leases' extensions.)"""
    queue = await aws.queue()
    await aws.send_many(queue.url, [{"n": 1}, {"n": 2}], "t")
    leases = Leases(lambda ended: None)

    async def lease_one() -> Lease:
        while True:
            r = await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=6, WaitTimeSeconds=1)
            for raw in r.get("Messages") or []:
                return leases.open(parse_message(raw), raw, time.monotonic(), 6)

    await asyncio.to_thread(proxy.faults, op_latency={"ChangeMessageVisibilityBatch": 2.5})
    cfg = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)
    async with get_session().create_client(
        "sqs", endpoint_url=proxy.url, region_name="us-east-1", config=cfg
    ) as client:
        heartbeat = Heartbeat(
            QueueContext.link(AwsClient(client), "q", queue.url, QueueCounters(), Metrics()), leases, 2.0, 4
        )
        first = await lease_one()
        heartbeat.start()
        await asyncio.sleep(3)  # its call (sent at 2 s or a tick later) times out by 4.5 s
        second = await lease_one()
        received = second.granted_at
        await asyncio.sleep(7)
        await heartbeat.stop()
    assert first.overdue  # cut at half before anything was known: lapsed
    assert not second.overdue
    assert second.granted_at > received  # extended
    assert heartbeat.slowest >= 2.0


def _leases_at(now: float, expiries: list[float], group: str | None = None) -> tuple[Leases, list[Lease]]:
    """Leases (no SQS: ``due`` only reads the clock) granted so that each expires at
    ``now + expiry``, with 10 s visibility."""
    leases = Leases(lambda lease: None)
    out = []
    for i, expiry in enumerate(expiries):
        message = Message(f"m{i}", "{}", {}, "t", 1, group_id=group, receipt_handle=f"r{i}")
        out.append(leases.open(message, {}, now + expiry - 10, 10))
    return leases, out


def test_due_lists_the_leases_to_extend_most_urgent_first_and_counts_each_lapse_once() -> None:
    now = 1000.0
    # Expiring in 3, -1 (lapsed), 9 (just granted: not due at a 2 s interval), -2.504 and
    # exactly now (not lapsed yet).
    leases, (soon, lapsed, fresh, older, edge) = _leases_at(now, [3.0, -1.0, 9.0, -2.504, 0.0], group="g")
    fresh.granted_at = now - 1
    registry = CollectorRegistry()
    counters = QueueCounters()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(None), "q", "url", counters, Metrics(registry)), leases, 2.0, 1
    )
    with structlog.testing.capture_logs() as logs:
        assert heartbeat.due(now) == [older, lapsed, edge, soon]
        assert edge.overdue is False
        assert heartbeat.due(now + 0.5) == [older, lapsed, edge, soon]  # seen again: no new lapse
    assert counters.overdue == 3  # edge lapsed at now + 0.5
    assert (lapsed.overdue, older.overdue, soon.overdue, fresh.overdue) == (True, True, False, False)
    assert registry.get_sample_value("sqs_worker_lease_overdue_total", {"queue": "q"}) == 3
    overdue = [e for e in logs if e["event"] == "lease_overdue"]
    assert [(e["message_id"], e["late"]) for e in overdue] == [
        ("m1", 1.0),
        ("m3", 2.5),
        ("m4", 0.5),
    ]  # to 10 ms
    assert all(e["queue"] == "q" and e["group_id"] == "g" and e["state"] == "running" for e in overdue)
    assert all(e["log_level"] == "warning" for e in overdue)


def test_a_lease_on_its_way_out_or_extending_is_not_due() -> None:
    now = 1000.0
    leases, (extending, lost, changing, deleting) = _leases_at(now, [1.0, 1.0, 1.0, 2.0])
    extending.extension_sent()
    lost.lost = True
    changing.state, changing.target = State.SETTLING, 30  # its visibility change is on its way
    changing.sending = True  # (it sets the time itself; one still waiting for a call is due)
    deleting.state = State.SETTLING  # a delete not yet confirmed: kept alive until it is
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(None), "q", "url", QueueCounters(), Metrics(CollectorRegistry())),
        leases,
        2.0,
        1,
    )
    assert heartbeat.due(now) == [deleting]


class _HeldCalls:
    """A ChangeMessageVisibilityBatch that records each call's receipts and answers once
    ``answer`` is set (counting the calls cancelled before that)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.answer = asyncio.Event()
        self.cancelled = 0

    async def change_message_visibility_batch(
        self, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self.calls.append([e["ReceiptHandle"] for e in Entries])
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


async def test_leases_that_end_while_waiting_for_a_free_call_are_not_extended_and_the_rest_are() -> None:
    now = time.monotonic()
    # 40 leases, most urgent first: x (10), a (10), b (10), c (10); one call at a time.
    leases, out = _leases_at(now, [1.0 + i / 100 for i in range(40)])
    x, a, b, c = out[:10], out[10:20], out[20:30], out[30:]
    for lease in a + b + c:
        lease.granted_at = now  # not due yet
    held = _HeldCalls()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(held), "q", "url", QueueCounters(), Metrics(CollectorRegistry())),
        leases,
        2.0,
        1,
    )
    await heartbeat.extend_due()  # x's call goes out and holds the only call
    for lease in a + b + c:
        lease.granted_at = now - 9  # due now
    second = asyncio.create_task(heartbeat.extend_due())
    await asyncio.sleep(0.05)  # a's chunk waits for the call x holds
    for lease in b:
        lease.state = State.SETTLED  # settled meanwhile
    held.answer.set()
    await asyncio.wait_for(second, 5)
    await eventually(lambda: len(held.calls) >= 3)
    await asyncio.sleep(0.05)  # a fourth call (b's) would have gone out by now
    assert held.calls == [[lease.receipt_handle for lease in chunk] for chunk in (x, a, c)]
    assert not heartbeat._inflight  # nothing kept per call once it ended (a long-running worker)


async def test_stop_cancels_the_calls_in_flight_and_frees_their_leases() -> None:
    leases, (lease,) = _leases_at(time.monotonic(), [1.0])
    held = _HeldCalls()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(held), "q", "url", QueueCounters(), Metrics(CollectorRegistry())),
        leases,
        2.0,
        1,
    )
    heartbeat.start()
    await eventually(lambda: len(held.calls) == 1)
    assert lease.extending
    await heartbeat.stop()
    assert held.cancelled == 1
    assert not lease.extending


async def test_a_bug_in_a_tick_is_logged_and_the_heartbeat_beats_on() -> None:
    class _BrokenOnce(Leases):
        def __init__(self) -> None:
            super().__init__(lambda lease: None)
            self.looks = 0

        def live(self) -> list[Lease]:
            self.looks += 1
            if self.looks == 1:
                raise RuntimeError("bookkeeping bug")
            return super().live()

    leases = _BrokenOnce()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(None), "q", "url", QueueCounters(), Metrics(CollectorRegistry())),
        leases,
        0.4,
        1,
    )
    with structlog.testing.capture_logs() as logs:
        heartbeat.start()
        await eventually(lambda: leases.looks >= 3)  # ticks every 0.1 s
        await heartbeat.stop()
    errors = [e for e in logs if e["event"] == "visibility_extend_error"]
    assert len(errors) == 1
    assert errors[0]["queue"] == "q"
    assert errors[0]["log_level"] == "error"
    assert "bookkeeping bug" in errors[0]["error"]


async def test_a_failed_extension_call_is_logged_once_and_its_leases_wait_for_the_next_tick() -> None:
    class _Refusing:
        calls = 0

        async def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
            self.calls += 1
            raise ClientError({"Error": {"Code": "InternalError", "Message": "try again"}}, "Cmvb")

    now = time.monotonic()
    leases, out = _leases_at(now, [1.5 + i / 100 for i in range(12)])
    expiries = [lease.expires_at for lease in out]
    counters = QueueCounters()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(_Refusing()), "q", "url", counters, Metrics(CollectorRegistry())),
        leases,
        2.0,
        2,
    )
    with structlog.testing.capture_logs() as logs:
        await heartbeat.extend_due()
        await eventually(lambda: not any(lease.extending for lease in out))
    retries = [e for e in logs if e["event"] == "visibility_extend_retry"]
    assert [(e["queue"], e["entries"], e["error"], e["log_level"]) for e in retries] == [
        ("q", 10, "InternalError", "warning"),
        ("q", 2, "InternalError", "warning"),
    ]
    assert "try again" in retries[0]["detail"]
    assert 1.2 < retries[0]["left"] <= 1.5  # the most urgent lease's time left, to 10 ms
    assert [lease.expires_at for lease in out] == expiries  # nothing granted
    assert counters.extended == 0
    assert heartbeat.due(time.monotonic()) == out  # due again at the next tick


async def test_each_refused_entry_is_judged_on_its_own() -> None:
    now = time.monotonic()
    leases, out = _leases_at(now, [1.0 + i / 100 for i in range(5)], group="g")
    settled, deleting, _, _, changing = out  # the other two are running
    deleting.state = State.SETTLING  # its delete is on its way

    class _Refusing:
        async def change_message_visibility_batch(
            self, Entries: list[dict[str, Any]], **params: Any
        ) -> dict[str, Any]:
            settled.state = State.SETTLED  # settled while the call was in flight
            changing.state, changing.target = State.SETTLING, 30  # given a retry delay meanwhile
            stale = {"Code": "ReceiptHandleIsInvalid", "Message": "stale receipt", "SenderFault": True}
            return {
                "Successful": [],
                "Failed": [
                    {"Id": "0", **stale},
                    {"Id": "1", **stale},
                    {"Id": "2", **stale},
                    {"Id": "3", "Code": "InternalError", "Message": "busy", "SenderFault": False},
                    {"Id": "4", **stale},
                ],
            }

    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(_Refusing()), "q", "url", QueueCounters(), Metrics(CollectorRegistry())),
        leases,
        0.0,
        1,
    )
    with structlog.testing.capture_logs() as logs:
        await heartbeat.extend_due()
        await eventually(lambda: not any(lease.extending for lease in out))
    assert [lease.lost for lease in out] == [False, True, True, False, True]
    failed = [e for e in logs if e["event"] == "visibility_extend_failed"]
    assert [(e["message_id"], e["code"], e["detail"]) for e in failed] == [
        ("m2", "ReceiptHandleIsInvalid", "stale receipt"),  # a running handler's: news
        ("m3", "InternalError", "busy"),
        ("m4", "ReceiptHandleIsInvalid", "stale receipt"),
    ]
    assert all(e["queue"] == "q" and e["group_id"] == "g" and e["log_level"] == "warning" for e in failed)


async def test_a_granted_extension_moves_the_expiry_counts_and_times_the_call() -> None:
    class _Slow:
        async def change_message_visibility_batch(
            self, Entries: list[dict[str, Any]], **params: Any
        ) -> dict[str, Any]:
            await asyncio.sleep(0.05)
            return {"Successful": [{"Id": e["Id"]} for e in Entries[1:]], "Failed": [self.refused]}

        refused = {"Id": "0", "Code": "InternalError", "Message": "busy", "SenderFault": False}

    now = time.monotonic()
    leases, out = _leases_at(now, [1.0, 1.1, 1.2])
    registry = CollectorRegistry()
    counters = QueueCounters()
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(_Slow()), "q", "url", counters, Metrics(registry)), leases, 2.0, 1
    )
    heartbeat.slowest = 0.0
    await heartbeat.extend_due()
    await eventually(lambda: not any(lease.extending for lease in out))
    # Entry 0 was refused (busy: tried again at the next tick); the other two got 10 s more.
    assert out[0].expires_at == pytest.approx(now + 1.0)
    assert all(lease.expires_at > now + 9.5 for lease in out[1:])
    assert counters.extended == 2
    assert registry.get_sample_value("sqs_worker_visibility_extensions_total", {"queue": "q"}) == 2
    assert 0.04 < heartbeat.slowest < 1.0  # the call's own time, the clock's reading minus its start


class _Held:
    """The real client, each change_message_visibility_batch held ``hold`` seconds first."""

    def __init__(self, sqs: Any, hold: float) -> None:
        self._sqs = sqs
        self._hold = hold
        self.calls = 0

    async def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self._hold)
        result: dict[str, Any] = await self._sqs.change_message_visibility_batch(**params)
        return result


async def test_an_extension_that_waited_for_a_free_call_never_overwrites_a_change_sent_meanwhile(
    aws: Aws,
) -> None:
    # Every heartbeat call busy (one allowed, held 1.5 s): the eleventh due lease waits for
    # it. Meanwhile its message is given a 2 s retry delay and SQS confirms the change. The
    # lease is asked again as the extension is built, so nothing re-hides the message.
    queue = await aws.queue()
    leases, out = await leases_for(aws, queue.url, 11, visibility=30)
    counters, metrics = QueueCounters(), Metrics(CollectorRegistry())
    held = _Held(aws.sqs, 1.5)
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(held), "q", queue.url, counters, metrics), leases, 0.0, 1
    )
    acker = Acker(
        QueueContext.link(AwsClient(aws.sqs), "q", queue.url, counters, metrics), flush_interval=0.01
    )
    acker.start()
    last = max(out, key=lambda lease: lease.expires_at)  # the last due: the one that waits
    extending = asyncio.create_task(heartbeat.extend_due())
    await eventually(lambda: held.calls == 1, every=0.01)
    assert not last.extending
    last.settle_visibility(2)
    acker.submit(last)
    await eventually(lambda: not last.live, timeout=5, every=0.01)
    assert last.state is State.RELEASED
    await extending
    await eventually(lambda: not any(lease.extending for lease in out), timeout=5)
    assert held.calls == 1  # no extension was sent for it after its change
    await asyncio.sleep(2 + 1.5)  # its 2 s delay (LocalStack runs ~0.7 s late)
    r = await aws.sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=2, VisibilityTimeout=30)
    assert [m["MessageId"] for m in r.get("Messages") or []] == [last.message.message_id]
    await heartbeat.stop()
    await acker.close(time.monotonic() + 1)


async def test_a_lease_whose_change_waits_for_a_free_call_is_still_extended(aws: Aws) -> None:
    # Visibility changes slow (one call at a time, 2.5 s each) and leases of 4 s: the
    # eleventh change waits 2.5 s for its call and lands at 5 s. It is extended meanwhile, so
    # its visibility does not run out before its change (a 20 s retry delay) lands.
    queue = await aws.queue(visibility=4)
    leases, out = await leases_for(aws, queue.url, 11, visibility=4)
    counters, metrics = QueueCounters(), Metrics(CollectorRegistry())
    heartbeat = Heartbeat(
        QueueContext.link(AwsClient(aws.sqs), "q", queue.url, counters, metrics), leases, 1.0, 4
    )
    held = _Held(aws.sqs, 2.5)
    acker = Acker(
        QueueContext.link(AwsClient(held), "q", queue.url, counters, metrics),
        flush_interval=0.01,
        max_calls=1,
    )
    heartbeat.start()
    acker.start()
    for lease in out:
        lease.settle_visibility(20)
        acker.submit(lease)
    await eventually(lambda: not any(lease.live for lease in out), timeout=15)
    assert [lease.state for lease in out] == [State.RELEASED] * 11
    assert counters.overdue == 0  # no visibility ran out before its change landed
    await asyncio.sleep(2)
    assert (await aws.counts(queue.url))["visible"] == 0  # all eleven wait out their 20 s
    await heartbeat.stop()
    await acker.close(time.monotonic() + 1)
