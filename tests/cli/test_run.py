"""``worker run``'s own edge work: once the worker runs, what start-up built is frozen out of
the garbage collector's walks and the collector is on again (the console script starts
``worker run`` with it off); not before: start-up objects are still being made."""

from __future__ import annotations

import asyncio
import gc
import types

import pytest

from worker.cli import run


async def test_start_up_objects_are_frozen_and_the_collector_is_on_once_the_worker_has_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    for name in ("collect", "freeze", "enable"):  # recorded, not done: the test process stays as it is
        monkeypatch.setattr(gc, name, lambda *_, n=name: calls.append(n))
    supervisor = types.SimpleNamespace(started=asyncio.Event())
    task = asyncio.create_task(run._freeze_after_start(supervisor))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert calls == []  # still starting
    supervisor.started.set()
    await asyncio.wait_for(task, 1)
    assert calls == ["freeze", "enable"]  # no full collection on the way
