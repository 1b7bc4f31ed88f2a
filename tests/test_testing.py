"""The testing kit users test their handlers with: real routing, decoding, middleware, hooks
and outcome rules, in memory."""

from __future__ import annotations

import pytest

from handlers.billing import PaymentClient
from handlers.billing import router as billing
from worker import CallNext, Message, PermanentFailure, Resources, Retry, Router
from worker.testing import HandlerKit, sns_message, sqs_message

ORDER = {"order_id": "o-1", "customer_id": "c", "items": [{"sku": "a", "quantity": 1, "unit_price": 2.5}]}


async def test_the_shipped_billing_handler_through_the_kit() -> None:
    async with HandlerKit(billing) as kit:
        ok = await kit.run(sqs_message(ORDER, type="order.placed"))
        bad = await kit.run(sqs_message({**ORDER, "payment_method": "bitcoin"}, type="order.placed"))
        later = await kit.run(sqs_message({**ORDER, "payment_method": "expired-card"}, type="order.placed"))
        client = kit.resources.get(PaymentClient)
        assert client.open  # provided by the start-up hook
    assert not client.open  # closed by the shutdown hook
    assert ok.outcome == "succeeded"
    assert bad.outcome == "rejected"
    assert "unsupported payment method" in bad.reason
    assert later.outcome == "retry"
    assert later.retry_in == 10  # the default backoff's first step


@pytest.mark.parametrize("raw_delivery", [False, True])
async def test_sns_deliveries_reach_the_same_handler(raw_delivery: bool) -> None:
    async with HandlerKit(billing) as kit:
        result = await kit.run(sns_message(ORDER, type="order.placed", raw_delivery=raw_delivery))
    assert result.outcome == "succeeded"
    assert result.message is not None
    assert (result.message.topic_arn is None) == raw_delivery


async def test_bad_input_is_rejected_with_its_reason() -> None:
    async with HandlerKit(billing) as kit:
        no_type = await kit.run(sqs_message(ORDER))
        not_json = await kit.run(sqs_message("{", type="order.placed"))
        invalid = await kit.run(sqs_message({"order_id": 5}, type="order.placed"))
    assert (no_type.outcome, no_type.reason) == ("rejected", "message has no type")
    assert not_json.outcome == "rejected"
    assert "invalid payload for OrderPlaced" in invalid.reason


async def test_middleware_sees_the_outcome_and_may_change_it() -> None:
    router = Router()
    seen: list[str] = []

    @router.middleware
    async def outer(message: Message, call_next: CallNext) -> None:
        seen.append("outer>")
        try:
            await call_next()
        except RuntimeError as exc:
            seen.append("outer saw " + str(exc))
            raise Retry(5, "downstream flaky") from exc
        finally:
            seen.append("<outer")

    @router.middleware
    async def inner(message: Message, call_next: CallNext) -> None:
        seen.append("inner>")
        if message.attributes.get("tenant") == "blocked":
            raise PermanentFailure("tenant blocked")
        await call_next()

    @router.handler("job")
    def job(payload: dict[str, int]) -> None:  # a plain function: middleware wraps it too
        seen.append("handler")
        if payload["n"] < 0:
            raise RuntimeError("negative")

    async with HandlerKit(router) as kit:
        ok = await kit.run(sqs_message({"n": 1}, type="job"))
        assert seen == ["outer>", "inner>", "handler", "<outer"]
        seen.clear()
        changed = await kit.run(sqs_message({"n": -1}, type="job"))
        blocked = await kit.run(sqs_message({"n": 1}, type="job", attributes={"tenant": "blocked"}))
    assert ok.outcome == "succeeded"
    assert (changed.outcome, changed.retry_in, changed.reason) == ("retry", 5, "downstream flaky")
    assert "outer saw negative" in seen
    assert (blocked.outcome, blocked.reason) == ("rejected", "tenant blocked")


class Db:
    def __init__(self) -> None:
        self.rows: list[int] = []


async def test_handlers_receive_resources_by_class() -> None:
    router = Router()

    @router.on_startup
    async def start(resources: Resources) -> None:
        resources.add(Db())

    @router.handler("row")
    async def row(payload: dict[str, int], message: Message, db: Db) -> None:
        db.rows.append(payload["n"])

    async with HandlerKit(router) as kit:
        await kit.run(sqs_message({"n": 7}, type="row"))
        assert kit.resources.get(Db).rows == [7]


async def test_an_idempotent_handler_replays_a_copy_in_the_kit() -> None:
    from handlers.payments import Ledger
    from handlers.payments import router as payments

    payment = {"payment_id": "pay-kit-1", "order_id": "o-1", "amount_cents": 500}
    before = len(Ledger.charges)
    async with HandlerKit(payments) as kit:
        first = await kit.run(
            sqs_message(payment, type="payment.requested", attributes={"idempotency-key": "pay-kit-1"})
        )
        copy = await kit.run(
            sqs_message(payment, type="payment.requested", attributes={"idempotency-key": "pay-kit-1"})
        )
    assert (first.outcome, first.replayed) == ("succeeded", False)
    assert (copy.outcome, copy.replayed) == ("succeeded", True)
    assert Ledger.charges[before:] == [("pay-kit-1", 500)]
