"""The console script ``worker`` (and ``python -m worker``): the process's edge.

``worker run`` starts with the garbage collector off. Start-up (imports, botocore's service
model, settings, the handler modules) builds objects that live as long as the process, and
the collections their allocations trigger meanwhile (measured on Python 3.12: one full
collection, about a dozen of the middle generation and 120 young ones, about 50 ms of CPU)
would delay the first message for little: ``worker.cli.run`` moves them to the permanent
generation and switches the collector back on once every consumer runs (``gc.freeze``: the
pattern the gc module's documentation gives for start-up state); whatever way the command
ends, it is on again when it returns. Every other command runs with the collector on. (The
``worker`` package's own ``__init__``, imported before this module, runs with it on.)

Every command's objects die with the process: at exit they are frozen (``gc.freeze``, an
``atexit`` handler), so that the interpreter's last collections do not walk them one by
one. For ``worker send`` that walk (botocore's service models, aiohttp's session) took
about 0.14 s of 0.9 s (measured, 2 cores, Python 3.11). What is closed, flushed or exported
at exit is done before, by the command and by the ``atexit`` handlers, as before."""

from __future__ import annotations

import atexit
import gc
import sys


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        gc.disable()
    atexit.register(gc.freeze)
    try:
        from worker.cli.main import main as cli

        return cli(args)
    finally:
        gc.enable()
