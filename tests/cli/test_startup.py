"""The commands start with what they use (issue 33; docs/benchmarks.md, "Command start-up").

Nothing is timed here: each check is on what a command leaves in ``sys.modules``, in a
fresh interpreter. ``worker --help`` and ``worker --version`` import neither aiobotocore
nor the settings, pydantic or rich (Typer needs the commands' signatures, built from
``worker.cli.options``); ``worker send`` imports aiobotocore and not the S3 store, rich,
nor Typer's pydantic conversion of option values (``worker.cli.options.PlainValue``, whose
results are checked against Typer's own below). Each command named first is parsed by an
app holding only it, with the same help as the full app's; and the console script freezes a
command's objects at exit, for the interpreter's last collections to skip.
"""

from __future__ import annotations

import atexit
import gc
import json
import subprocess
import sys
from typing import Any

import pytest
import typer
import typer.main
from typer._coercion import build_runtime_param

from tests.conftest import Aws
from tests.servers import ROOT
from worker.cli import entry
from worker.cli import main as cli_main
from worker.cli.main import COMMANDS, build_app, main
from worker.cli.options import PlainValue

PROBE = """
import json, sys
from worker.cli.main import main
code = main(sys.argv[1:])
sys.stdout.write("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""

HEAVY = {
    "aiobotocore",
    "botocore",
    "aiohttp",
    "boto3",
    "aioboto3",
    "pydantic",
    "pydantic_settings",
    "yaml",
    "rich",
    "structlog",
    "asyncio",
    "worker.aws",
    "worker.settings",
    "worker.producer",
    "worker.cli.common",
    "worker.cli.output",
    "worker.ops.request_cost",
    "worker.runtime.supervisor",
}
"""What a command that prints help or its version has no use for."""


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """``worker ARGS`` in a fresh interpreter: its exit code, the modules it imported, its
    stdout (the probe's own last line removed)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    output, _, last = done.stdout.rstrip("\n").rpartition("\n")
    assert last.startswith("{"), done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(last)
    return result["code"], set(result["modules"]), output


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["-V"], ["send", "--help"], ["run", "--help"], ["dlq", "show", "--help"]],
)
def test_help_and_version_import_no_aws_settings_or_rich(args: list[str]) -> None:
    code, modules, output = probe(*args)
    assert code == 0
    assert output.strip()
    assert not HEAVY & modules, sorted(HEAVY & modules)
    assert "typer._adapters" not in modules  # Typer's pydantic conversion of values


def test_send_help_is_the_commands_help() -> None:
    code, _, output = probe("send", "--help")
    assert code == 0
    assert output.startswith("Usage: worker send [OPTIONS] {QUEUE}")
    assert "--s3-bucket" in output
    assert "--endpoint-url" in output


SEND_SKIPS = {
    "boto3",
    "aioboto3",
    "worker.messages.payload_store",  # the S3 store: only with --s3-bucket
    "rich",  # the progress bar: only for more than one message
    "typer._adapters",
    "opentelemetry",  # tracing: only when the OTEL_* variables ask for it
    "worker.cli.inspect",
    "worker.cli.dlq",
    "worker.cli.provision",
    "worker.cli.run",
    "worker.ops.topology",
}


async def test_send_imports_aiobotocore_and_not_what_it_does_not_use(aws: Aws) -> None:
    queue = await aws.queue()
    args = ["send", queue.name, "--type", "t", "--body", '{"n": 1}', "--endpoint-url", aws.endpoint]
    code, modules, output = probe(*args, "--region", "us-east-1")
    assert code == 0, output
    assert output.startswith("sent ")
    assert "aiobotocore.session" in modules
    assert not SEND_SKIPS & modules, sorted(SEND_SKIPS & modules)


async def test_send_imports_no_settings_models(aws: Aws) -> None:
    queue = await aws.queue()
    args = ["send", queue.name, "--type", "t", "--body", "{}", "--endpoint-url", aws.endpoint]
    code, modules, output = probe(*args, "--region", "us-east-1")
    assert code == 0, output
    assert not {"pydantic", "pydantic_settings", "yaml", "worker.settings"} & modules


@pytest.mark.parametrize("name", [*COMMANDS, "dlq show", "dlq redrive"])
def test_a_command_alone_has_the_full_apps_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*name.split(), "--help"]
    capsys.readouterr()
    assert main(args) == 0  # the app holding only this command
    alone = capsys.readouterr().out
    build_app()(args=args, prog_name="worker", standalone_mode=False)
    assert alone == capsys.readouterr().out
    assert alone.startswith(f"Usage: worker {name}")


# -- PlainValue: Typer's results, without pydantic ------------------------------------------
SAMPLES: list[Any] = [
    *["", "abc", "0", "007", "-1", "5", "900", "901", "1.5", "0.1", "0.05", "-0", "1e3"],
    *[" 5", "5 ", "+5", "1_000", "0x10", "inf", "nan", "1.", ".5", "99999999999999999999"],
    *[0, 5, -1, 901, 262_144, 10**7, 0.0, 5.0, 0.1, 2.5, True, False],
    *[(), ("a=b",), ("a=b", "c"), ["x"], ("x", 1)],
]


def _params() -> list[tuple[str, Any, Any]]:
    """(command/param, the click parameter, its command) for every parameter of every command."""
    found = []

    def walk(command: Any, path: str) -> None:
        for param in command.params:
            found.append((f"{path}/{param.name}", param, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(build_app()), "worker")
    return found


@pytest.mark.parametrize(
    ("where", "param", "command"), _params(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_plain_values_convert_as_typer_does(where: str, param: Any, command: Any) -> None:
    param._runtime_param = None
    PlainValue.install(param)
    plain = param._runtime_param
    if not isinstance(plain, PlainValue):
        return  # Typer converts this one (a choice, a path, ...)
    ctx = typer.Context(command)
    typers = build_runtime_param(param.type_descriptor)
    for value in SAMPLES:
        mine = plain.convert(value)
        try:
            theirs = typers.coerce(value, param=param, ctx=ctx)
        except Exception:
            assert mine is None, (where, value, mine)
            continue
        if mine is not None:
            assert (mine, type(mine)) == (theirs, type(theirs)), (where, value)
    assert plain.coerce(None, param=param, ctx=ctx) == typers.coerce(None, param=param, ctx=ctx)


def test_a_value_plain_values_are_unsure_of_gets_typers_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "q", "--body", "{}", "--delay", "1e3"]) == 2
    assert "Invalid value for '--delay'" in capsys.readouterr().err


def test_the_console_script_freezes_the_commands_objects_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", lambda handler, *_, **__: registered.append(handler))
    monkeypatch.setattr(cli_main, "main", lambda argv: 0)
    monkeypatch.setattr(sys, "argv", ["worker", "--version"])
    assert entry.main() == 0
    assert registered == [gc.freeze]  # at exit: the interpreter's last collections skip them
