"""The ``worker`` command: one Typer app; every failure is one line and a documented exit
code (worker/errors.py, docs/configuration.md "Exit codes").

A command named first on the command line (``worker run ...``, ``worker send ...``) is
parsed by the same app holding only that command (same options, help and errors): Typer
reads every command's signature when it builds the app, and a starting worker, or a
``worker send``, need not import nor build the others (``worker --version`` is answered by
the app holding only ``run``). The command modules import what they need to work when they
run (aiobotocore, the settings, rich: docs/benchmarks.md, "Command start-up")."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from worker.cli.options import HELP_SETTINGS
from worker.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, WorkerError


def _version(value: bool) -> None:
    if value:
        import worker

        typer.echo(f"worker ({worker.DISTRIBUTION}) {worker.__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """An asyncio worker service for AWS SQS and SNS."""


def demo(
    endpoint_url: Annotated[
        str | None, typer.Option(help="Use this SQS/SNS endpoint instead of the embedded server.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """End to end on an embedded SQS/SNS server: provision, publish, consume, report."""
    from worker.cli.demo import run_demo

    raise typer.Exit(run_demo(endpoint_url=endpoint_url, log_level=log_level.lower()))


COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.cli.run", "run"),
    "check": ("worker.cli.run", "check"),
    "demo": ("worker.cli.main", "demo"),
    "provision": ("worker.cli.provision", "provision"),
    "send": ("worker.cli.messages", "send"),
    "publish": ("worker.cli.messages", "publish"),
    "dlq": ("worker.cli.dlq", "app"),
    "stats": ("worker.cli.inspect", "stats"),
    "iam-policy": ("worker.cli.inspect", "iam_policy"),
}
"""Every command, in the order --help lists them: its module and function (``dlq``: its
group)."""


def build_app(only: str | None = None) -> typer.Typer:
    """The ``worker`` app: every command, or just the one named ``only``."""
    app = typer.Typer(
        name="worker",
        help="An asyncio worker service for AWS SQS and SNS: consume, provision, send, inspect.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        **HELP_SETTINGS,
    )
    app.callback()(_root)
    for name in COMMANDS if only is None else [only]:
        module, attribute = COMMANDS[name]
        command = getattr(importlib.import_module(module), attribute)
        if isinstance(command, typer.Typer):
            app.add_typer(command)
        else:
            app.command(name)(command)
    return app


@functools.cache
def _app(only: str | None = None) -> typer.Typer:
    return build_app(only)


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the full app, built on first use
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # The command named first is the only one the app needs. `worker --version` (eager:
        # it answers before any command is looked at) needs none: the app holding `run`.
        first = args[0] if args else None
        app = _app("run" if first in ("--version", "-V") else first if first in COMMANDS else None)
        result = app(args=args, prog_name="worker", standalone_mode=False)
    except typer.TyperException as exc:  # usage: unknown command or option, bad value
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"worker: error: {exc.format_message()}{hint}\n")
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except typer.Abort:
        return EXIT_INTERRUPTED
    except WorkerError as exc:
        from worker.cli.common import report

        return report(exc)
    except BrokenPipeError:  # piped into head & co.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        from worker.cli.common import explain, report

        explained = explain(exc, None)
        if explained is None:
            raise
        return report(explained)
    return result if isinstance(result, int) else EXIT_OK
