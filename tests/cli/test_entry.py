"""The console script: ``worker run`` starts with the garbage collector off (its start-up
builds objects that live as long as the process; ``worker.cli.run`` switches it back on),
every other command with it on, and it is on again whenever the command returns."""

from __future__ import annotations

import gc
import sys

import pytest

from worker.cli import entry, main


@pytest.mark.parametrize(("args", "collector_on"), [(["run", "--help"], False), (["check", "--help"], True)])
def test_the_console_script_starts_only_worker_run_with_the_collector_off(
    monkeypatch: pytest.MonkeyPatch, args: list[str], collector_on: bool
) -> None:
    seen: list[tuple[list[str], bool]] = []

    def cli(argv: list[str]) -> int:
        seen.append((argv, gc.isenabled()))
        return 7

    monkeypatch.setattr(main, "main", cli)
    monkeypatch.setattr(sys, "argv", ["worker", *args])
    try:
        assert entry.main() == 7
        assert seen == [(args, collector_on)]
        assert gc.isenabled()  # on again when the command returns
    finally:
        gc.enable()
