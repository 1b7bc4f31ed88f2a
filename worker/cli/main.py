"""The ``worker`` command: one Typer app; every failure is one line and a documented exit
code (worker/errors.py, README "Exit codes")."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from worker.cli import dlq, inspect, messages, provision, run
from worker.cli.common import explain, report
from worker.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, WorkerError

app = typer.Typer(
    name="worker",
    help="An asyncio worker service for AWS SQS and SNS: consume, provision, send, inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        try:
            v = version("sqs-worker")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            v = "unknown"
        typer.echo(f"worker (sqs-worker) {v}")
        raise typer.Exit()


@app.callback()
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


app.command()(run.run)
app.command()(run.check)
app.command()(demo)
app.command()(provision.provision)
app.command()(messages.send)
app.command()(messages.publish)
app.add_typer(dlq.app)
app.command()(inspect.stats)
app.command("iam-policy")(inspect.iam_policy)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
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
