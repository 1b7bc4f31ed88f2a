"""The console script ``worker`` (and ``python -m worker``): the process's edge.

``worker run`` starts with the garbage collector off. Start-up (imports, botocore's service
model, settings, the handler modules) builds objects that live as long as the process, and
the collections their allocations trigger meanwhile (measured on Python 3.12: one full
collection, about a dozen of the middle generation and 120 young ones, about 50 ms of CPU)
would delay the first message for little: ``worker.cli.run`` moves them to the permanent
generation and switches the collector back on once every consumer runs (``gc.freeze``: the
pattern the gc module's documentation gives for start-up state); whatever way the command
ends, it is on again when it returns. Every other command runs with the collector on. (The
``worker`` package's own ``__init__``, imported before this module, runs with it on.)"""

from __future__ import annotations

import gc
import sys


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        gc.disable()
    try:
        from worker.cli.main import main as cli

        return cli(args)
    finally:
        gc.enable()
