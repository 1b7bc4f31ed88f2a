"""Payments: each requested payment is charged once, however often its message arrives.

SQS delivers at least once: a worker killed after the charge but before the delete, or a
producer that retried a send whose answer it lost, hands the same request over again. The
handler is registered ``idempotent=True``: its first run for a key (the ``idempotency-key``
attribute the producer sets, here the payment id) records the charge in the idempotency
store (``idempotency:`` in config/payments.yaml, the table in
config/payments-topology.yaml); a later copy settles without charging again, and the
middleware gets the first run's result to report it.
"""

from __future__ import annotations

import uuid

import structlog
from pydantic import BaseModel, Field

from worker import CallNext, Message, Router, replayed

router = Router()
log = structlog.get_logger("handlers.payments")


class PaymentRequested(BaseModel):
    payment_id: str
    order_id: str
    amount_cents: int = Field(gt=0)


class Ledger:
    """Stands for the payment provider: every charge it makes is an effect to have once."""

    charges: list[tuple[str, int]] = []

    @classmethod
    async def charge(cls, payment_id: str, amount_cents: int) -> str:
        cls.charges.append((payment_id, amount_cents))
        return f"ch_{uuid.uuid4().hex[:12]}"


@router.middleware
async def receipts(message: Message, call_next: CallNext) -> object:
    result = await call_next()  # the handler's result, or the stored one of the first run
    if replayed():
        log.info("payment_already_charged", message_id=message.message_id, result=result)
    return result


@router.handler("payment.requested", idempotent=True)
async def charge(request: PaymentRequested) -> dict[str, str]:
    charge_id = await Ledger.charge(request.payment_id, request.amount_cents)
    log.info("payment_charged", payment_id=request.payment_id, charge_id=charge_id)
    return {"charge_id": charge_id}
