"""``worker run``'s own edge work: what start-up built is frozen out of the garbage
collector's walks once the worker runs, not before (start-up objects still being made)."""

from __future__ import annotations

import asyncio
import gc
import types

import pytest

from worker.cli import run


async def test_start_up_objects_are_frozen_once_the_worker_has_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # the test process stays unfrozen
    supervisor = types.SimpleNamespace(started=asyncio.Event())
    task = asyncio.create_task(run._freeze_after_start(supervisor))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert frozen == []  # still starting
    supervisor.started.set()
    await asyncio.wait_for(task, 1)
    assert frozen == [True]
