"""A handler whose downstream ("payments") is down while $DOWN_FILE exists: every call
fails then, as a real outage would (a connection error, not a DependencyUnavailable). Each
success appends ``message_id receive_count`` to $RECORD_FILE."""

from __future__ import annotations

import os

from worker import Message, Router

router = Router()


@router.handler("charge", dependencies=["payments"])
async def charge(payload: dict[str, object], message: Message) -> None:
    if os.path.exists(os.environ["DOWN_FILE"]):  # noqa: ASYNC240 - a test switch
        raise ConnectionError("payments: connection refused")
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as f:
        f.write(f"{message.message_id} {message.receive_count}\n")
