"""The settler's take-over of a redelivered message whose delete is pending or may not have
landed (server-free: the outage that causes it is in test_acker's LocalStack test)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from tests.conftest import eventually
from worker import Message
from worker.aws import AwsClient
from worker.messages.payloads import PayloadPointer
from worker.messages.routing import Registry
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.context import QueueContext
from worker.runtime.counters import QueueCounters
from worker.runtime.lease import Lease, Leases, State
from worker.runtime.settler import Settler
from worker.runtime.target import QueueTarget
from worker.settings import QueueSettings


class _Sqs:
    """Deletes that answer only once ``hold`` is cleared (an outage), then succeed."""

    def __init__(self) -> None:
        self.deletes: list[list[str]] = []
        self.hold = True
        self.stale = 0  # the next ``stale`` requests fail as stale receipt handles

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.deletes.append([e["ReceiptHandle"] for e in Entries])
        if self.stale:
            self.stale -= 1
            old = {"Code": "ReceiptHandleIsInvalid", "Message": "old", "SenderFault": True}
            return {"Successful": [], "Failed": [{"Id": e["Id"], **old} for e in Entries]}
        if self.hold:
            busy = {"Code": "InternalError", "Message": "busy", "SenderFault": False}
            return {"Successful": [], "Failed": [{"Id": e["Id"], **busy} for e in Entries]}
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


class _World:
    """A settler over ``fake`` whose leases' ends do what the consumer does with a body:
    ``discarded`` lists (the lease's end state, the message whose body would go)."""

    def __init__(self, fake: _Sqs) -> None:
        self.counters = QueueCounters()
        self.registry = CollectorRegistry()
        metrics = Metrics(self.registry)
        self.acker = Acker(
            QueueContext.link(AwsClient(fake), "q", "url", self.counters, metrics), flush_interval=0.01
        )
        target = QueueTarget("q", "q", "url", False, 3, None)
        self.settler = Settler(_context(self.counters, metrics), target, self.acker, None, _label)  # type: ignore[arg-type]
        self.discarded: list[tuple[State, Message]] = []
        self.leases = Leases(self._ended)
        self.acker.start()

    def _ended(self, lease: Lease) -> None:
        message, lease.discard = lease.discard, None
        if message is not None:
            self.discarded.append((lease.state, message))


class _Payloads:
    """What the settler asks a payload store: may this handled message's body go?"""

    @staticmethod
    def should_discard(message: Message) -> bool:
        return message.payload is not None and message.payload.sole_reader


def _context(counters: QueueCounters, metrics: Metrics) -> QueueContext:
    ctx = QueueContext.standalone("q", QueueSettings(handlers=["<testing>"]), Registry({}))
    ctx.counters, ctx.metrics, ctx.payloads = counters, metrics, _Payloads()  # type: ignore[assignment]
    return ctx


def _label(message: Message) -> str:
    return "t"


async def test_a_redelivery_of_a_handled_offloaded_message_is_deleted_and_its_body_discarded_once() -> None:
    fake = _Sqs()
    w = _World(fake)
    pointer = PayloadPointer("bucket", "key", 10, sole_reader=True)
    first = w.leases.open(Message("m0", "{}", {}, "t", 1, payload=pointer, receipt_handle="r-1"), {}, 0, 30)
    assert not w.settler.already_handled(first)  # nothing pending for it
    w.settler.settle_success(first, first.message)
    await eventually(lambda: len(fake.deletes) >= 1, timeout=3, every=0.01)

    again = w.leases.open(Message("m0", "{}", {}, "t", 2, payload=pointer, receipt_handle="r-2"), {}, 0, 30)
    with structlog.testing.capture_logs() as logs:
        assert w.settler.already_handled(again)
    assert first.state is State.SUPERSEDED
    assert again.state is State.SETTLING
    assert again.target is None  # a delete
    assert [e["event"] for e in logs] == ["message_redelivered_while_deleting"]
    assert (logs[0]["receive_count"], logs[0]["earlier_delete"]) == (2, "pending")
    assert w.counters.redelivered_deleted == 1
    assert w.registry.get_sample_value("sqs_worker_redelivered_while_deleting_total", {"queue": "q"}) == 1
    assert w.discarded == []  # the body waits for the delete that will land
    fake.hold = False
    await eventually(lambda: not again.live, timeout=3, every=0.01)
    # Once, after the new delivery's delete (the earlier one's Message, moved over).
    assert w.discarded == [(State.SETTLED, first.message)]
    assert fake.deletes[-1] == ["r-2"]
    assert not any("r-1" in sent for sent in fake.deletes[fake.deletes.index(["r-2"]) :])
    await w.acker.close(time.monotonic() + 1)


async def test_each_redelivery_of_a_plain_message_is_taken_over_counted_and_logged_with_its_ids() -> None:
    fake = _Sqs()
    counters = QueueCounters()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    acker = Acker(QueueContext.link(AwsClient(fake), "q.fifo", "url", counters, metrics), flush_interval=0.01)
    target = QueueTarget("orders", "q.fifo", "url", True, 3, None)
    settler = Settler(_context(counters, metrics), target, acker, None, _label)  # type: ignore[arg-type]
    leases = Leases(lambda lease: None)
    acker.start()

    def delivery(n: int) -> Lease:
        message = Message("m0", "{}", {}, "t", n, group_id="g-7", receipt_handle=f"r-{n}")
        return leases.open(message, {}, 0, 30)

    first = delivery(1)
    settler.settle_success(first, first.message)  # no offloaded body: nothing to discard
    await eventually(lambda: len(fake.deletes) >= 1, timeout=3, every=0.01)
    second, third = delivery(2), delivery(3)
    with structlog.testing.capture_logs() as logs:
        assert settler.already_handled(second)
        assert settler.already_handled(third)  # the second's delete is pending too
    assert (first.state, second.state, third.state) == (State.SUPERSEDED, State.SUPERSEDED, State.SETTLING)
    assert [(e["queue"], e["message_id"], e["group_id"], e["receive_count"]) for e in logs] == [
        ("orders", "m0", "g-7", 2),
        ("orders", "m0", "g-7", 3),
    ]
    assert counters.redelivered_deleted == 2
    assert registry.get_sample_value("sqs_worker_redelivered_while_deleting_total", {"queue": "orders"}) == 2
    assert all(lease.discard is None for lease in (first, second, third))
    fake.hold = False
    await eventually(lambda: not third.live, timeout=3, every=0.01)
    assert third.state is State.SETTLED
    assert fake.deletes[-1] == ["r-3"]
    await acker.close(time.monotonic() + 1)


async def test_a_redelivery_after_a_stale_delete_is_deleted_without_running_and_its_body_goes_then() -> None:
    fake = _Sqs()
    fake.hold, fake.stale = False, 1
    w = _World(fake)
    pointer = PayloadPointer("bucket", "key", 10, sole_reader=True)
    first = w.leases.open(
        Message("m0", "{}", {}, "t", 1, payload=pointer, receipt_handle="r-1"), {}, time.monotonic(), 30
    )
    w.settler.settle_success(first, first.message)
    await eventually(lambda: not first.live, timeout=3, every=0.01)
    assert first.state is State.LAPSED
    assert w.discarded == [(State.LAPSED, first.message)]  # (the consumer keeps a lapsed one's body)
    assert w.counters.delete_failed == 1

    other = w.leases.open(Message("m1", "{}", {}, "t", 1, receipt_handle="r-9"), {}, time.monotonic(), 30)
    assert not w.settler.already_handled(other)  # never handled here: it runs
    again = w.leases.open(
        Message("m0", "{}", {}, "t", 2, payload=pointer, receipt_handle="r-2"), {}, time.monotonic(), 30
    )
    with structlog.testing.capture_logs() as logs:
        assert w.settler.already_handled(again)
    assert [(e["event"], e["earlier_delete"], e["receive_count"]) for e in logs] == [
        ("message_redelivered_while_deleting", "failed", 2)
    ]
    assert w.counters.redelivered_deleted == 1
    assert w.registry.get_sample_value("sqs_worker_redelivered_while_deleting_total", {"queue": "q"}) == 1
    await eventually(lambda: not again.live, timeout=3, every=0.01)
    assert again.state is State.SETTLED
    assert fake.deletes[-1] == ["r-2"]
    assert w.discarded[-1] == (State.SETTLED, first.message)  # now the body goes (as first resolved it)
    third = w.leases.open(Message("m0", "{}", {}, "t", 3, receipt_handle="r-3"), {}, time.monotonic(), 30)
    assert not w.settler.already_handled(third)  # answered once
    await w.acker.close(time.monotonic() + 1)


async def test_a_redelivery_of_a_dead_lettered_offloaded_message_never_takes_its_body() -> None:
    # The worker moved the message to its DLQ, then its delete failed as stale: the
    # redelivery is deleted without running, and the object stays (the DLQ copy points at it).
    fake = _Sqs()
    fake.hold, fake.stale = False, 1
    w = _World(fake)
    pointer = PayloadPointer("bucket", "key", 10, sole_reader=True)
    message = Message("m0", "{}", {}, "t", 1, payload=pointer, receipt_handle="r-1")
    first = w.leases.open(message, {}, time.monotonic(), 30)
    w.settler.settle(first, None)  # (what dead_letter does once the copy is in the DLQ)
    await eventually(lambda: not first.live, timeout=3, every=0.01)
    assert first.state is State.LAPSED
    again = w.leases.open(
        Message("m0", "{}", {}, "t", 2, payload=pointer, receipt_handle="r-2"), {}, time.monotonic(), 30
    )
    assert w.settler.already_handled(again)
    await eventually(lambda: not again.live, timeout=3, every=0.01)
    assert again.state is State.SETTLED
    assert w.discarded == []  # no body went, neither with the first lease nor the redelivery
    await w.acker.close(time.monotonic() + 1)
