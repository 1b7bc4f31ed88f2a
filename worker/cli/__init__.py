"""The ``worker`` command (run, check, demo) and the operator subcommands."""

from worker.cli.main import main

__all__ = ["main"]
