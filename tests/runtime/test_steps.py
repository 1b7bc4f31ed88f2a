"""The step chain (worker/runtime/steps/) and the processor's one rule from what happened to an
outcome, server-free: messages as ReceiveMessage returns them, leases of their own, handlers
that do what each rule needs."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import BaseModel

from worker import CallNext, IdempotencyRecord, Message, PermanentFailure, Retry, Router, replayed
from worker.messages.envelope import parse_message
from worker.messages.payloads import PayloadPointer
from worker.messages.routing import Registry, Route
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, Leases
from worker.runtime.processor import Processor
from worker.runtime.rules import SKIPPED, Action
from worker.runtime.steps.middleware import takes_batches
from worker.settings import QueueSettings
from worker.testing import sqs_message


class Row(BaseModel):
    n: int


def _processor(router: Router, *, max_processing_time: float = 30, payloads: Any = None) -> Processor:
    settings = QueueSettings(
        handlers=["<testing>"], max_processing_time=max_processing_time, retry_backoff=[5], retry_jitter=0
    )
    ctx = QueueContext.standalone("q", settings, Registry.of(router), max_receive_count=3)
    ctx.payloads = payloads
    return Processor(ctx)


def _lease(body: Any, message_type: str | None = "row", **attributes: str) -> Lease:
    raw = sqs_message(body, type=message_type, attributes=attributes or None)
    return Leases(lambda lease: None).open(parse_message(raw), raw, time.monotonic(), 30)


def _offloaded(message_type: str = "row") -> Lease:
    pointer = '["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k"}]'
    return _lease(pointer, message_type, ExtendedPayloadSize="9")


class _Store:
    """A payload store whose fetch does what ``answer`` says."""

    def __init__(self, answer: Callable[[Message], Awaitable[Message | None]]) -> None:
        self._answer = answer

    async def resolve(self, message: Message, rules: object = None) -> Message | None:
        return await self._answer(message)


def _route(processor: Processor, message_type: str) -> Route:
    route = processor.registry.get(message_type)
    assert route is not None
    return route


# -- the offloaded body ---------------------------------------------------------------------
async def test_s3_that_cannot_be_reached_makes_the_message_wait_without_an_attempt() -> None:
    router, runs = Router(), []

    @router.handler("row")
    async def row(payload: Row) -> None:
        runs.append(payload.n)

    async def unreachable(message: Message) -> Message | None:
        raise ConnectionError("connection refused")

    processor = _processor(router, payloads=_Store(unreachable))
    lease = _offloaded()
    with structlog.testing.capture_logs() as logs:
        [item] = await processor.run(None, [lease])
    assert item.outcome is not None
    assert (item.outcome.kind, item.outcome.visibility) == ("waiting", 1)
    assert item.decision is not None
    assert (item.decision.action, item.decision.delay) == (Action.WAIT, 1)
    assert (lease.failures, lease.waits, runs) == (0, 1, [])
    [line] = [e for e in logs if e["event"] == "message_waiting"]
    assert (line["dependency"], line["retry_in"]) == ("s3", 1)
    assert "ConnectionError: connection refused" in line["detail"]
    [again] = await processor.run(None, [lease])  # still down: waits longer
    assert again.outcome is not None
    assert again.outcome.visibility == 2
    assert processor.ctx.counters.waiting == 2
    assert processor.ctx.counters.failed == 0


async def test_an_offloaded_body_that_is_gone_is_rejected_or_skipped_and_never_runs() -> None:
    router, runs = Router(), []

    @router.handler("row")
    async def row(payload: Row) -> None:
        runs.append(payload.n)

    async def gone(message: Message) -> Message | None:
        raise PermanentFailure("offloaded payload s3://b/k does not exist")

    async def skipped(message: Message) -> Message | None:
        return None

    [rejected] = await _processor(router, payloads=_Store(gone)).run(None, [_offloaded()])
    assert rejected.outcome is not None
    assert (rejected.outcome.kind, rejected.outcome.reason) == (
        "rejected",
        "offloaded payload s3://b/k does not exist",
    )
    [skip] = await _processor(router, payloads=_Store(skipped)).run(None, [_offloaded()])
    assert skip.outcome is SKIPPED
    assert skip.decision is not None
    assert skip.decision.action is Action.DELETE
    [none] = await _processor(router).run(None, [_offloaded()])  # no payload store at all
    assert none.outcome is not None
    assert none.outcome.kind == "rejected"
    assert "no payload store" in none.outcome.reason
    assert runs == []


async def test_a_fetched_body_is_what_the_handler_sees() -> None:
    router, runs = Router(), []

    @router.handler("row")
    async def row(payload: Row, message: Message) -> None:
        runs.append((payload.n, message.payload))

    pointer = PayloadPointer("b", "k", 9)

    async def fetched(message: Message) -> Message | None:
        import dataclasses

        return dataclasses.replace(message, body='{"n": 42}', payload=pointer)

    [item] = await _processor(router, payloads=_Store(fetched)).run(None, [_offloaded()])
    assert item.outcome is not None
    assert item.outcome.kind == "succeeded"
    assert runs == [(42, pointer)]
    assert item.message.body == '{"n": 42}'  # the settler decides the body's fate from this


# -- the route and the body -------------------------------------------------------------------
async def test_unknown_and_missing_types_and_bad_bodies_are_rejected_with_their_reason() -> None:
    router = Router()

    @router.handler("row")
    async def row(payload: Row) -> None:
        pass

    processor = _processor(router)
    reasons = []
    for lease in (_lease({"n": 1}, "mystery"), _lease({"n": 1}, None), _lease({"x": 1}), _lease("{")):
        [item] = await processor.run(None, [lease])
        assert item.outcome is not None
        assert item.outcome.kind == "rejected"
        assert item.decision is not None
        assert item.decision.action is Action.DEAD_LETTER
        reasons.append(item.outcome.reason)
    assert reasons[:2] == ["unknown message type 'mystery'", "message has no type"]
    assert reasons[2].startswith("invalid payload for Row: n: Field required")
    assert reasons[3].startswith("invalid payload for Row:")


async def test_a_rejected_message_is_not_run_or_logged_again_when_it_comes_back() -> None:
    router, runs = Router(), []

    @router.handler("row")
    async def row(payload: Row) -> None:
        runs.append(payload.n)
        raise PermanentFailure("never")

    processor = _processor(router)
    lease = _lease({"n": 1})
    await processor.run(None, [lease])
    again = Leases(lambda lease: None).open(lease.message, lease.raw, time.monotonic(), 30)
    with structlog.testing.capture_logs() as logs:
        [item] = await processor.run(None, [again])
    assert item.outcome is not None
    assert (item.outcome.kind, item.outcome.reason) == ("rejected", "never")
    assert runs == [1]
    assert logs == []


# -- a batch: one call, an outcome per message -------------------------------------------------
async def test_a_batch_call_judges_each_member_on_its_own() -> None:
    router, calls = Router(), []

    @router.batch_handler("row", max_size=10)
    async def rows(payloads: list[Row], messages: list[Message]) -> dict[str, BaseException] | None:
        calls.append([p.n for p in payloads])
        return {messages[1].message_id: Retry(9, "later"), messages[2].message_id: PermanentFailure("no")}

    processor = _processor(router)
    leases = [_lease({"n": i}) for i in range(3)] + [_lease("{"), _lease({"n": 5}, "other")]
    items = await processor.run(_route(processor, "row"), leases)
    assert calls == [[0, 1, 2]]  # the bad body and the stranger are left out of the call
    kinds = [
        (i.outcome.kind if i.outcome else None, i.decision.action if i.decision else None) for i in items
    ]
    assert kinds == [
        ("succeeded", Action.DELETE),
        ("failed", Action.RETRY),
        ("rejected", Action.DEAD_LETTER),
        ("rejected", Action.DEAD_LETTER),
        ("rejected", Action.DEAD_LETTER),
    ]
    assert items[1].decision is not None
    assert items[1].decision.delay == 9
    assert [lease.failures for lease in leases] == [0, 1, 1, 1, 1]  # only their own failures


async def test_a_raising_batch_fails_every_member_with_one_traceback() -> None:
    router = Router()

    @router.batch_handler("row", max_size=10)
    async def rows(payloads: list[Row]) -> None:
        raise RuntimeError("all of them")

    processor = _processor(router)
    leases = [_lease({"n": i}) for i in range(3)]
    with structlog.testing.capture_logs() as logs:
        items = await processor.run(_route(processor, "row"), leases)
    assert [i.outcome.kind if i.outcome else None for i in items] == ["failed"] * 3
    failed = [e for e in logs if e["event"] == "message_failed"]
    assert len(failed) == 3
    assert [bool(e.get("exc_info")) for e in failed] == [True, False, False]
    assert all(e["retry_in"] == 5 and e["attempt"] == 1 for e in failed)
    assert [lease.failures for lease in leases] == [1, 1, 1]


async def test_a_batch_handlers_own_cancelled_error_is_a_failure_not_a_shutdown() -> None:
    router = Router()

    @router.batch_handler("row", max_size=10)
    async def rows(payloads: list[Row]) -> None:
        raise asyncio.CancelledError()

    processor = _processor(router)
    items = await processor.run(_route(processor, "row"), [_lease({"n": 1}), _lease({"n": 2})])
    assert [i.outcome.reason if i.outcome else None for i in items] == [
        "CancelledError raised by the handler"
    ] * 2
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


# -- attempts -----------------------------------------------------------------------------------
async def test_a_run_in_place_sees_its_attempt_number_and_a_wait_spends_none() -> None:
    router, seen = Router(), []

    @router.handler("row")
    async def row(payload: Row, message: Message) -> None:
        seen.append(message.receive_count)
        if len(seen) < 3:
            raise RuntimeError("again")

    processor = _processor(router)
    lease = _lease({"n": 1})
    outcomes = [(await processor.run(None, [lease]))[0] for _ in range(3)]
    assert seen == [1, 2, 3]
    assert [o.attempt for o in outcomes] == [1, 2, 3]
    assert lease.failures == 2
    assert lease.runs == 3


# -- the deadline ---------------------------------------------------------------------------------
async def test_a_deadline_that_passes_while_s3_is_asked_is_a_wait_not_a_failure() -> None:
    router = Router()

    @router.handler("row")
    async def row(payload: Row) -> None:
        pass

    async def hanging(message: Message) -> Message | None:
        await asyncio.sleep(3600)
        return message

    processor = _processor(router, max_processing_time=0.1, payloads=_Store(hanging))
    [item] = await processor.run(None, [_offloaded()])
    assert item.outcome is not None
    assert item.outcome.kind == "waiting"
    assert "no answer within max_processing_time" in item.outcome.reason
    assert item.lease.failures == 0


async def test_a_deadline_over_middleware_fails_the_message_as_a_timeout() -> None:
    router = Router()

    @router.middleware
    async def slow(message: Message, call_next: CallNext) -> Any:
        await asyncio.sleep(3600)
        return await call_next()

    @router.handler("row")
    async def row(payload: Row) -> None:
        pass

    [item] = await _processor(router, max_processing_time=0.1).run(None, [_lease({"n": 1})])
    assert item.outcome is not None
    assert (item.outcome.kind, item.outcome.reason) == (
        "failed",
        "ran longer than max_processing_time (0.1s)",
    )


async def test_a_thread_past_its_deadline_keeps_running_and_its_result_counts() -> None:
    router, threads = Router(), []

    @router.handler("row")
    def row(payload: Row) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.4)

    processor = _processor(router, max_processing_time=0.1)
    with structlog.testing.capture_logs() as logs:
        [item] = await processor.run(None, [_lease({"n": 1})])
    assert item.outcome is not None
    assert item.outcome.kind == "succeeded"
    assert len(threads) == 1
    assert [e["event"] for e in logs if e["event"] == "message_overdue"] == ["message_overdue"]


async def test_a_shutdown_cancel_releases_and_a_cancel_without_it_fails() -> None:
    router = Router()
    started = asyncio.Event()

    @router.handler("row")
    async def row(payload: Row) -> None:
        started.set()
        await asyncio.sleep(3600)

    for shutdown in (True, False):
        processor = _processor(router)
        started.clear()
        task = asyncio.create_task(processor.run(None, [_lease({"n": 1})]))
        await started.wait()
        if shutdown:
            processor.ctx.halt.end_grace()
        task.cancel()
        [item] = await task
        assert item.decision is not None
        assert item.decision.action is (Action.RELEASE if shutdown else Action.RETRY)


async def test_a_thread_past_the_grace_keeps_its_lease_until_the_final_deadline() -> None:
    router = Router()
    release = threading.Event()

    @router.handler("row")
    def row(payload: Row) -> None:
        release.wait(5)

    processor = _processor(router)
    task = asyncio.create_task(processor.run(None, [_lease({"n": 1})]))
    await asyncio.sleep(0.05)
    processor.ctx.halt.end_grace()
    task.cancel()
    await asyncio.sleep(0.1)
    assert not task.done()  # the thread runs: its message stays leased
    processor.ctx.halt.end()
    [item] = await task
    release.set()
    assert item.decision is not None
    assert item.decision.action is Action.KEEP  # abandoned: left to lapse, never released


# -- middleware -------------------------------------------------------------------------------------
async def test_middleware_wraps_the_calls_of_its_kind() -> None:
    router = Router()
    seen: list[tuple[Any, ...]] = []

    @router.middleware
    async def single(message: Message, call_next: CallNext) -> Any:
        seen.append(("single", message.type))
        return await call_next()

    @router.middleware
    async def batch(messages: list[Message], call_next: CallNext) -> Any:
        result = await call_next()
        seen.append(("batch", len(messages), result))
        return result

    @router.handler("one")
    async def one(payload: Row) -> None:
        pass

    @router.batch_handler("many", max_size=10)
    async def many(payloads: list[Row]) -> None:
        return None

    processor = _processor(router)
    one_items = await processor.run(None, [_lease({"n": 1}, "one")])
    many_items = await processor.run(
        _route(processor, "many"), [_lease({"n": 1}, "many"), _lease({"n": 2}, "many")]
    )
    assert seen == [("single", "one"), ("batch", 2, None)]
    assert [i.outcome.kind if i.outcome else None for i in one_items + many_items] == ["succeeded"] * 3
    assert takes_batches(batch)
    assert not takes_batches(single)
    assert not takes_batches(len)  # no signature to read: a single-message middleware


# -- the idempotency claim ------------------------------------------------------------------------
def _idempotent_processor(router: Router, store: Any) -> Processor:
    from worker.runtime.idempotency import Idempotency

    processor = _processor(router)
    processor.ctx.idempotency = Idempotency(store, "q", 3600, 15, max_receive_count=3)
    return Processor(processor.ctx)


async def test_an_idempotent_handler_runs_once_per_key_and_its_copy_is_replayed() -> None:
    from worker.idempotency.store import MemoryStore

    router, runs, seen = Router(), [], []

    @router.middleware
    async def watch(message: Message, call_next: CallNext) -> Any:
        result = await call_next()
        seen.append((replayed(), result))
        return result

    @router.handler("pay", idempotent=True)
    async def pay(payload: Row, record: IdempotencyRecord) -> dict[str, int]:
        runs.append(record.key)
        return {"paid": payload.n}

    store = MemoryStore()
    processor = _idempotent_processor(router, store)
    first = _lease({"n": 7}, "pay", **{"idempotency-key": "k1"})
    copy = _lease({"n": 7}, "pay", **{"idempotency-key": "k1"})
    [one] = await processor.run(None, [first])
    [two] = await processor.run(None, [copy])
    assert one.outcome is not None
    assert one.outcome.kind == "succeeded"
    assert two.outcome is not None
    assert two.outcome.reason.startswith("replayed")
    assert runs == ["q:k1"]
    assert seen == [(False, {"paid": 7}), (True, {"paid": 7})]  # the copy sees the stored result


async def test_a_failed_idempotent_run_releases_its_claim_so_the_next_attempt_runs() -> None:
    from worker.idempotency.store import MemoryStore

    router, runs = Router(), []

    @router.handler("pay", idempotent=True)
    async def pay(payload: Row) -> None:
        runs.append(payload.n)
        if len(runs) == 1:
            raise RuntimeError("declined")

    store = MemoryStore()
    processor = _idempotent_processor(router, store)
    lease = _lease({"n": 1}, "pay", **{"idempotency-key": "k2"})
    [failed] = await processor.run(None, [lease])
    assert failed.outcome is not None
    assert failed.outcome.kind == "failed"
    assert store.records == {}  # released
    [ok] = await processor.run(None, [lease])
    assert ok.outcome is not None
    assert ok.outcome.kind == "succeeded"
    assert runs == [1, 1]


async def test_a_store_that_cannot_be_reached_makes_the_claim_wait_without_an_attempt() -> None:
    from worker.idempotency.store import MemoryStore

    router, runs = Router(), []

    @router.handler("pay", idempotent=True)
    async def pay(payload: Row) -> None:
        runs.append(payload.n)

    class _Down(MemoryStore):
        async def claim(self, record: Any, now: float) -> Any:
            raise ConnectionError("no route to the store")

    processor = _idempotent_processor(router, _Down())
    lease = _lease({"n": 1}, "pay")
    with structlog.testing.capture_logs() as logs:
        [item] = await processor.run(None, [lease])
    assert item.outcome is not None
    assert item.outcome.kind == "waiting"
    assert item.decision is not None
    assert item.decision.action is Action.WAIT
    assert (lease.failures, runs) == (0, [])
    [line] = [e for e in logs if e["event"] == "message_waiting"]
    assert line["dependency"] == "idempotency store"
    assert line["detail"] == "ConnectionError: no route to the store"


# -- what the mutation run found untested ------------------------------------------------------
async def test_the_lag_is_observed_once_per_delivery_from_the_sent_timestamp() -> None:
    from prometheus_client import CollectorRegistry

    from worker.observe.metrics import Metrics

    router = Router()

    @router.handler("row")
    async def row(payload: Row, message: Message) -> None:
        if message.receive_count == 1:
            raise RuntimeError("again")

    registry = CollectorRegistry()
    processor = _processor(router)
    processor.ctx.metrics = Metrics(registry)
    processor = Processor(processor.ctx)
    late, ahead = _lease({"n": 1}), _lease({"n": 2})
    for lease, shift in ((late, -10.0), (ahead, +60.0)):  # sent 10 s ago; a clock a minute ahead
        lease.message = dataclasses.replace(
            lease.message, sent_timestamp_ms=int((time.time() + shift) * 1000)
        )
    await processor.run(None, [late])
    await processor.run(None, [late])  # run again in place: not a second observation
    labels = {"queue": "q", "type": "row"}
    assert registry.get_sample_value("sqs_worker_message_lag_seconds_count", labels) == 1
    assert 9.5 < (registry.get_sample_value("sqs_worker_message_lag_seconds_sum", labels) or 0) < 11
    await processor.run(None, [ahead])
    assert registry.get_sample_value("sqs_worker_message_lag_seconds_count", labels) == 2
    assert 9.5 < (registry.get_sample_value("sqs_worker_message_lag_seconds_sum", labels) or 0) < 11  # +0


class Pool:
    """A resource a start-up hook would provide."""


async def test_handlers_get_their_resources_single_and_batch() -> None:
    router, got = Router(), []

    @router.handler("one")
    async def one(payload: Row, pool: Pool) -> None:
        got.append(("one", pool))

    @router.batch_handler("many", max_size=10)
    async def many(payloads: list[Row], pool: Pool) -> None:
        got.append(("many", pool))

    processor = _processor(router)
    pool = Pool()
    processor.ctx.resources.add(pool)
    processor = Processor(processor.ctx)
    await processor.run(None, [_lease({"n": 1}, "one")])
    await processor.run(_route(processor, "many"), [_lease({"n": 1}, "many")])
    assert got == [("one", pool), ("many", pool)]


async def test_a_plain_function_runs_in_the_workers_pool_counted_while_it_runs() -> None:
    from worker.runtime.steps.invoke import handler_threads_running

    router = Router()
    during: list[tuple[str, int]] = []

    @router.handler("row")
    def row(payload: Row) -> None:
        during.append((threading.current_thread().name, handler_threads_running()))

    await _processor(router).run(None, [_lease({"n": 1})])
    assert during[0][0].startswith("handler")  # the worker's pool, not asyncio's default one
    assert during[0][1] == 1
    assert handler_threads_running() == 0


async def test_a_thread_handlers_overdue_line_names_its_messages_and_limit() -> None:
    router = Router()

    @router.batch_handler("row", max_size=10)
    def rows(payloads: list[Row]) -> None:
        time.sleep(0.3)

    processor = _processor(router, max_processing_time=0.1)
    leases = [_lease({"n": 1}), _lease({"n": 2})]
    with structlog.testing.capture_logs() as logs:
        await processor.run(_route(processor, "row"), leases)
    [line] = [e for e in logs if e["event"] == "message_overdue"]
    assert line["queue"] == "q"
    assert line["message_ids"] == [lease.message.message_id for lease in leases]
    assert line["limit"] == 0.1
    assert line["detail"].startswith("thread still running")


async def test_a_cancel_without_the_shutdown_fails_a_thread_run() -> None:
    router = Router()
    release = threading.Event()

    @router.handler("row")
    def row(payload: Row) -> None:
        release.wait(5)

    processor = _processor(router)
    task = asyncio.create_task(processor.run(None, [_lease({"n": 1})]))
    await asyncio.sleep(0.05)
    task.cancel()  # not the shutdown (no Halt): e.g. a bug's clean-up
    [item] = await task
    release.set()
    assert item.outcome is not None
    assert item.outcome.kind == "failed"


async def test_past_the_grace_a_thread_that_ends_counts_and_a_second_cancel_leaves_it_behind() -> None:
    router = Router()
    release = threading.Event()

    @router.handler("row")
    def row(payload: Row) -> None:
        release.wait(5)

    async def in_task(processor: Processor, cancels: int) -> tuple[Any, int, list[Any]]:
        async def go() -> tuple[Any, int, list[Any]]:
            with structlog.testing.capture_logs() as logs:
                inner = asyncio.create_task(processor.run(None, [_lease({"n": 1})]))
                await asyncio.sleep(0.05)
                processor.ctx.halt.end_grace()
                for _ in range(cancels):
                    inner.cancel()
                    await asyncio.sleep(0.05)
                if cancels == 1:
                    release.set()
                [item] = await inner
            return item, inner.cancelling(), logs  # (cancels taken back: the outcome says)

        return await asyncio.create_task(go())

    ended, cancelling, logs = await in_task(_processor(router), 1)
    assert ended.outcome.kind == "succeeded"  # its result counted
    assert cancelling == 0
    assert [(e["event"], e["messages"]) for e in logs if e["event"].startswith("handler_thread")] == [
        ("handler_thread_still_running", 1)
    ]
    release.clear()
    left, cancelling, logs = await in_task(_processor(router), 2)
    release.set()
    assert cancelling == 0
    assert left.decision.action is Action.KEEP
    assert [(e["event"], e["messages"]) for e in logs if e["event"].startswith("handler_thread")] == [
        ("handler_thread_still_running", 1),
        ("handler_thread_abandoned", 1),
    ]


async def test_a_single_call_runs_when_only_batch_middleware_is_registered() -> None:
    router, runs = Router(), []

    @router.middleware
    async def batch_only(messages: list[Message], call_next: CallNext) -> Any:
        return await call_next()

    @router.handler("row")
    async def row(payload: Row) -> None:
        runs.append(payload.n)

    [item] = await _processor(router).run(None, [_lease({"n": 3})])
    assert item.outcome is not None
    assert item.outcome.kind == "succeeded"
    assert runs == [3]


def test_a_middleware_whose_annotations_cannot_be_read_wraps_single_calls() -> None:
    async def unreadable(message: NoSuchName, call_next: CallNext) -> Any:  # type: ignore[name-defined] # noqa: F821
        return await call_next()

    assert not takes_batches(unreadable)


async def test_a_plain_handler_beside_an_idempotent_one_runs_without_a_record() -> None:
    from worker.idempotency.store import MemoryStore

    router, runs = Router(), []

    @router.handler("pay", idempotent=True)
    async def pay(payload: Row) -> None:
        pass

    @router.handler("row")
    async def row(payload: Row) -> None:
        runs.append(payload.n)

    store = MemoryStore()
    [item] = await _idempotent_processor(router, store).run(None, [_lease({"n": 4})])
    assert item.outcome is not None
    assert item.outcome.kind == "succeeded"
    assert runs == [4]
    assert store.records == {}  # no claim was made for it


async def test_a_member_left_out_of_a_batch_does_not_keep_the_others_out() -> None:
    router, calls = Router(), []

    @router.batch_handler("row", max_size=10)
    async def rows(payloads: list[Row]) -> None:
        calls.append([p.n for p in payloads])

    @router.handler("other")
    async def other(payload: Row) -> None:
        pass

    processor = _processor(router)
    leases = [_lease({"n": 0}, "mystery"), _lease({"n": 1}, "other"), _lease("{"), _lease({"n": 3})]
    items = await processor.run(_route(processor, "row"), leases)
    assert calls == [[3]]  # the three before it were rejected one by one; it still ran
    assert [i.outcome.kind if i.outcome else None for i in items] == ["rejected"] * 3 + ["succeeded"]
    assert items[1].outcome is not None
    assert items[1].outcome.reason == "message type 'other' does not belong in a batch of 'row'"


async def test_a_deadline_that_passes_while_the_store_is_asked_is_a_wait() -> None:
    from worker.idempotency.store import MemoryStore

    router = Router()

    @router.handler("pay", idempotent=True)
    async def pay(payload: Row) -> None:
        pass

    class _Hanging(MemoryStore):
        async def claim(self, record: Any, now: float) -> Any:
            await asyncio.sleep(3600)

    processor = _idempotent_processor(router, _Hanging())
    processor.ctx.settings = processor.ctx.settings.model_copy(update={"max_processing_time": 0.1})
    processor = Processor(processor.ctx)
    [item] = await processor.run(None, [_lease({"n": 1}, "pay")])
    assert item.outcome is not None
    assert item.outcome.kind == "waiting"
    assert item.outcome.reason.startswith("idempotency store unavailable")


async def test_threads_running_at_once_are_each_counted() -> None:
    from worker.runtime.steps.invoke import handler_threads_running

    router = Router()
    both = threading.Barrier(2, timeout=5)
    seen: list[int] = []

    @router.handler("row")
    def row(payload: Row) -> None:
        both.wait()
        seen.append(handler_threads_running())
        both.wait()

    processor = _processor(router)
    await asyncio.gather(processor.run(None, [_lease({"n": 1})]), processor.run(None, [_lease({"n": 2})]))
    assert seen == [2, 2]
    assert handler_threads_running() == 0


# -- waiting on a dependency: its time and its bound -----------------------------------------
async def test_a_dependency_that_says_when_sets_the_wait_and_a_long_wait_is_given_back() -> None:
    from worker import DependencyUnavailable

    router = Router()

    @router.handler("row")
    async def row(payload: Row) -> None:
        raise DependencyUnavailable("payments", "503", retry_after=7.2)

    processor = _processor(router)
    lease = _lease({"n": 1})
    [item] = await processor.run(None, [lease])
    assert item.decision is not None
    assert (item.decision.action, item.decision.delay) == (Action.WAIT, 8)  # its time, whole seconds
    assert lease.failures == 0
    assert lease.waiting_since is not None
    processor.ctx.max_wait = 0.5
    lease.waiting_since -= 1  # it has waited past the bound
    with structlog.testing.capture_logs() as logs:
        [given_back] = await processor.run(None, [lease])
    assert given_back.decision is not None
    assert given_back.decision.action is Action.RELEASE
    assert [e["event"] for e in logs if e["event"].startswith("message_wait")] == ["message_wait_given_up"]
    assert lease.failures == 0
