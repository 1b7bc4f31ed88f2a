"""The downstream-outage run's handler (``benchmarks.outage``): "payments" is down while
$OUTAGE_DOWN_FILE exists (every call raises, as a refused connection would). With
$OUTAGE_BREAKER=on the route declares the dependency (its circuit breaker guards it).
Each success appends ``message_id receive_count monotonic`` to $OUTAGE_RECORD."""

from __future__ import annotations

import os
import time

from worker import Message, Router

router = Router()
DOWN = os.environ.get("OUTAGE_DOWN_FILE", "")
NEEDS = ["payments"] if os.environ.get("OUTAGE_BREAKER") == "on" else []
_out = None


@router.handler("pay", dependencies=NEEDS)
async def pay(payload: dict[str, object], message: Message) -> None:
    global _out
    if os.path.exists(DOWN):  # noqa: ASYNC240 - the benchmark's switch, a stat call
        raise ConnectionError("payments: connection refused")
    if _out is None:
        _out = open(os.environ["OUTAGE_RECORD"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    _out.write(f"{message.message_id} {message.receive_count} {time.monotonic():.3f}\n")
