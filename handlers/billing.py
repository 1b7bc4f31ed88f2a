"""Billing: charges placed orders and refunds cancelled ones.

Shows an async handler with a typed payload, a plain (blocking) function that the worker
runs in a thread, and the two ways a handler reports failure: any exception means "try
again later" (the queue's backoff, then the DLQ), ``PermanentFailure`` means "never".
Also a start-up hook that provides a resource to the handlers (a payment client, opened
once per process) and a middleware around every handler call (timing).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from handlers.models import OrderCancelled, OrderPlaced
from worker import CallNext, Message, PermanentFailure, Resources, Router

router = Router()
log = structlog.get_logger("handlers.billing")


class PaymentClient:
    """Stands for a real provider's client: opened once per process, shared by handlers."""

    def __init__(self) -> None:
        self.open = True

    async def charge(self, order_id: str, total: float) -> None:
        assert self.open, "the client is closed"
        await asyncio.sleep(0.05)  # the call to the payment provider

    async def close(self) -> None:
        self.open = False


@router.on_startup
async def open_payments(resources: Resources) -> None:
    resources.add(PaymentClient())


@router.on_shutdown
async def close_payments(resources: Resources) -> None:
    await resources.get(PaymentClient).close()


@router.middleware
async def timing(message: Message, call_next: CallNext) -> None:
    started = time.perf_counter()
    try:
        await call_next()
    finally:
        log.debug(
            "billing_handler_timing", type=message.type, seconds=round(time.perf_counter() - started, 4)
        )


class PaymentDeclined(Exception):
    """The payment provider said no; it may say yes later (the worker retries)."""


@router.handler("order.placed")
async def charge(order: OrderPlaced, message: Message, payments: PaymentClient) -> None:
    if order.payment_method == "expired-card":
        # Fails on every attempt: retried on the backoff schedule, then dead-lettered.
        raise PaymentDeclined(f"card expired for order {order.order_id}")
    if order.payment_method not in {"card", "invoice"}:
        raise PermanentFailure(f"unsupported payment method {order.payment_method!r}")
    await payments.charge(order.order_id, order.total)
    log.info("order_charged", order_id=order.order_id, total=order.total, attempt=message.receive_count)


@router.handler("order.cancelled")
def refund(order: OrderCancelled) -> None:
    # A plain function: it may block (a synchronous SDK, a database driver); the worker runs
    # it in its thread pool so the event loop keeps serving other messages.
    time.sleep(0.05)
    log.info("order_refunded", order_id=order.order_id, reason=order.reason)
