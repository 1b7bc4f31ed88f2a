"""Invoicing: receives only orders paid by invoice (an SNS filter on the message body), and
writes their invoices in batches: one call for up to 10 orders, formed across receives."""

from __future__ import annotations

import structlog

from handlers.models import OrderPlaced
from worker import Message, Router

router = Router()
log = structlog.get_logger("handlers.invoicing")


@router.batch_handler("order.placed", max_size=10, max_wait=0.5)
async def issue_invoices(
    orders: list[OrderPlaced], messages: list[Message]
) -> dict[str, BaseException] | None:
    # One write for the whole batch (a bulk insert, one API call). A message named in the
    # returned mapping failed (retried, or dead-lettered by a PermanentFailure); the rest
    # are deleted.
    failed: dict[str, BaseException] = {}
    for order, message in zip(orders, messages, strict=True):
        if order.total <= 0:
            failed[message.message_id] = ValueError(f"order {order.order_id} has nothing to invoice")
    log.info("invoices_issued", count=len(orders) - len(failed), orders=[o.order_id for o in orders])
    return failed or None
