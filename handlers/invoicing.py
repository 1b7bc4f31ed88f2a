"""Invoicing: receives only orders paid by invoice (an SNS filter on the message body)."""

from __future__ import annotations

import structlog

from handlers.models import OrderPlaced
from worker import Router

router = Router()
log = structlog.get_logger("handlers.invoicing")


@router.handler("order.placed")
async def issue_invoice(order: OrderPlaced) -> None:
    log.info("invoice_issued", order_id=order.order_id, total=order.total)
