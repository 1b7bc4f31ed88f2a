"""The ``worker`` command: one Typer app; every failure is one line and a documented exit
code (worker/errors.py, docs/configuration.md "Exit codes").

``worker run`` is parsed by the same app holding only ``run`` (same options, help and
errors), so that a starting worker does not import the operator commands (rich tables and
progress, the topology, provisioning, DLQ tools)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from worker.cli.common import HELP_SETTINGS, explain, report
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


def build_app(only_run: bool = False) -> typer.Typer:
    """The ``worker`` app: every command, or (``only_run``) just ``worker run``."""
    from worker.cli import run

    app = typer.Typer(
        name="worker",
        help="An asyncio worker service for AWS SQS and SNS: consume, provision, send, inspect.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        **HELP_SETTINGS,
    )
    app.callback()(_root)
    app.command()(run.run)
    if only_run:
        return app
    from worker.cli import dlq, inspect, messages, provision

    app.command()(run.check)
    app.command()(demo)
    app.command()(provision.provision)
    app.command()(messages.send)
    app.command()(messages.publish)
    app.add_typer(dlq.app)
    app.command()(inspect.stats)
    app.command("iam-policy")(inspect.iam_policy)
    return app


@functools.cache
def _app(only_run: bool = False) -> typer.Typer:
    return build_app(only_run)


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the full app, built on first use
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app = _app(only_run=bool(args) and args[0] == "run")
        result = app(args=args, prog_name="worker", standalone_mode=False)
    except typer.TyperException as exc:  # usage: unknown command or option, bad value
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"worker: error: {exc.format_message()}{hint}\n")
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except typer.Abort:
        return EXIT_INTERRUPTED
    except WorkerError as exc:
        return report(exc)
    except BrokenPipeError:  # piped into head & co.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        explained = explain(exc, None)
        if explained is None:
            raise
        return report(explained)
    return result if isinstance(result, int) else EXIT_OK
