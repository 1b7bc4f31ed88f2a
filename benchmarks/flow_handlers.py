"""The rate run's handler (``benchmarks.flow``): appends the wall time each message starts
to $FLOW_RECORD."""

from __future__ import annotations

import os
import time

from worker import Router

router = Router()
_out = None


@router.handler("tick")
async def tick(payload: dict[str, object]) -> None:
    global _out
    if _out is None:
        _out = open(os.environ["FLOW_RECORD"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    _out.write(f"{time.time():.4f}\n")
