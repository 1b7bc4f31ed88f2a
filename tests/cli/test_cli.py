"""The ``worker`` command as an operator runs it: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Aws
from tests.servers import ROOT

GOOD_QUEUE = {"handlers": ["handlers.billing"], "wait_time_seconds": 1}


def run_worker(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(tmp_path: Path, data: dict[str, object]) -> str:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# An endpoint nothing listens on: a config error must be reported before any AWS call.
UNREACHABLE = {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"}


@pytest.mark.parametrize(
    ("queue", "field"),
    [
        ({**GOOD_QUEUE, "wait_time_seconds": 30}, "queues.orders.wait_time_seconds"),
        ({**GOOD_QUEUE, "batch_size": 11}, "queues.orders.batch_size"),
        ({**GOOD_QUEUE, "visibility_timeout": 10, "heartbeat_interval": 12}, "heartbeat_interval"),
        ({**GOOD_QUEUE, "pollers": "many"}, "queues.orders.pollers"),
        ({**GOOD_QUEUE, "max_in_flight": 5}, "max_in_flight"),
        ({**GOOD_QUEUE, "visiblity_timeout": 10}, "queues.orders.visiblity_timeout"),
        ({"wait_time_seconds": 1}, "queues.orders.handlers"),
    ],
)
def test_bad_config_exits_2_naming_the_field(tmp_path: Path, queue: dict[str, object], field: str) -> None:
    config = write_config(tmp_path, {"aws": UNREACHABLE, "queues": {"orders": queue}})
    result = run_worker(["run", "--config", config], timeout=30)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr
    assert result.stderr.startswith("worker: error: invalid configuration")
    assert len(result.stderr.strip().splitlines()) == 1


def test_credentials_in_the_file_are_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"aws": {**UNREACHABLE, "aws_secret_access_key": "hunter2"}, "queues": {"orders": GOOD_QUEUE}},
    )
    result = run_worker(["run", "--config", config])
    assert result.returncode == 2
    assert "aws.aws_secret_access_key" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout  # never echoed


def test_environment_overrides_the_file_and_is_validated(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"aws": UNREACHABLE, "queues": {"orders": GOOD_QUEUE}})
    result = run_worker(["run", "--config", config], env={"WORKER_QUEUES__ORDERS__POLLERS": "0"})
    assert result.returncode == 2
    assert "queues.orders.pollers" in result.stderr
    ok = run_worker(["check", "--config", config], env={"WORKER_QUEUES__ORDERS__POLLERS": "3"})
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout


@pytest.mark.parametrize(
    ("handlers", "message"),
    [
        (["handlers.does_not_exist"], "cannot import handler module 'handlers.does_not_exist'"),
        (["handlers.billing", "tests.support.duplicate"], "two handlers for message type 'order.placed'"),
        (["tests.support"], "has no `router = Router()`"),
    ],
)
def test_bad_handler_modules_fail_at_start(tmp_path: Path, handlers: list[str], message: str) -> None:
    config = write_config(
        tmp_path, {"aws": UNREACHABLE, "queues": {"orders": {**GOOD_QUEUE, "handlers": handlers}}}
    )
    result = run_worker(["run", "--config", config])
    assert result.returncode == 2
    assert message in result.stderr


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    missing = run_worker(["run", "--config", str(tmp_path / "nope.yaml")])
    assert missing.returncode == 2
    assert "cannot read config file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues: [unclosed")
    malformed = run_worker(["run", "--config", str(bad)])
    assert malformed.returncode == 2
    assert "not valid YAML" in malformed.stderr


def test_missing_queue_is_a_clear_error_with_nonzero_exit(tmp_path: Path, aws: Aws) -> None:
    config = write_config(
        tmp_path,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
            "queues": {"orders": {**GOOD_QUEUE, "name": "no-such-queue-here"}},
        },
    )
    result = run_worker(["run", "--config", config])
    assert result.returncode == 3
    assert "queues.orders: queue 'no-such-queue-here' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_gives_up_on_an_unreachable_endpoint_within_startup_timeout(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"aws": {**UNREACHABLE, "startup_timeout": 2}, "queues": {"orders": GOOD_QUEUE}},
    )
    start = time.monotonic()
    result = run_worker(["run", "--config", config, "--log-level", "error"])
    assert time.monotonic() - start < 10  # start-up (imports) plus the 2 s bound
    assert result.returncode == 5, result.stderr
    assert "cannot reach SQS (gave up after aws.startup_timeout 2s)" in result.stderr


def test_shipped_config_files_are_valid() -> None:
    for name in ("worker.yaml", "demo.yaml"):
        result = run_worker(["check", "--config", f"config/{name}"])
        assert result.returncode == 0, result.stderr


GREET = """
import logging

from worker import Message, Router

router = Router()
log = logging.getLogger("greet")


@router.handler("greet")
async def greet(payload: dict[str, str], message: Message) -> None:
    log.info("hello %s", payload["name"])
"""


def console_script() -> str:
    """The installed ``worker`` command (not ``python -m worker``, which puts the current
    directory on the path by itself)."""
    return str(Path(sys.executable).parent / "worker")


def test_handlers_of_your_own_project_directory_are_found(tmp_path: Path) -> None:
    project = tmp_path / "myservice"
    project.mkdir()
    (project / "greet.py").write_text(GREET)
    (project / "worker.yaml").write_text(
        yaml.safe_dump({"aws": UNREACHABLE, "queues": {"greetings": {"handlers": ["greet"]}}})
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    here = subprocess.run(
        [console_script(), "check", "-c", "worker.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert here.returncode == 0, here.stderr
    assert "greetings: greetings <- greet" in here.stdout
    elsewhere = subprocess.run(
        [console_script(), "check", "-c", str(project / "worker.yaml"), "--app-dir", str(project)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    missing = subprocess.run(
        [console_script(), "check", "-c", str(project / "worker.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "no such module on the import path" in missing.stderr
    assert "--app-dir" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_run_imports_only_what_its_configuration_uses(tmp_path: Path, aws: Aws) -> None:
    """No health server: no Prometheus client, no HTTP server; no operator commands, no
    retry machinery for calls that work, no rich (structlog goes without it)."""
    config = write_config(
        tmp_path,
        {
            "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
            "queues": {"orders": {**GOOD_QUEUE, "name": "no-such-queue-here"}},
        },
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "worker", "run", "--config", config],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr[-2000:]  # it got as far as asking SQS
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"worker.runtime.supervisor", "aiobotocore.session", "structlog"} <= imported
    unused = {
        "prometheus_client",
        "aiohttp.web",
        "worker.observe.health",
        "tenacity",
        "rich.console",
        "pygments",
        "worker.cli.dlq",
        "worker.cli.inspect",
        "worker.cli.messages",
        "worker.cli.provision",
        "worker.ops.provision",
        "worker.messages.s3events",  # no handler module names the S3 event models
    }
    assert not unused & imported


ANY_QUEUE = """
from typing import Any

from worker import Router

router = Router()


@router.handler("greet", dependencies=["mailer"])
async def greet(body: dict[str, Any]) -> None: ...
"""


def test_check_lists_how_each_queue_finds_its_handlers(tmp_path: Path) -> None:
    (tmp_path / "anyq.py").write_text(ANY_QUEUE)
    queues = {
        "plain": {
            "handlers": ["anyq"],
            "types": {"default": "greet", "unknown": "default", "field": "meta.kind"},
        },
        "strict": {"handlers": ["anyq"], "types": {"sources": ["eventbridge", "attribute"]}},
    }
    config = write_config(tmp_path, {"aws": UNREACHABLE, "queues": queues})
    ok = run_worker(["check", "--config", config, "--app-dir", str(tmp_path)])
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    plain = lines[lines.index("plain: plain <- greet") + 1 : lines.index("strict: strict <- greet")]
    assert plain == [
        "  type from: attribute 'type', then CloudEvents type, then body field 'meta.kind', then S3 event "
        "name, then EventBridge detail-type",
        "  greet -> anyq.greet (needs mailer)",
        "  without a type: greet -> anyq.greet (types.default)",
        "  unknown type: the default handler",
    ]
    strict = lines[lines.index("strict: strict <- greet") + 1 :]
    assert strict[0] == "  type from: EventBridge detail-type, then attribute 'type'"
    assert "  without a type: rejected to the DLQ (no default handler)" in strict
    assert "  unknown type: rejected to the DLQ" in strict


def test_a_default_type_no_handler_serves_stops_the_worker_at_start(tmp_path: Path) -> None:
    (tmp_path / "anyq.py").write_text(ANY_QUEUE)
    queues = {"plain": {"handlers": ["anyq"], "types": {"default": "gret"}}}
    config = write_config(tmp_path, {"aws": UNREACHABLE, "queues": queues})
    for command in ("check", "run"):
        result = run_worker([command, "--config", config, "--app-dir", str(tmp_path)])
        assert result.returncode == 2
        assert (
            "queues.plain.types.default: no handler of ['anyq'] serves 'gret' (types served: greet)"
            in result.stderr
        )
