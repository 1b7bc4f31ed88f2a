"""The chaos runs' idempotent handler (type ``effect``), in a module of its own: a worker
refuses a module with an idempotent handler unless an idempotency store is configured, and
only the scenarios with the store configure one.

Its side effect is an item in the run's effects table (``$CHAOS_EFFECTS_TABLE`` on
``$CHAOS_DYNAMODB``), written in one ``TransactWriteItems`` with the completion of the
message's idempotency record, so the effect and the completed record exist together or not
at all. The accounting counts effects per message from that table. Record lines:

    ok <message_id> - <seq>       the handler's transaction committed
    fail <message_id> - <seq>     the handler's transaction failed (the run failed)
    replay <message_id> - -1      a delivery settled without running (its key completed)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from benchmarks.chaos_handlers import WORK_SECONDS, record
from worker import CallNext, IdempotencyRecord, Message, Resources, Router, replayed

router = Router()


class Effects:
    """The effects table's client, opened once per process."""

    def __init__(self, client: Any, stack: contextlib.AsyncExitStack) -> None:
        self.client = client
        self.stack = stack
        self.table = os.environ.get("CHAOS_EFFECTS_TABLE", "")


@router.on_startup
async def open_effects(resources: Resources) -> None:
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        get_session().create_client(
            "dynamodb",
            endpoint_url=os.environ.get("CHAOS_DYNAMODB"),
            region_name="us-east-1",
            # moto answers some concurrent transactions with a 500: retried, as AWS advises.
            config=AioConfig(retries={"max_attempts": 10, "mode": "standard"}),
        )
    )
    resources.add(Effects(client, stack))


@router.on_shutdown
async def close_effects(resources: Resources) -> None:
    await resources.get(Effects).stack.aclose()


@router.middleware
async def replays(message: Message, call_next: CallNext) -> Any:
    result = await call_next()
    if replayed():
        record(f"replay {message.message_id} - -1")
    return result


@router.handler("effect", idempotent=True)
async def effect(
    payload: dict[str, int], message: Message, claim: IdempotencyRecord, effects: Effects
) -> None:
    await asyncio.sleep(WORK_SECONDS)
    item = {"id": {"S": f"{message.message_id}/{claim.owner}"}, "message_id": {"S": message.message_id}}
    try:
        await effects.client.transact_write_items(
            TransactItems=[{"Put": {"TableName": effects.table, "Item": item}}, claim.completion()]
        )
    except Exception:
        # A run that failed (moto answers some transactions with a 500 even after retries):
        # the accounting then knows a message in the DLQ failed in its own handler.
        record(f"fail {message.message_id} - {payload.get('seq', -1)}")
        raise
    record(f"ok {message.message_id} - {payload.get('seq', -1)}")
