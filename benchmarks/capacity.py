"""Heartbeat capacity: how many leases the heartbeat keeps alive when every
ChangeMessageVisibilityBatch call takes 50, 100, 300 ms (or 1 s), with 0 lapses.

The settings accept ``max_in_flight`` only up to what the heartbeat keeps alive at 1 s per
call (10 x heartbeat_calls x interval; interval = visibility / 3). So the check runs at the
settings' declared capacity: ``in_flight`` messages, with the fewest ``heartbeat_calls``
the settings accept for them at a short visibility timeout, each held by its handler for
several visibility timeouts while the proxy delays every ChangeMessageVisibilityBatch.

A lapse is any of: a ``lease_overdue`` event (a live lease whose visibility ran out, by the
worker's own clock), a message handled twice (received again after its visibility ran
out), or a message visible in the queue while every message should be held. The row also
gives the settings' own capacity at that latency (``QueueSettings.heartbeat_capacity``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING

from pydantic import ValidationError

from benchmarks.aggregate import worker_log_events
from benchmarks.result import Capacity
from worker.settings import QueueSettings

if TYPE_CHECKING:
    from benchmarks.harness import Bench

OP = "ChangeMessageVisibilityBatch"


def capacity_settings(in_flight: int, visibility: int) -> QueueSettings:
    """The queue settings with the fewest heartbeat_calls that accept ``in_flight``."""
    pollers = max(1, min(8, in_flight // 10))
    for calls in range(1, 65):
        try:
            return QueueSettings(
                handlers=["benchmarks.handlers"],
                pollers=pollers,
                max_in_flight=in_flight,
                visibility_timeout=visibility,
                heartbeat_calls=calls,
            )
        except ValidationError:
            continue
    raise ValueError(f"no heartbeat_calls up to 64 keeps {in_flight} leases at visibility {visibility}s")


async def heartbeat_capacity(
    bench: Bench, latency: float, in_flight: int, visibility: int, hold_factor: float
) -> Capacity:
    qs = capacity_settings(in_flight, visibility)
    hold = hold_factor * visibility
    row = Capacity(
        latency=latency,
        in_flight=in_flight,
        visibility=visibility,
        heartbeat_calls=qs.heartbeat_calls,
        hold=hold,
        model_capacity=qs.heartbeat_capacity(latency),
        declared_capacity=qs.heartbeat_capacity(1.0),
    )
    name, url = await bench.queue(visibility=visibility)
    await bench.preload(url, in_flight, "hold", body={"hold": hold})
    bench.proxy.faults(op_latency={OP: latency})
    bench.proxy.reset()
    record = bench.workdir / f"hb-{uuid.uuid4().hex[:6]}.json"
    config = bench.worker_config(
        name,
        pollers=qs.pollers,
        max_in_flight=qs.max_in_flight,
        visibility_timeout=qs.visibility_timeout,
        heartbeat_calls=qs.heartbeat_calls,
    )
    proc = bench.spawn_worker(config, record)
    deadline = time.monotonic() + 90 + hold
    next_look = 0.0
    try:
        while True:
            counts = bench.proxy.counts()
            row.held = max(row.held, int(counts["received"]) - int(counts["deleted"]))
            if counts["deleted"] >= in_flight:
                break
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"heartbeat capacity: {counts['deleted']} of {in_flight} done by the deadline"
                )
            if proc.poll() is not None:
                raise RuntimeError(
                    "heartbeat capacity: the worker exited; see its log: " + str(record.with_suffix(".log"))
                )
            # Every message is held (received, none deleted yet): any visible one lapsed.
            if counts["received"] >= in_flight and counts["deleted"] == 0 and now >= next_look:
                row.visible_max = max(row.visible_max, await bench.visible(url))
                next_look = now + 1.0
            await asyncio.sleep(0.1)
    except BaseException:
        proc.kill()
        raise
    row.extend_calls = int(counts["ops"].get(OP, 0))
    bench.stop([proc])
    await bench.delete_queue(url)
    events, _ = worker_log_events(record.with_suffix(".log"))
    row.overdue = events["lease_overdue"]
    row.extend_failed = events["visibility_extend_failed"] + events["visibility_extend_retry"]
    seen: list[str] = json.loads(record.read_text())["seen"] if record.exists() else []
    row.duplicates = len(seen) - len(set(seen))
    row.losses = in_flight - len(set(seen))
    print(
        f"  heartbeat at {latency:g} s/call: {in_flight} leases (calls {qs.heartbeat_calls}, visibility "
        f"{visibility}s, hold {hold:g}s): held {row.held}, {row.extend_calls} extension calls, overdue "
        f"{row.overdue}, failed {row.extend_failed}, dup {row.duplicates}, visible {row.visible_max}",
        flush=True,
    )
    return row
