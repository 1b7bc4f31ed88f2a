"""The benchmark's idempotent handler, in a module of its own: a worker refuses to start a
handler module with an idempotent handler unless an idempotency store is configured, and
only the idempotency scenario configures one."""

from __future__ import annotations

from benchmarks.handlers import first, record_first, seen
from worker import Message, Router

router = Router()


@router.handler("noop-idem", idempotent=True)
async def noop_idempotent(message: Message) -> None:
    """``noop`` with an idempotency record per message: what the store costs."""
    if not first:
        record_first()
    seen.append(message.message_id)
