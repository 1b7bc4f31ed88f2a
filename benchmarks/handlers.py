"""Handlers the benchmark runs. Each records what it saw in memory and writes it to
$BENCH_RECORD when the worker exits (so recording costs nothing measurable per message).

``first`` is (time.monotonic(), time.process_time()) when the first message reached a
handler: the benchmark's "first message handled", and the CPU the process spent to get
there (its start-up). With $BENCH_PROFILE set, a cProfile of the event loop's thread runs
from that moment to the exit and is written there (start-up left out)."""

from __future__ import annotations

import asyncio
import atexit
import cProfile
import json
import os
import threading
import time

from worker import Message, Resources, Router

router = Router()
seen: list[str] = []
fifo_order: list[tuple[str, int]] = []
latencies: list[float] = []
first: list[float] = []
profile: list[cProfile.Profile] = []


_loop: list[asyncio.AbstractEventLoop] = []


def record_first() -> None:
    first.extend((time.monotonic(), time.process_time()))
    if os.environ.get("BENCH_PROFILE"):
        if threading.current_thread() is threading.main_thread() or not _loop:
            _profile()
        else:  # a plain handler's thread: profile the event loop's thread all the same
            _loop[0].call_soon_threadsafe(_profile)


def _profile() -> None:
    if not profile:
        profile.append(cProfile.Profile())
        profile[0].enable()


if os.environ.get("BENCH_PROFILE"):  # only then: nothing added to a measured start-up

    @router.on_startup
    async def _event_loop(resources: Resources) -> None:
        _loop.append(asyncio.get_running_loop())


@router.handler("noop")
async def noop(message: Message) -> None:
    if not first:
        record_first()
    seen.append(message.message_id)


@router.handler("io")
async def io(message: Message) -> None:
    if not first:
        record_first()
    await asyncio.sleep(0.05)
    seen.append(message.message_id)


@router.handler("block")
def block(message: Message) -> None:
    if not first:
        record_first()
    time.sleep(0.02)
    seen.append(message.message_id)


@router.handler("fifo")
async def fifo(payload: dict[str, int], message: Message) -> None:
    if not first:
        record_first()
    seen.append(message.message_id)
    fifo_order.append((message.group_id or "", payload["seq"]))


@router.handler("latency")
async def latency(payload: dict[str, float], message: Message) -> None:
    if not first:
        record_first()
    latencies.append(time.time() - payload["t"])
    seen.append(message.message_id)


@router.handler("hold")
async def hold(payload: dict[str, float], message: Message) -> None:
    """Keeps its message (and its lease) for ``payload["hold"]`` seconds. Recorded when it
    starts: a message whose lease lapsed and that is received again shows twice."""
    if not first:
        record_first()
    seen.append(message.message_id)
    await asyncio.sleep(payload["hold"])


@atexit.register
def _dump() -> None:
    if profile:
        profile[0].disable()
        profile[0].dump_stats(os.environ["BENCH_PROFILE"])
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"seen": seen, "fifo": fifo_order, "latencies": latencies, "first": first}, f)
