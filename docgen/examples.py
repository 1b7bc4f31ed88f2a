"""The code blocks of README.md and docs/, checked so that they cannot rot (tests/docs).

Every fenced block is checked by its language; an HTML comment on the line before the
fence (blank lines between allowed) changes what is done with it:

- ``yaml``: parses, and validates as a worker configuration or as a topology (whichever the
  keys show; both are tried when they show neither). A fragment may leave out what it does
  not show: a configuration without ``queues`` gets a placeholder queue, a queue without
  ``handlers`` a placeholder module; a topology gets the queues and topics it names but does
  not declare. ``<!-- check: parse -->``: YAML that is neither (compose, Kubernetes): parsed only.
- ``python``: compiles (top-level ``await`` allowed). ``<!-- check: run -->``: also runs, as
  a module, and every ``test_*`` function it defines is called (``async`` ones too); messages
  after ``run`` go through its ``router`` with ``worker.testing.HandlerKit``, each
  ``TYPE BODY -> OUTCOME`` (BODY: JSON), e.g.
  ``<!-- check: run; order.placed {"order_id": "1"} -> succeeded -->``.
- ``pycon``: runs as a doctest.
- ``sh``, ``bash``, ``shell``, ``console`` (lines after ``$ ``): each ``worker …`` command
  (also as ``python3 -m uv run [--project DIR] worker …``) parses against the real CLI,
  options and their values included, without running.
- ``json``, ``toml``: parse.
- ``<!-- check: skip REASON -->``: not checked.

``problems(paths)`` returns every failure as ``FILE:LINE: why``.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import doctest
import io
import json
import os
import re
import shlex
import sys
import tomllib
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*check:\s*(?P<what>.*?)\s*-->\s*$")
_SHELLS = frozenset({"sh", "bash", "shell", "console", "shell-session", "zsh"})


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    """The line of the opening fence (1-based)."""
    lang: str
    info: str
    text: str
    """The content, the fence's indentation removed."""
    marker: str | None = None
    """What ``<!-- check: ... -->`` before the fence says."""

    def where(self, offset: int = 0) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line + offset}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every page under docs/ (the generated reference is not on disk)."""
    pages = sorted(
        p for p in (root / "docs").rglob("*.md") if "reference" not in p.relative_to(root / "docs").parts[:1]
    )
    return [root / "README.md", *pages]


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of a Markdown file, nested ones (in a longer fence) left inside."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.group("indent"), opening.group("fence"), opening.group("info")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and not closing.group("info")
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marked = _MARKER.match(lines[k]) if k >= 0 else None
        lang = info.split()[0].lstrip("{.").rstrip("}").lower() if info else ""
        found.append(
            Block(path, i + 1, lang, info, "\n".join(body) + "\n", marked.group("what") if marked else None)
        )
        i = j + 1
    return found


def problems(paths: Iterable[Path]) -> list[str]:
    """Every failing block of ``paths``, as ``FILE:LINE: why``."""
    out: list[str] = []
    for path in paths:
        for block in blocks(path):
            out.extend(check(block))
    return out


def check(block: Block) -> list[str]:
    """What is wrong with one block (nothing: [])."""
    marker = (block.marker or "").strip()
    word = marker.split(";", 1)[0].split(None, 1)[0] if marker else ""
    if word == "skip":
        return []
    if word not in ("", "parse", "run"):
        return [f"{block.where()}: unknown check marker {marker!r} (skip, parse or run)"]
    try:
        if block.lang in ("yaml", "yml"):
            return check_yaml(block, parse_only=word == "parse")
        if block.lang in ("python", "py", "python3"):
            return check_python(block, run=marker if word == "run" else None)
        if block.lang == "pycon":
            return check_pycon(block)
        if block.lang in _SHELLS:
            return check_shell(block)
        if block.lang == "json":
            json.loads(block.text)
        elif block.lang == "toml":
            tomllib.loads(block.text)
        elif word == "run":
            return [f"{block.where()}: 'run' is for python blocks"]
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        return [f"{block.where()}: not valid {block.lang}: {_one_line(str(exc))}"]
    return []


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- YAML -------------------------------------------------------------------------------------


def check_yaml(block: Block, *, parse_only: bool = False) -> list[str]:
    try:
        documents = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        offset = mark.line + 1 if mark else 0
        return [f"{block.where(offset)}: not valid YAML: {exc.problem or exc}"]
    except yaml.YAMLError as exc:
        return [f"{block.where()}: not valid YAML: {_one_line(str(exc))}"]
    if parse_only:
        return []
    out = []
    for data in documents:
        why = yaml_problem(data)
        if why:
            out.append(f"{block.where()}: {why}")
    return out


def yaml_problem(data: Any) -> str | None:
    """Why ``data`` is neither a valid worker configuration nor a valid topology (None: it is)."""
    from worker.ops.topology import Topology
    from worker.settings import WorkerSettings, topology_evidence, worker_config_evidence

    if not isinstance(data, dict):
        return f"a {type(data).__name__}, not a worker configuration or a topology (mark other YAML <!-- check: parse -->)"
    keys = set(data)
    as_config = worker_config_evidence(data) is not None
    as_topology = topology_evidence(data) is not None
    if not as_config and not as_topology:
        as_config = keys <= set(WorkerSettings.model_fields)
        as_topology = keys <= set(Topology.model_fields)
    if not as_config and not as_topology:
        return (
            f"neither a worker configuration nor a topology (keys {sorted(keys)}); "
            "mark other YAML <!-- check: parse -->"
        )
    errors = []
    if as_config:
        error = config_problem(data)
        if error is None:
            return None
        errors.append(error)
    if as_topology:
        error = topology_problem(data)
        if error is None:
            return None
        errors.append(error)
    return "; ".join(errors)


PLACEHOLDER_QUEUE = {"example": {"handlers": ["example"]}}


def config_problem(data: Mapping[str, Any]) -> str | None:
    """Why ``data`` (a fragment may lack queues and handlers) is not a valid worker
    configuration, with the process's WORKER_ and AWS_ variables out of the way."""
    from worker.settings import ConfigError, load_settings

    completed = copy.deepcopy(dict(data))
    queues = completed.setdefault("queues", copy.deepcopy(PLACEHOLDER_QUEUE))
    if isinstance(queues, dict):
        for queue in queues.values():
            if isinstance(queue, dict):
                queue.setdefault("handlers", ["example"])
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("WORKER_", "AWS_"))}
    with mock.patch.dict(os.environ, clean, clear=True):
        try:
            load_settings(None, completed, overrides_source="the block")
        except ConfigError as exc:
            return str(exc)
    return None


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def complete_topology(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the queues and topics it names but does not declare (a fragment's context)."""
    completed = copy.deepcopy(dict(data))
    queues: set[str] = set()
    topics: set[str] = set()

    def alarms_notify(alarms: Any) -> None:
        if isinstance(alarms, dict):
            topics.update(_names(alarms.get("notify")))
            for spec in alarms.values():
                if isinstance(spec, dict):
                    topics.update(_names(spec.get("notify")))

    alarms_notify(completed.get("alarms"))
    for spec in (completed.get("queues") or {}).values():
        if isinstance(spec, dict):
            dead_letter = spec.get("dead_letter")
            if isinstance(dead_letter, dict):
                queues.update(_names(dead_letter.get("queue")))
            if isinstance(spec.get("redrive_allow"), list):
                queues.update(_names(spec["redrive_allow"]))
            alarms_notify(spec.get("alarms"))
    for spec in (completed.get("topics") or {}).values():
        if isinstance(spec, dict):
            alarms_notify(spec.get("alarms"))
    for subscription in completed.get("subscriptions") or []:
        if isinstance(subscription, dict):
            topics.update(_names(subscription.get("topic")))
            queues.update(_names(subscription.get("queue")))
    for bucket in (completed.get("buckets") or {}).values():
        if isinstance(bucket, dict):
            for notification in bucket.get("notifications") or []:
                if isinstance(notification, dict):
                    queues.update(_names(notification.get("queue")))
    for key, names in (("queues", queues), ("topics", topics)):
        declared = completed.get(key)
        if declared is None:
            declared = completed[key] = {}
        if isinstance(declared, dict):
            for name in sorted(names):
                if not name.startswith("arn:"):
                    declared.setdefault(name, {})
    return completed


def topology_problem(data: Mapping[str, Any]) -> str | None:
    from pydantic import ValidationError

    from worker.ops.topology import Topology
    from worker.settings import format_validation_error

    try:
        Topology.model_validate(complete_topology(data))
    except ValidationError as exc:
        return format_validation_error(exc, "the block", "invalid topology", model=Topology)
    return None


# -- Python -----------------------------------------------------------------------------------


def check_python(block: Block, run: str | None = None) -> list[str]:
    try:
        compiled = compile(block.text, block.where(), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        return [f"{block.where(exc.lineno or 1)}: does not compile: {exc.msg}"]
    if run is None:
        return []
    messages = [m.strip() for m in run.split(";")[1:] if m.strip()]
    try:
        return [f"{block.where()}: {why}" for why in run_module(block, compiled, messages)]
    except Exception as exc:
        return [f"{block.where()}: raised {type(exc).__name__}: {_one_line(str(exc))}"]


_MESSAGE = re.compile(r"^(?P<type>\S+)\s+(?P<body>.+?)\s*->\s*(?P<outcome>\w+)$")


def run_module(block: Block, compiled: types.CodeType, messages: list[str]) -> Iterator[str]:
    """Run the block as a module; call its tests; send ``messages`` through its router."""
    name = f"docs_example_{abs(hash((str(block.path), block.line)))}"
    module = types.ModuleType(name)
    module.__file__ = str(block.path)
    sys.modules[name] = module
    try:
        result = eval(compiled, module.__dict__)  # a coroutine when it awaits at the top
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        for attr, value in list(module.__dict__.items()):
            if attr.startswith("test_") and callable(value):
                try:
                    returned = value()
                    if asyncio.iscoroutine(returned):
                        asyncio.run(returned)
                except Exception as exc:
                    yield f"{attr}() raised {type(exc).__name__}: {_one_line(str(exc))}"
        if messages:
            yield from _send(module, messages)
    finally:
        sys.modules.pop(name, None)


def _send(module: types.ModuleType, messages: list[str]) -> Iterator[str]:
    from worker import Router
    from worker.testing import HandlerKit, sqs_message

    router = getattr(module, "router", None)
    if not isinstance(router, Router):
        yield "messages given, but the block defines no `router = Router()`"
        return
    parsed = []
    for text in messages:
        found = _MESSAGE.match(text)
        if not found:
            yield f"cannot read message {text!r} (TYPE BODY -> OUTCOME)"
            return
        parsed.append((found.group("type"), json.loads(found.group("body")), found.group("outcome")))

    async def go() -> list[str]:
        wrong = []
        async with HandlerKit(router) as kit:
            for kind, body, expected in parsed:
                result = await kit.run(sqs_message(body, type=kind))
                if result.outcome != expected:
                    reason = f" ({result.reason})" if result.reason else ""
                    wrong.append(f"{kind} {json.dumps(body)}: {result.outcome}{reason}, expected {expected}")
        return wrong

    yield from asyncio.run(go())


def check_pycon(block: Block) -> list[str]:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, {}, block.where(), str(block.path), block.line)
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=output.write)
    if runner.failures:
        report = output.getvalue()
        report = report[report.find("Failed example:") :] if "Failed example:" in report else report
        return [f"{block.where()}: doctest failed: {_one_line(report)[:300]}"]
    return []


# -- shell ------------------------------------------------------------------------------------

_SEPARATORS = frozenset({"&&", "||", "|", ";", "&", "(", ")"})
_UV_VALUE_OPTIONS = frozenset(
    {"--project", "--directory", "--group", "--extra", "--with", "--python", "--package", "--env-file", "-p"}
)
_EAGER = frozenset({"--install-completion", "--show-completion", "--version", "-V", "--help", "-h"})


def commands(block: Block) -> Iterator[tuple[int, list[str]]]:
    """Each ``worker`` command line of a shell block: (line offset, its arguments)."""
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i]
        if block.lang in ("console", "shell-session"):
            if not line.lstrip().startswith("$ "):
                i += 1
                continue
            line = line.lstrip()[2:]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:
            continue  # not shell we can read (an unterminated quote in prose): nothing to parse
        simple: list[str] = []
        for token in [*tokens, ";"]:
            if token not in _SEPARATORS:
                simple.append(token)
                continue
            args = worker_args(simple)
            if args is not None:
                yield start, args
            simple = []


def worker_args(tokens: list[str]) -> list[str] | None:
    """The arguments after ``worker`` when ``tokens`` run the worker command."""
    words = list(tokens)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value before the command
    if words[:1] == ["env"]:
        words.pop(0)
    if words[:3] == ["python3", "-m", "uv"] or words[:3] == ["python", "-m", "uv"]:
        words = words[3:]
    elif words[:1] == ["uv"]:
        words = words[1:]
    else:
        return _plain(words)
    if words[:1] != ["run"]:
        return None
    words.pop(0)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in _UV_VALUE_OPTIONS and "=" not in option and words:
            words.pop(0)
    return _plain(words)


def _plain(words: list[str]) -> list[str] | None:
    return words[1:] if words[:1] == ["worker"] else None


def _strip_redirections(args: list[str]) -> list[str]:
    """``args`` without shell redirections (``> out.log``, ``2>&1``, ``< in.jsonl``)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.isdigit() and i + 1 < len(args) and args[i + 1][:1] in "<>":
            i += 1  # the descriptor of ``2>`` / ``2>&1``
            continue
        if arg[:1] in "<>" or arg in ("&>", "&>>"):
            i += 2  # the operator and its target
            continue
        out.append(arg)
        i += 1
    return out


def cli_problem(args: list[str]) -> str | None:
    """Why ``worker ARGS`` would not parse (None: it parses). Nothing runs: eager options
    (``--help``, ``--version``, completion) are checked to exist, then left out."""
    import typer

    from worker.cli.main import build_app

    command: Any = typer.main.get_command(build_app())
    path = ["worker"]
    rest = _strip_redirections(args)
    while True:
        where = " ".join(path)
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        if hasattr(command, "commands"):  # a group: its own flags, then a command
            split = next((i for i, a in enumerate(rest) if not a.startswith("-")), len(rest))
            unknown = [a for a in rest[:split] if a not in known]
            if unknown:
                return f"{where}: no such option {unknown[0]}"
            if any(a in _EAGER for a in rest[:split]) or split == len(rest):
                return None  # help, version, completion; or the group alone (its help)
            sub = command.commands.get(rest[split])
            if sub is None:
                return f"{where}: no such command {rest[split]!r}"
            command, path, rest = sub, [*path, rest[split]], rest[split + 1 :]
            continue
        eager = [a for a in rest if a in _EAGER]
        unknown = [a for a in eager if a not in known]
        if unknown:
            return f"{where}: no such option {unknown[0]}"
        try:
            command.make_context(path[-1], [a for a in rest if a not in _EAGER], resilient_parsing=False)
        except typer.Exit:
            return None
        except typer.TyperException as exc:
            if eager and type(exc).__name__ == "MissingParameter":
                return None  # --help needs no argument
            format_message = getattr(exc, "format_message", None)
            return f"{where}: {_one_line(format_message() if format_message else str(exc))}"
        return None


PLACEHOLDERS = {"N": "10"}
"""Words that stand for a value in docs, replaced before parsing (a number where one is needed)."""


def check_shell(block: Block) -> list[str]:
    out = []
    for offset, args in commands(block):
        shown = "worker " + " ".join(args)
        replaced = [PLACEHOLDERS.get(a, a) for a in args]
        why = cli_problem(replaced)
        if why:
            out.append(f"{block.where(offset + 1)}: `{_one_line(shown)}`: {why}")
    return out
