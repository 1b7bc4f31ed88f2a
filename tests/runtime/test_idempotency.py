"""Idempotent handlers on LocalStack, with the in-memory store and with DynamoDB (moto's
server): one effect per key, stored results for middleware, failures released, duplicates
of a running message held back while its lease lives, takeovers after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Aws, TestQueue, eventually, idempotency_table, running, settings_for
from worker import IdempotencyRecord, Message, Router, replayed
from worker.aws import aws_client
from worker.errors import ConfigError
from worker.idempotency import COMPLETED, IN_PROGRESS, IdempotencyStore, Record
from worker.messages.routing import BatchSpec, HandlerError, Registry
from worker.runtime.idempotency import key_of
from worker.runtime.supervisor import Supervisor, check_idempotency
from worker.settings import AwsSettings, IdempotencySettings, WorkerSettings


@pytest.fixture(params=["memory", "dynamodb"])
async def store_config(request: pytest.FixtureRequest, moto_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    if request.param == "memory":
        yield {"store": "memory"}
        return
    async with idempotency_table(moto_endpoint) as table:
        yield {"store": "dynamodb", "table": table, "endpoint_url": moto_endpoint}


def store_of(worker: Supervisor) -> IdempotencyStore:
    idempotency = worker.consumers[0].idempotency
    assert idempotency is not None
    return idempotency.store


async def send_keyed(aws: Aws, queue: TestQueue, key: str, body: dict[str, Any]) -> str:
    return await aws.send(
        queue.url,
        body,
        MessageAttributes={
            "type": {"DataType": "String", "StringValue": "order"},
            "idempotency-key": {"DataType": "String", "StringValue": key},
        },
    )


def order_router(
    calls: list[int], results: list[tuple[bool, Any]], work: Callable[[int], Awaitable[None]] | None = None
) -> Router:
    router = Router()

    @router.middleware
    async def observe(message: Message, call_next: Callable[[], Awaitable[Any]]) -> Any:
        result = await call_next()
        results.append((replayed(), result))
        return result

    @router.handler("order", idempotent=True)
    async def order(payload: dict[str, Any], message: Message) -> dict[str, int]:
        calls.append(payload["n"])
        if work is not None:
            await work(message.receive_count)
        return {"invoice": payload["n"] * 10}

    return router


async def test_a_key_runs_once_and_later_copies_replay_its_result(
    aws: Aws, store_config: dict[str, Any]
) -> None:
    queue = await aws.queue()
    calls: list[int] = []
    results: list[tuple[bool, Any]] = []
    settings = settings_for(aws.endpoint, queue, idempotency=store_config)
    async with running(settings, order_router(calls, results), middleware=True) as worker:
        counters = worker.consumers[0].counters
        await send_keyed(aws, queue, "order-1", {"n": 1})
        await eventually(lambda: counters.succeeded == 1, timeout=15)
        await send_keyed(aws, queue, "order-1", {"n": 2})  # a producer's retry, say
        await send_keyed(aws, queue, "order-2", {"n": 3})
        await eventually(lambda: counters.succeeded == 3, timeout=15)
        await eventually(lambda: worker.consumers[0].in_flight == 0, timeout=10)
    assert sorted(calls) == [1, 3]
    assert sorted(results, key=str) == sorted(
        [(False, {"invoice": 10}), (True, {"invoice": 10}), (False, {"invoice": 30})], key=str
    )
    assert await aws.total(queue.url) == 0


async def test_a_failed_run_releases_its_key(aws: Aws, store_config: dict[str, Any]) -> None:
    queue = await aws.queue()
    calls: list[int] = []

    async def fail_first(receive_count: int) -> None:
        if receive_count == 1:
            raise RuntimeError("payment service down")

    settings = settings_for(aws.endpoint, queue, idempotency=store_config)
    async with running(settings, order_router(calls, [], fail_first), middleware=True) as worker:
        await send_keyed(aws, queue, "order-9", {"n": 9})
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=20)
    assert calls == [9, 9]  # it ran again: the failed run left no record behind


async def test_a_copy_in_the_same_process_waits_for_the_first_run(aws: Aws) -> None:
    queue = await aws.queue()
    calls: list[int] = []
    results: list[tuple[bool, Any]] = []

    async def slow(receive_count: int) -> None:
        await asyncio.sleep(1)

    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, order_router(calls, results, slow), middleware=True) as worker:
        counters = worker.consumers[0].counters
        await send_keyed(aws, queue, "order-4", {"n": 4})
        await send_keyed(aws, queue, "order-4", {"n": 4})
        await eventually(lambda: counters.succeeded == 2, timeout=15)
    assert calls == [4]
    assert counters.failed == 0  # the copy waited here: no extra delivery
    assert sorted(results, key=str) == [(False, {"invoice": 40}), (True, {"invoice": 40})]


async def test_a_copy_elsewhere_waits_while_the_first_run_keeps_its_lease(
    aws: Aws, moto_endpoint: str
) -> None:
    """Worker A's run outlives the visibility timeout three times; its heartbeat extends the
    lease and the keeper the record, so worker B, given a copy, holds it back (Retry) until
    A completed, then replays it: the effect happens once."""
    queue = await aws.queue()
    calls: list[int] = []
    results: list[tuple[bool, Any]] = []

    async def slow(receive_count: int) -> None:
        await asyncio.sleep(6)

    async with idempotency_table(moto_endpoint) as table:
        store = {"store": "dynamodb", "table": table, "endpoint_url": moto_endpoint}
        settings = settings_for(
            aws.endpoint,
            queue,
            visibility_timeout=2,
            max_in_flight=1,
            batch_size=1,
            pollers=1,
            idempotency=store,
        )
        router = order_router(calls, results, slow)
        async with running(settings, router, middleware=True) as a:
            await send_keyed(aws, queue, "order-5", {"n": 5})
            await eventually(lambda: calls == [5], timeout=10)
            async with running(settings, router, middleware=True) as b:
                await send_keyed(aws, queue, "order-5", {"n": 6})

                # The copy is replayed by whichever worker receives it once A's run is done:
                # B, after holding it back, or A itself (its slot free again).
                def succeeded() -> int:
                    return a.consumers[0].counters.succeeded + b.consumers[0].counters.succeeded

                await eventually(lambda: succeeded() == 2, timeout=30)
            assert a.consumers[0].counters.succeeded >= 1
    assert calls == [5]
    assert (True, {"invoice": 50}) in results
    assert b.consumers[0].counters.failed >= 1  # held back at least once


async def test_a_record_whose_worker_died_is_taken_over_after_its_lease(aws: Aws) -> None:
    queue = await aws.queue()
    calls: list[int] = []
    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, order_router(calls, []), middleware=True) as worker:
        now = time.time()
        claimed = Record(
            f"{queue.name}:order-7", IN_PROGRESS, "dead-worker", "other-message", 1, now + 3, now + 3600
        )
        assert await store_of(worker).claim(claimed, now) is None
        await send_keyed(aws, queue, "order-7", {"n": 7})
        await eventually(lambda: worker.consumers[0].counters.failed == 1, timeout=10)
        assert calls == []  # not while the dead worker's lease would still run
        await eventually(lambda: calls == [7], timeout=15)
        assert time.time() >= now + 3


async def test_the_next_delivery_of_the_same_message_takes_over_at_once(aws: Aws) -> None:
    queue = await aws.queue()
    message_id = await send_keyed(aws, queue, "order-8", {"n": 8})
    # A first delivery whose worker died while holding the record (with a long lease).
    first = await aws.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=1, WaitTimeSeconds=2)
    assert first["Messages"][0]["MessageId"] == message_id
    calls: list[int] = []
    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, order_router(calls, []), middleware=True) as worker:
        now = time.time()
        # The dead worker's lease ran out when the visibility did (1 s); the record allows
        # the skew on top, which the same message's next delivery does not wait for.
        record = Record(
            f"{queue.name}:order-8", IN_PROGRESS, "dead-worker", message_id, 1, now + 1.2, now + 3600
        )
        assert await store_of(worker).claim(record, now) is None
        await eventually(lambda: calls == [8], timeout=15)
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=5)
        assert worker.consumers[0].counters.failed == 0  # taken over, not given back
        held = await store_of(worker).claim(
            Record(f"{queue.name}:order-8", IN_PROGRESS, "probe", "x", 1, now + 1, now + 3600), time.time()
        )
        assert held is not None
        assert held.status == COMPLETED


async def test_a_result_that_is_not_json_is_not_stored_but_the_key_completes(aws: Aws) -> None:
    queue = await aws.queue()
    router = Router()
    calls: list[str] = []

    @router.handler("order", idempotent=True)
    async def order(payload: dict[str, Any]) -> object:
        calls.append("ran")
        return object()

    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, router) as worker:
        counters = worker.consumers[0].counters
        await send_keyed(aws, queue, "k", {"n": 1})
        await eventually(lambda: counters.succeeded == 1, timeout=15)
        await send_keyed(aws, queue, "k", {"n": 1})
        await eventually(lambda: counters.succeeded == 2, timeout=15)
    assert calls == ["ran"]


async def test_an_effect_and_its_record_commit_in_one_transaction(aws: Aws, moto_endpoint: str) -> None:
    """The handler writes its effect and completes its record in one TransactWriteItems,
    then fails: the record stays completed, so the retry settles without a second effect."""
    queue = await aws.queue()
    calls: list[int] = []
    router = Router()
    dynamo = AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")
    async with (
        idempotency_table(moto_endpoint) as table,
        idempotency_table(moto_endpoint) as ledger,
        aws_client("dynamodb", dynamo) as client,
    ):

        @router.handler("order", idempotent=True)
        async def order(payload: dict[str, Any], message: Message, record: IdempotencyRecord) -> None:
            calls.append(message.receive_count)
            effect = {"id": {"S": f"{payload['n']}/{record.owner}"}}
            await client.call(
                "transact_write_items",
                TransactItems=[{"Put": {"TableName": ledger, "Item": effect}}, record.completion({"ok": 1})],
            )
            raise RuntimeError("crashed after the commit")

        store = {"store": "dynamodb", "table": table, "endpoint_url": moto_endpoint}
        settings = settings_for(aws.endpoint, queue, idempotency=store)
        async with running(settings, router) as worker:
            counters = worker.consumers[0].counters
            await send_keyed(aws, queue, "order-11", {"n": 11})
            await eventually(lambda: counters.succeeded == 1, timeout=20)
        items = (await client.call("scan", TableName=ledger))["Items"]
    assert calls == [1]  # the retry did not run it
    assert counters.failed == 1
    assert len(items) == 1


def test_completion_in_a_transaction_needs_the_dynamodb_store() -> None:
    with pytest.raises(RuntimeError, match=r"needs idempotency\.store: dynamodb"):
        IdempotencyRecord("q:k", "owner").completion()

    async def plain(payload: dict[str, Any], record: IdempotencyRecord) -> None:
        return None

    with pytest.raises(HandlerError, match="must be idempotent=True"):
        Router().add("x", plain)


async def test_what_is_stored_is_what_the_handler_returned(aws: Aws) -> None:
    """A middleware that returns nothing does not erase the result replays get."""
    queue = await aws.queue()
    seen: list[Any] = []
    router = Router()

    @router.middleware
    async def forgetful(message: Message, call_next: Callable[[], Awaitable[Any]]) -> None:
        seen.append(await call_next())

    @router.handler("order", idempotent=True)
    async def order(payload: dict[str, Any]) -> dict[str, int]:
        return {"invoice": payload["n"]}

    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, router, middleware=True) as worker:
        counters = worker.consumers[0].counters
        await send_keyed(aws, queue, "k-3", {"n": 3})
        await eventually(lambda: counters.succeeded == 1, timeout=15)
        await send_keyed(aws, queue, "k-3", {"n": 4})
        await eventually(lambda: counters.succeeded == 2, timeout=15)
    assert seen == [{"invoice": 3}, {"invoice": 3}]


async def test_a_copy_on_its_last_delivery_waits_instead_of_going_to_the_dlq(aws: Aws) -> None:
    """maxReceiveCount 2: given back once more, the copy would be dead-lettered without
    having run; it waits in the worker (its lease kept) until the holder's record runs out."""
    queue = await aws.queue(max_receive_count=2)
    calls: list[int] = []
    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, order_router(calls, []), middleware=True) as worker:
        now = time.time()
        held = Record(f"{queue.name}:order-12", IN_PROGRESS, "elsewhere", "other", 1, now + 4, now + 3600)
        assert await store_of(worker).claim(held, now) is None
        await send_keyed(aws, queue, "order-12", {"n": 12})
        await eventually(lambda: worker.consumers[0].counters.failed == 1, timeout=10)  # 1st: Retry
        await eventually(lambda: calls == [12], timeout=20)  # 2nd (the last): waited, then ran
    assert queue.dlq_url
    assert await aws.drain(queue.dlq_url, wait=0) == []


async def test_a_handler_taking_the_message_first_gets_its_record(aws: Aws) -> None:
    queue = await aws.queue()
    owners: list[str] = []
    router = Router()

    @router.handler("order", idempotent=True)
    async def order(message: Message, record: IdempotencyRecord) -> None:
        owners.append(record.owner)

    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, router) as worker:
        await send_keyed(aws, queue, "k-1", {"n": 1})
        await eventually(lambda: worker.consumers[0].counters.succeeded == 1, timeout=15)
    assert len(owners) == 1


async def test_queues_without_idempotent_handlers_pay_nothing(aws: Aws) -> None:
    queue = await aws.queue()
    settings = settings_for(aws.endpoint, queue, idempotency={"store": "memory"})
    async with running(settings, Router()) as worker:
        assert worker.consumers[0].idempotency is None
        assert worker.consumers[0].processor.ctx.idempotency is None


def test_the_key_is_the_attribute_then_the_dedup_id_then_the_message_id() -> None:
    def message(attributes: dict[str, str], dedup: str | None = None) -> Message:
        return Message("mid", "{}", attributes, "t", 1, dedup_id=dedup)

    assert key_of(message({"idempotency-key": "k"}, "d")) == "k"
    assert key_of(message({}, "d")) == "d"
    assert key_of(message({})) == "mid"


def test_an_idempotent_handler_needs_a_store(aws_settings: WorkerSettings) -> None:
    router = Router()

    @router.handler("order", idempotent=True)
    async def order(payload: dict[str, Any]) -> None:
        return None

    registries = {"q": Registry(router.routes)}
    with pytest.raises(ConfigError, match=r"is idempotent \(queue q\) but idempotency.store is none"):
        check_idempotency(aws_settings, registries)
    check_idempotency(
        aws_settings.model_copy(update={"idempotency": IdempotencySettings(store="memory")}), registries
    )


def test_a_batch_handler_cannot_be_idempotent() -> None:
    async def rows(payloads: list[dict[str, Any]]) -> None:
        return None

    with pytest.raises(HandlerError, match="for single-message handlers"):
        Router().add("rows", rows, idempotent=True, batch=BatchSpec(10, 1))


@pytest.fixture
def aws_settings() -> WorkerSettings:
    return WorkerSettings.model_validate({"queues": {"q": {"name": "q", "handlers": ["tests.support.noop"]}}})


async def test_the_payments_example_charges_each_payment_once(aws: Aws, moto_endpoint: str) -> None:
    """config/payments-topology.yaml provisioned (queue on LocalStack, table on moto's
    DynamoDB), config/payments.yaml run: the same payment sent three times (two of them a
    producer's retries with the same key) is charged once."""
    from handlers.payments import Ledger
    from worker.aws import AwsClient, aws_client
    from worker.ops.provision import Provisioner
    from worker.ops.topology import load_topology
    from worker.producer import Producer
    from worker.runtime.supervisor import load_registries
    from worker.settings import AwsSettings, load_settings

    topology = load_topology("config/payments-topology.yaml")
    dynamo = AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")
    async with aws_client("dynamodb", dynamo) as dynamodb:
        p = Provisioner(
            topology,
            AwsClient(aws.sqs),
            AwsClient(aws.sns),
            dynamodb=dynamodb,
            cloudwatch=AwsClient(aws.cloudwatch),
        )
        await p.apply(await p.plan())
    url = (await aws.sqs.get_queue_url(QueueName="payments"))["QueueUrl"]
    await aws.drain(url, wait=0)  # what an earlier run on a shared server left
    shipped = yaml.safe_load(await asyncio.to_thread(Path("config/payments.yaml").read_text))
    shipped["aws"] = {"endpoint_url": aws.endpoint, "region": "us-east-1"}
    shipped["idempotency"]["endpoint_url"] = moto_endpoint
    shipped["queues"]["payments"]["wait_time_seconds"] = 1
    settings = load_settings(None, shipped)
    payment = {"payment_id": f"pay-{time.monotonic_ns()}", "order_id": "o-1", "amount_cents": 1250}
    async with Producer.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as producer:
        for _ in range(3):
            await producer.send(
                "payments", payment, "payment.requested", idempotency_key=payment["payment_id"]
            )
    before = len(Ledger.charges)
    supervisor = Supervisor(settings, load_registries(settings), tracing=None)
    task = asyncio.create_task(supervisor.run())
    try:
        await eventually(lambda: supervisor.consumers and supervisor.consumers[0].counters.succeeded == 3, 20)
    finally:
        supervisor.request_stop()
        await task
    assert Ledger.charges[before:] == [(payment["payment_id"], 1250)]
