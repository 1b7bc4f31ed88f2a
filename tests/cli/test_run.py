"""``worker run``'s own edge work: soon after the worker runs, start-up's garbage is collected
once, what start-up built is frozen out of the collector's walks and the collector is on
again (not before: start-up objects still being made, the first messages still being
handled)."""

from __future__ import annotations

import asyncio
import gc
import types

import pytest

from worker.cli import run


def _record(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """gc's collect/freeze/enable recorded, not done (the test process stays as it is)."""
    calls: list[str] = []
    for name in ("collect", "freeze", "enable"):
        monkeypatch.setattr(gc, name, lambda *_, n=name: calls.append(n))
    return calls


async def test_start_up_garbage_is_collected_and_frozen_soon_after_the_worker_has_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _record(monkeypatch)
    monkeypatch.setattr(run, "FREEZE_AFTER", 0.2)
    supervisor = types.SimpleNamespace(started=asyncio.Event())
    task = asyncio.create_task(run._freeze_after_start(supervisor))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert calls == []  # still starting
    supervisor.started.set()
    await asyncio.sleep(0.1)
    assert calls == []  # started: the first messages go first
    await asyncio.wait_for(task, 1)
    assert calls == ["collect", "freeze", "enable"]
