"""Handlers for the fault-injection runs. Every outcome is appended (and flushed) to
$CHAOS_RECORD_DIR/<pid>.log before the handler returns or raises, so even a SIGKILL cannot
lose the record of a message that was handled. One line per handler call:

    ok <message_id> <group|-> <seq>        returned (the message is to be deleted)
    fail <message_id> <group|-> <seq>      raised an injected failure (retried)
    reject <message_id> <group|-> <seq>    raised PermanentFailure (to the DLQ)

Type ``effect`` (``benchmarks.chaos_effects``) is the idempotent twin of ``job``: run with an
idempotency store, its ``ok`` lines are side effects, which must happen once per message.

Environment:

- ``CHAOS_WORK_SECONDS`` (default 0.01): time each call takes.
- ``CHAOS_FAIL_RATE`` (default 0): share of calls that raise, decided at random per call.
- ``CHAOS_PERMANENT_RATE`` (default 0): share of messages rejected with PermanentFailure,
  decided per message id (a hash of it), so every delivery of a message decides the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time

from worker import Message, PermanentFailure, Router

router = Router()
FAIL_RATE = float(os.environ.get("CHAOS_FAIL_RATE", "0"))
PERMANENT_RATE = float(os.environ.get("CHAOS_PERMANENT_RATE", "0"))
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


def permanent(message_id: str, rate: float = PERMANENT_RATE) -> bool:
    """Whether this message is one to reject: the same answer on every delivery."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(message_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@router.handler("job")
async def job(payload: dict[str, int], message: Message) -> None:
    await asyncio.sleep(WORK_SECONDS)
    what = f"{message.message_id} {message.group_id or '-'} {payload.get('seq', -1)}"
    if permanent(message.message_id):
        record(f"reject {what}")
        raise PermanentFailure("injected permanent")
    if FAIL_RATE and random.random() < FAIL_RATE:
        record(f"fail {what}")
        raise RuntimeError("injected handler failure")
    record(f"ok {what}")


@router.handler("hang")
async def hang(payload: dict[str, int], message: Message) -> None:
    if message.receive_count == 1:
        try:
            await asyncio.Event().wait()  # forever; max_processing_time cancels it
        except asyncio.CancelledError:
            record(f"fail {message.message_id} - -1")
            raise
    record(f"ok {message.message_id} - -1")


def _member(message: Message, seq: int) -> tuple[str, BaseException | None]:
    """What one member of a batch comes to: (its record line's kind, its failure)."""
    what = f"{message.message_id} {message.group_id or '-'} {seq}"
    if permanent(message.message_id):
        record(f"reject {what}")
        return "reject", PermanentFailure("injected permanent")
    if FAIL_RATE and random.random() < FAIL_RATE:
        record(f"fail {what}")
        return "fail", RuntimeError("injected handler failure")
    record(f"ok {what}")
    return "ok", None


@router.batch_handler("rows", max_size=10, max_wait=0.2)
async def rows(payloads: list[dict[str, int]], messages: list[Message]) -> dict[str, BaseException] | None:
    """A batch handler: each member fails, is rejected or succeeds on its own (the rates
    above); it reports the failed ones."""
    await asyncio.sleep(WORK_SECONDS)
    failed: dict[str, BaseException] = {}
    for payload, message in zip(payloads, messages, strict=True):
        _, failure = _member(message, payload.get("seq", -1))
        if failure is not None:
            failed[message.message_id] = failure
    return failed or None


@router.batch_handler("rows_sync", max_size=10, max_wait=0.2)
def rows_sync(payloads: list[dict[str, int]], messages: list[Message]) -> None:
    """A plain-function batch handler (a thread): sleeps ``CHAOS_WORK_SECONDS``, then records
    every member as done."""
    time.sleep(WORK_SECONDS)
    for payload, message in zip(payloads, messages, strict=True):
        record(f"ok {message.message_id} {message.group_id or '-'} {payload.get('seq', -1)}")
