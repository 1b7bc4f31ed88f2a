"""Handlers the benchmark runs. Each records what it saw in memory and writes it to
$BENCH_RECORD when the worker exits (so recording costs nothing measurable per message)."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import time

from worker import Message, Router

router = Router()
seen: list[str] = []
fifo_order: list[tuple[str, int]] = []
latencies: list[float] = []


@router.handler("noop")
async def noop(message: Message) -> None:
    seen.append(message.message_id)


@router.handler("io")
async def io(message: Message) -> None:
    await asyncio.sleep(0.05)
    seen.append(message.message_id)


@router.handler("block")
def block(message: Message) -> None:
    time.sleep(0.02)
    seen.append(message.message_id)


@router.handler("fifo")
async def fifo(payload: dict[str, int], message: Message) -> None:
    seen.append(message.message_id)
    fifo_order.append((message.group_id or "", payload["seq"]))


@router.handler("latency")
async def latency(payload: dict[str, float], message: Message) -> None:
    latencies.append(time.time() - payload["t"])
    seen.append(message.message_id)


@atexit.register
def _dump() -> None:
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"seen": seen, "fifo": fifo_order, "latencies": latencies}, f)
