"""One error style, one exit code per kind of failure, the same for every command; and
commands that give up on a bad endpoint within their ``--timeout``.

Commands run in-process through ``worker.cli.main.main`` (what the console script calls),
in a thread so that their ``asyncio.run`` has a thread of its own.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Aws
from tests.servers import ROOT
from worker import errors
from worker.cli.main import app, main


class Run:
    def __init__(self, code: int, out: str, err: str, seconds: float) -> None:
        self.code, self.out, self.err, self.seconds = code, out, err, seconds

    def one_line_error(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        errors_ = [line for line in lines if line.startswith("worker: error: ")]
        assert len(errors_) == 1, self.err
        return errors_[0]


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    capsys.readouterr()
    start = time.monotonic()
    code = main(list(args))
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, seconds)


async def ainvoke(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    return await asyncio.to_thread(invoke, capsys, *args)


@pytest.fixture
def html_endpoint() -> Iterator[str]:
    """A web server that is not SQS: it answers every POST with an HTML error page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"<!DOCTYPE html>\n<html><head><title>Not here</title></head>\n<body>nope</body></html>\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_every_command_has_a_description_and_the_cli_has_version_and_completion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    top = invoke(capsys, "--help")
    assert top.code == 0
    for command in ("run", "check", "demo", "provision", "send", "publish", "dlq", "stats", "iam-policy"):
        assert command in top.out
    assert "--install-completion" in top.out
    import typer.main

    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert set(commands) >= {"run", "check", "send", "dlq", "stats", "iam-policy"}
    for name, command in commands.items():
        assert command.help, f"worker {name} has no description"
        for sub in getattr(command, "commands", {}).values():
            assert sub.help, f"worker {name} {sub.name} has no description"
    version = invoke(capsys, "--version")
    assert version.code == 0
    assert version.out.startswith("worker (aio-sqs-worker) ")


HELP_COMMANDS = [
    [],
    ["run"],
    ["check"],
    ["demo"],
    ["provision"],
    ["send"],
    ["publish"],
    ["stats"],
    ["iam-policy"],
    ["dlq"],
    ["dlq", "show"],
    ["dlq", "redrive"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "worker")
def test_help_shows_no_type_for_flags_and_wraps_whole_paragraphs(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Was: every flag followed by "<bool>", the commands' descriptions cut at the column
    width ("(a...") and docstrings wrapped where their source lines end, mid-sentence."""
    import typer.main

    result = invoke(capsys, *command, "--help")
    assert result.code == 0
    assert "<bool>" not in result.out
    flat = " ".join(result.out.split())
    target = typer.main.get_command(app)
    for name in command:
        target = target.commands[name]  # type: ignore[attr-defined]
    for paragraph in (target.help or "").split("\n\n"):
        assert " ".join(paragraph.split()) in flat  # every paragraph there, whole
    for sub in getattr(target, "commands", {}).values():
        first = " ".join((sub.help or "").split("\n\n")[0].split())
        assert first in flat, f"the description of {sub.name} is cut"
    lines = [line.strip() for line in result.out.splitlines()]
    for param in target.params:
        text = getattr(param, "help", None)
        if getattr(param, "is_flag", False) and text:
            # A flag's line: its names, then its help; no type in between.
            names = ", ".join(sorted(param.opts, key=len))
            line = next(line for line in lines if line.startswith(names))
            assert line.removeprefix(names).strip().startswith(text.split()[0]), line


def test_help_keeps_no_hard_line_breaks_of_the_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    out = invoke(capsys, "stats", "--help").out
    # The docstring breaks after "also"; the help text is wrapped where the width ends.
    assert "With --metrics-url, also\n" not in out
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines)


def test_usage_errors_are_one_line_exit_2_with_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    typo = invoke(capsys, "sned", "q")
    assert typo.code == errors.EXIT_USAGE
    assert "Did you mean 'send'?" in typo.one_line_error()
    sub = invoke(capsys, "dlq", "shwo", "q")
    assert sub.code == errors.EXIT_USAGE
    assert "Did you mean 'show'?" in sub.one_line_error()
    missing = invoke(capsys, "send")
    assert missing.code == errors.EXIT_USAGE
    assert "QUEUE" in missing.one_line_error()
    assert "worker send --help" in missing.one_line_error()


def test_worker_config_and_topology_are_different_flags(capsys: pytest.CaptureFixture[str]) -> None:
    # provision takes the topology (-t); --config (the worker configuration) is not its flag.
    result = invoke(capsys, "provision", "--config", "config/worker.yaml", "--dry-run")
    assert result.code == errors.EXIT_USAGE
    assert "--config" in result.one_line_error()
    helps = {cmd: invoke(capsys, *cmd.split(), "--help").out for cmd in ("run", "provision", "stats")}
    assert "--topology" in helps["provision"]
    assert "--topology" in helps["stats"]
    assert "--config" in helps["run"]
    assert "--topology" not in helps["run"]


@pytest.mark.parametrize(
    "command",
    [
        ["send", "QUEUE", "--type", "t", "--body", "{}"],
        ["publish", "TOPIC", "--type", "t", "--body", "{}"],
        ["dlq", "show", "QUEUE"],
        ["dlq", "redrive", "QUEUE"],
    ],
)
async def test_an_unknown_queue_or_topic_is_exit_3_naming_region_and_endpoint(
    aws: Aws, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    queue = await aws.queue(prefix="orders")
    typo = queue.name.replace("orders", "ordrs")
    args = [a.replace("QUEUE", typo).replace("TOPIC", "no-such-topic-x") for a in command]
    result = await ainvoke(capsys, *args, "--endpoint-url", aws.endpoint, "--region", "us-east-1")
    assert result.code == errors.EXIT_NOT_FOUND, result.err
    line = result.one_line_error()
    assert "does not exist" in line
    assert f"region us-east-1, endpoint {aws.endpoint}" in line
    if "QUEUE" in command:
        assert "did you mean " in line
        assert repr(queue.name) in line.split("did you mean ", 1)[1]


@pytest.mark.parametrize(
    "command",
    [
        ["send", "q", "--type", "t", "--body", "{}"],
        ["publish", "t", "--type", "t", "--body", "{}"],
        ["dlq", "show", "q"],
        ["stats", "-t", "config/topology.yaml"],
        ["provision", "-t", "config/topology.yaml", "--dry-run"],
        ["iam-policy", "-t", "config/topology.yaml"],
    ],
)
def test_an_unreachable_endpoint_fails_within_the_timeout_exit_5(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    result = invoke(
        capsys, *command, "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1", "--timeout", "2"
    )
    assert result.code == errors.EXIT_UNREACHABLE, result.err
    assert result.seconds < 6, result.seconds  # was ~2 minutes of retries
    line = result.one_line_error()
    assert "within 2s" in line
    assert "endpoint http://127.0.0.1:9" in line


def test_an_endpoint_that_is_not_sqs_is_one_line_without_the_page(
    capsys: pytest.CaptureFixture[str], html_endpoint: str
) -> None:
    result = invoke(
        capsys,
        "stats",
        "-t",
        "config/topology.yaml",
        "--endpoint-url",
        html_endpoint,
        "--region",
        "us-east-1",
    )
    assert result.code == errors.EXIT_UNREACHABLE
    line = result.one_line_error()
    assert "did not answer as SQS (HTTP 404)" in line
    assert "<" not in line


def test_an_empty_access_key_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value-never-shown")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    result = invoke(
        capsys,
        "send",
        "q",
        "--type",
        "t",
        "--body",
        "{}",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--region",
        "x",
    )
    assert result.code == errors.EXIT_USAGE
    line = result.one_line_error()
    assert "AWS_ACCESS_KEY_ID set but empty" in line
    assert "secret-value-never-shown" not in result.err + result.out


def test_an_endpoint_without_scheme_is_refused_before_any_call(capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(capsys, "send", "q", "--type", "t", "--body", "{}", "--endpoint-url", "localhost:4566")
    assert result.code == errors.EXIT_USAGE
    assert "endpoint" in result.one_line_error()


async def test_stats_json_is_valid_json_and_json_lines_under_watch(aws: Aws, tmp_path: Path) -> None:
    name = f"a-very-long-queue-name-that-would-run-into-the-numbers-{os.urandom(4).hex()}"
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({"name": "stats-test", "queues": {name: {}}}))
    await aws.sqs.create_queue(QueueName=name)
    url = (await aws.sqs.get_queue_url(QueueName=name))["QueueUrl"]
    for i in range(3):
        await aws.send(url, {"i": i}, "t")
    env = {**os.environ, "AWS_REGION": "us-east-1"}
    base = [sys.executable, "-m", "worker", "stats", "-t", str(topology), "--endpoint-url", aws.endpoint]
    once = await asyncio.to_thread(
        subprocess.run, [*base, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)[0]["visible"] == 3
    table = await asyncio.to_thread(
        subprocess.run, base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    row = next(line for line in table.stdout.splitlines() if name in line)
    assert row.split()[:2] == [name, "3"]  # the name and the count are separate columns

    watch = subprocess.Popen(
        [*base, "--json", "--watch", "--interval", "0.5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        lines = [await asyncio.to_thread(watch.stdout.readline) for _ in range(2)]
    finally:
        watch.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(watch.wait, 20)
    snapshots = [json.loads(line) for line in lines]  # each line parses on its own
    assert all(s["queues"][0]["name"] == name for s in snapshots)
    assert code == errors.EXIT_INTERRUPTED


async def test_stats_names_the_missing_queue_with_region_and_endpoint(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({"name": "gone", "queues": {"never-provisioned-q": {}}}))
    result = await ainvoke(
        capsys, "stats", "-t", str(topology), "--endpoint-url", aws.endpoint, "--region", "us-east-1"
    )
    assert result.code == errors.EXIT_NOT_FOUND
    line = result.one_line_error()
    assert "queue 'never-provisioned-q' of the topology does not exist" in line
    assert f"region us-east-1, endpoint {aws.endpoint}" in line


def test_check_refuses_an_endpoint_without_scheme_like_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(
        yaml.safe_dump(
            {"aws": {"endpoint_url": "localhost:4566"}, "queues": {"q": {"handlers": ["handlers.billing"]}}}
        )
    )
    result = invoke(capsys, "check", "-c", str(config))
    assert result.code == errors.EXIT_USAGE
    assert "aws.endpoint_url" in result.one_line_error()
    assert str(config) in result.one_line_error()


def test_a_worker_config_given_as_topology_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(capsys, "provision", "-t", "config/worker.yaml", "--dry-run")
    assert result.code == errors.EXIT_USAGE
    assert "this is a worker configuration" in result.one_line_error()


def test_a_bad_region_option_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(capsys, "send", "q", "--type", "t", "--body", "{}", "--region", "us east 1")
    assert result.code == errors.EXIT_USAGE
    assert "--region" in result.one_line_error()
