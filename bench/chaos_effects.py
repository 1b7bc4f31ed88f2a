"""The chaos runs' idempotent handler (type ``effect``), in a module of its own: a worker
refuses a module with an idempotent handler unless an idempotency store is configured, and
only the scenarios with the store configure one. Its ``ok`` line is the side effect that
must happen once per message."""

from __future__ import annotations

import asyncio

from bench.chaos_handlers import WORK_SECONDS, record
from worker import Message, Router

router = Router()


@router.handler("effect", idempotent=True)
async def effect(payload: dict[str, int], message: Message) -> None:
    await asyncio.sleep(WORK_SECONDS)
    record(f"ok {message.message_id} {message.group_id or '-'} {payload.get('seq', -1)}")
