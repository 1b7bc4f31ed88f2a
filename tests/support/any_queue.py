"""Handlers for queues fed by something other than this project's producer: each writes one
JSON line to $RECORD_FILE with what it was given (the payload, the message's type, its
envelope and source). No handler names a type the producers set, except through config."""

from __future__ import annotations

import json
import os
from typing import Any

from worker import Message, Router

router = Router()


def _record(handler: str, payload: Any, message: Message) -> None:
    line = {
        "handler": handler,
        "payload": payload,
        "type": message.type,
        "envelope": message.envelope,
        "source": message.source,
        "topic_arn": message.topic_arn,
    }
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@router.handler("Order Placed")
async def order_placed(detail: dict[str, Any], message: Message) -> None:
    """An EventBridge event's detail (its detail-type is the type)."""
    _record("order_placed", detail, message)


@router.handler("alarm")
async def alarm(notification: dict[str, Any], message: Message) -> None:
    """Named by a queue's ``types.default``: what an AWS service publishes, untyped."""
    _record("alarm", notification, message)
