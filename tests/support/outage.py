"""An outage of SQS's deletes and extensions, through the fault proxy (benchmarks/proxy.py), for
the tests of what a worker does with a handled message whose delete did not land in time."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.harness import Proxy

OUTAGE: dict[str, Any] = {
    "batch_entry_fail_rate": 1.0,  # every delete entry fails (retryable)
    "blackhole_ops": {"ChangeMessageVisibilityBatch": 50},  # every extension hangs
    "blackhole_op_seconds": 30,
}
SHORT_LEASES: dict[str, Any] = {"visibility_timeout": 2, "heartbeat_interval": 1, "wait_time_seconds": 1}
"""Queue settings under which the outage outlasts a lease within seconds."""


async def begin(proxy: Proxy) -> None:
    await asyncio.to_thread(proxy.faults, **OUTAGE)


async def deletes_land_after_the_visibility(proxy: Proxy) -> None:
    """From now on receives answer nothing; the outage outlasts the 2 s visibility (LocalStack
    applies it ~0.7 s late), then deletes go through. Receives stay empty until
    ``proxy.faults()``, so no new delivery can take over the pending delete first."""
    await asyncio.to_thread(proxy.faults, empty_receives=True, **OUTAGE)
    await asyncio.sleep(4)
    await asyncio.to_thread(proxy.faults, empty_receives=True)
