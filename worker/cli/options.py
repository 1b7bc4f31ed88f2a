"""What the commands' signatures are made of: the defaults, the shared options and the help
style. Typer reads every command's signature when it builds the app (for ``--help`` and
``--version`` too), so this module imports only typer and the standard library; what a
command needs to do its work (aiobotocore, the settings, rich) is imported when the command
runs (``worker.cli.common`` and the commands' bodies)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
import typer.core

DEFAULT_CONFIG = "config/worker.yaml"
DEFAULT_TOPOLOGY = "config/topology.yaml"
DEFAULT_TIMEOUT = 5.0

# -- help -------------------------------------------------------------------------------------
HELP_WIDTH = 100
"""The widest --help gets (narrower terminals: their width)."""


class HelpGroup(typer.core.TyperGroup):
    """A command group whose --help lists each command with its whole first paragraph,
    wrapped at word boundaries (click cuts it at the column width, mid-sentence, with
    "..."), and whose commands read their plain values without pydantic (``PlainValue``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Here, not in __init__: Typer adds the completion options after building the group
        # (and click the help option when asked for the parameters).
        for command in [self, *self.commands.values()]:
            for param in command.get_params(ctx):
                PlainValue.install(param)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # (typer's vendored click types)
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            text = command.short_help or (command.help or "").partition("\f")[0].split("\n\n")[0]
            rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class PlainValue:
    """Typer's conversion of an option's value, for the values whose result is certain
    without it: a string as a ``str`` option, digits as an ``int`` one, a decimal as a
    ``float`` one (within the option's ``min``/``max``), strings as a ``list[str]`` one, a
    ``bool`` as a flag.

    Typer (0.29) converts every value through a pydantic ``TypeAdapter`` built for the
    parameter on first use: importing pydantic and building the adapters of ``worker send``'s
    options cost about a third of importing aiobotocore (measured, 2 cores, Python 3.11:
    0.17 s and 0.03 s against 0.5 s). Any other value (out of range, a choice, ``1e3``, bytes), and any other
    kind of parameter, goes to Typer's own conversion, so its results and its error
    messages stay Typer's (tests/cli/test_startup.py compares the two). Where Typer's
    internals are not what this expects, nothing is installed and Typer converts as usual.
    """

    __slots__ = ("high", "kind", "low")

    KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", list[str]: "list[str]"}
    DIGITS = re.compile(r"-?[0-9]{1,15}")
    DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")

    def __init__(self, kind: str, low: float | None, high: float | None) -> None:
        self.kind, self.low, self.high = kind, low, high

    @classmethod
    def install(cls, param: Any) -> None:
        descriptor = getattr(param, "type_descriptor", None)
        info = getattr(descriptor, "parameter_info", None)
        if (
            getattr(param, "_runtime_param", False) is not None  # built already, or not Typer's
            or not callable(getattr(param, "get_runtime_param", None))
            or info is None
            or getattr(descriptor, "file_annotation", None) is not None
            or getattr(info, "parser", None) is not None
            or getattr(info, "click_type", None) is not None
            or getattr(info, "clamp", False)
        ):
            return
        kind = cls.KINDS.get(getattr(descriptor, "annotation", None))
        if kind is not None and (kind == "list[str]") == bool(param.multiple) and param.nargs == 1:
            param._runtime_param = cls(kind, getattr(info, "min", None), getattr(info, "max", None))

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """What Typer's ``RuntimeParam.coerce`` returns for ``value``."""
        if value is None:
            return () if self.kind == "list[str]" else None
        plain = self.convert(value)
        if plain is not None:
            return plain
        param._runtime_param = None  # Typer's own, from now on
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)

    def convert(self, value: Any) -> Any:
        """``value`` converted, or None: not certain (Typer converts it)."""
        if self.kind == "str":
            return value if isinstance(value, str) else None
        if self.kind == "bool":
            return value if isinstance(value, bool) else None
        if self.kind == "list[str]":
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            return list(value) if ok else None
        number: float | None = None
        if isinstance(value, str):
            if (self.DIGITS if self.kind == "int" else self.DECIMAL).fullmatch(value):
                number = int(value) if self.kind == "int" else float(value)
        elif type(value) is int or (type(value) is float and self.kind == "float"):
            number = value if self.kind == "int" else float(value)
        if number is None or (self.low is not None and number < self.low):
            return None
        return None if self.high is not None and number > self.high else number


HELP_SETTINGS: dict[str, Any] = {
    # click's plain help, not typer's rich panels: flags get no "<bool>" type column, and
    # each help text is one paragraph wrapped at word boundaries (typer's rich mode keeps
    # the docstrings' own line breaks, and so breaks sentences mid-line).
    "rich_markup_mode": None,
    "cls": HelpGroup,
    "context_settings": {"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
}
"""The keyword arguments of every ``typer.Typer`` of the CLI (the app and its groups)."""


# -- options shared by several commands -----------------------------------------------------
ConfigOption = Annotated[
    str,
    typer.Option(
        "--config",
        "-c",
        envvar="WORKER_CONFIG",
        help="The worker configuration (YAML).",
        show_envvar=True,
    ),
]
TopologyOption = Annotated[
    str,
    typer.Option(
        "--topology",
        "-t",
        envvar="WORKER_TOPOLOGY",
        help="The topology file (queues, topics, subscriptions).",
        show_envvar=True,
    ),
]
EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help=(
            "Endpoint of every AWS service the command calls (SQS, SNS, S3, DynamoDB, CloudWatch), "
            "e.g. LocalStack; AWS_ENDPOINT_URL_<SERVICE> overrides it for one service. "
            "Default: AWS_ENDPOINT_URL, else AWS."
        ),
        rich_help_panel="AWS",
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region", help="AWS region. Default: AWS_REGION, AWS_DEFAULT_REGION.", rich_help_panel="AWS"
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.1,
        help="Seconds to wait for an answer from AWS, retries included, before giving up.",
        rich_help_panel="AWS",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
