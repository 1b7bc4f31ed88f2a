"""Shipping: reserves stock for placed orders and books the carrier for shipped ones.

``book_carrier`` is the slow handler of the example: it runs longer than the queue's
visibility timeout, and the worker keeps extending the message's visibility so that no
other consumer picks it up while it runs.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from handlers.models import OrderPlaced, OrderShipped
from worker import Message, Retry, Router

router = Router()
log = structlog.get_logger("handlers.shipping")

# How long booking a carrier takes; the demo sets it above the visibility timeout.
CARRIER_SECONDS = float(os.environ.get("SHIPPING_CARRIER_SECONDS", "1.0"))


@router.handler("order.placed")
async def reserve_stock(order: OrderPlaced) -> None:
    await asyncio.sleep(0.02)
    log.info("stock_reserved", order_id=order.order_id, lines=len(order.items))


@router.handler("order.shipped")
async def book_carrier(shipment: OrderShipped, message: Message) -> None:
    if shipment.carrier == "pigeon" and message.receive_count < 2:
        # Ask for a specific delay instead of the backoff schedule.
        raise Retry(delay=1, reason="carrier API rate limited")
    await asyncio.sleep(CARRIER_SECONDS)
    log.info("carrier_booked", order_id=shipment.order_id, carrier=shipment.carrier)
