"""What the commands print: rich tables sized to their content, progress with rate and ETA
on stderr, JSON that parsers read (one document, or JSON lines under ``--watch``).

Data goes to stdout, everything for the human at the terminal (progress, warnings,
errors) to stderr, so ``worker stats --json | jq`` works.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def _console(stream: Any) -> Console:
    # Not a terminal (a pipe, a file, a test): no colour, and no width limit, so that a long
    # queue name never folds a table row.
    terminal = stream.isatty()
    return Console(
        file=stream,
        width=None if terminal else 10_000,
        no_color=not terminal,
        highlight=False,
        soft_wrap=not terminal,
    )


def out() -> Console:
    return _console(sys.stdout)


def err() -> Console:
    return _console(sys.stderr)


def warn(message: str) -> None:
    err().print(Text(f"worker: warning: {message}"))


def info(message: str) -> None:
    err().print(Text(message))


def print_json(value: Any, *, line: bool = False) -> None:
    """One JSON document; ``line``: compact on one line (JSON lines)."""
    text = (
        json.dumps(value, separators=(",", ":"), default=str)
        if line
        else json.dumps(value, indent=2, default=str)
    )
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = ()) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=True, overflow="ignore")
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    return t


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s")


@contextlib.contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr with count, rate and ETA; yields ``update(done, total)``.
    Not on a terminal it prints the final state once."""
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err(),
        transient=False,
    )
    task = bar.add_task(label, total=total)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
