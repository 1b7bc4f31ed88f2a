"""The ``worker`` command (run, check, demo) and the operator subcommands; the console
script enters at ``worker.cli.entry.main``."""
