"""Handlers for the fault-injection runs. A success is appended (and flushed) to
$CHAOS_RECORD_DIR/<pid>.log before the handler returns, so even a SIGKILL cannot lose the
record of a message that was handled."""

from __future__ import annotations

import asyncio
import os
import random

from worker import Message, Router

router = Router()
FAIL_RATE = float(os.environ.get("CHAOS_FAIL_RATE", "0"))
WORK_SECONDS = float(os.environ.get("CHAOS_WORK_SECONDS", "0.01"))
_record = None


def record(line: str) -> None:
    global _record
    if _record is None:
        _record = open(  # noqa: SIM115 - kept open for the life of the process
            os.path.join(os.environ["CHAOS_RECORD_DIR"], f"{os.getpid()}.log"),
            "a",
            buffering=1,
            encoding="utf-8",
        )
    _record.write(line + "\n")


@router.handler("job")
async def job(payload: dict[str, int], message: Message) -> None:
    await asyncio.sleep(WORK_SECONDS)
    if FAIL_RATE and random.random() < FAIL_RATE:
        raise RuntimeError("injected handler failure")
    record(f"ok {message.message_id} {message.group_id or '-'} {payload.get('seq', -1)}")


@router.handler("hang")
async def hang(payload: dict[str, int], message: Message) -> None:
    if message.receive_count == 1:
        await asyncio.Event().wait()  # forever; max_processing_time cancels it
    record(f"ok {message.message_id} - -1")
