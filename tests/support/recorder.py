"""Handlers for tests that run the worker as a separate process.

Each finished handler appends ``message_id`` to $RECORD_FILE (one line, flushed before the
handler returns), so a test can tell exactly which messages completed. ``work`` sleeps
$WORK_SECONDS; ``work_sync`` does the same as a plain function.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time

from worker import Message, Router

router = Router()


@atexit.register
def _at_exit() -> None:
    # A clean stop runs the interpreter's exit handlers (users' too): $ATEXIT_FILE says so.
    path = os.environ.get("ATEXIT_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write("ran\n")


def _record(kind: str, message: Message) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as f:
        f.write(f"{kind} {message.message_id} {message.attributes.get('seq', '')}\n")
        f.flush()


@router.handler("work")
async def work(payload: dict[str, object], message: Message) -> None:
    _record("start", message)
    await asyncio.sleep(float(os.environ.get("WORK_SECONDS", "0.5")))
    _record("done", message)


@router.handler("work_sync")
def work_sync(payload: dict[str, object], message: Message) -> None:
    _record("start", message)
    time.sleep(float(os.environ.get("WORK_SECONDS", "0.5")))
    _record("done", message)


@router.handler("work_in_thread")
async def work_in_thread(payload: dict[str, object], message: Message) -> None:
    """An async handler whose work is a blocking call in ``asyncio.to_thread``: cancelled,
    the coroutine stops, the thread does not."""
    _record("start", message)
    await asyncio.to_thread(time.sleep, float(os.environ.get("WORK_SECONDS", "0.5")))
    _record("done", message)


@router.batch_handler("rows_sync", max_size=10, max_wait=0.2)
def rows_sync(payloads: list[dict[str, object]], messages: list[Message]) -> None:
    for message in messages:
        _record("start", message)
    time.sleep(float(os.environ.get("WORK_SECONDS", "0.5")))
    for message in messages:
        _record("done", message)
