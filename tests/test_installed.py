"""The package as a user installs it: the wheel built from this tree, installed into a fresh
environment outside the repository, then used the way docs/getting-started.md says (a
project of its own with a flat ``handlers/`` directory and a ``pyproject.toml`` that depends
on the wheel), down to one message through LocalStack."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Aws, eventually
from tests.servers import ROOT

pytestmark = pytest.mark.timeout(600)

HANDLER = """\
import os
from pathlib import Path

from pydantic import BaseModel

from worker import Router

router = Router()


class Greeting(BaseModel):
    name: str


@router.handler("greet")
async def greet(greeting: Greeting) -> None:
    Path(os.environ["GREETED_FILE"]).write_text(f"Hello, {greeting.name}!")
"""


def _uv(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "uv", *args],
        cwd=cwd,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"uv {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The environment without this project's: no venv, no repository on the path."""
    drop = {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "WORKER_APP_DIR", "WORKER_CONFIG"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--wheel", "--out-dir", str(out), str(ROOT), cwd=out)
    (built,) = out.glob("aio_sqs_worker-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def project(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/getting-started.md's ``myservice``: its own ``handlers/``, a pyproject.toml
    depending on the wheel (``[tool.uv.sources]``), ``uv sync``."""
    root = tmp_path_factory.mktemp("myservice")
    assert ROOT not in root.parents
    (root / "handlers").mkdir()
    (root / "handlers" / "greet.py").write_text(HANDLER)
    (root / "pyproject.toml").write_text(
        f"""[project]
name = "myservice"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["aio-sqs-worker[demo]"]

[tool.uv]
package = false

[tool.uv.sources]
aio-sqs-worker = {{ path = "{wheel.as_posix()}" }}
"""
    )
    _uv("sync", "--python", sys.executable, cwd=root)
    return root


def _worker(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(project / ".venv" / "bin" / "worker"), *args],
        cwd=project,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"worker {' '.join(args)} -> {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_holds_one_top_level_package_worker(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"worker"}
    # The demo's handlers and configuration, as data inside it.
    assert "worker/_demo/handlers/billing.py" in names
    assert "worker/_demo/config/demo.yaml" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "worker = worker.cli.entry:main" in text
    assert "[pytest11]" in text


def test_installed_version_and_demo_from_any_directory(project: Path, tmp_path: Path) -> None:
    version = subprocess.run(
        [str(project / ".venv" / "bin" / "worker"), "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert version.stdout.startswith("worker (aio-sqs-worker) 0."), version
    # From the user's project, whose own `handlers` must not stand in for the demo's.
    out = _worker(project, "demo", "--log-level", "warning", timeout=180)
    assert "10 handled successfully, 4 dead-lettered; worker stopped cleanly." in out


async def test_a_users_own_handlers_directory_runs_against_localstack(project: Path, aws: Aws) -> None:
    queue = await aws.queue()
    (project / "worker.yaml").write_text(
        f"queues:\n  greetings:\n    name: {queue.name}\n    handlers: [handlers.greet]\n"
        "    wait_time_seconds: 1\n"
    )
    env = {
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "GREETED_FILE": str(project / "greeted.txt"),
    }
    checked = _worker(project, "check", "-c", "worker.yaml", env=env)
    assert "greetings:" in checked
    assert "configuration OK" in checked
    _worker(project, "send", queue.name, "--type", "greet", "--body", '{"name": "Ada"}', env=env)
    log = project / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(project / ".venv" / "bin" / "worker"), "run", "-c", "worker.yaml", "--log-format", "json"],
            cwd=project,
            env={**_clean_env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await eventually(lambda: (project / "greeted.txt").exists(), timeout=60)
        await eventually(lambda: _total_is_zero(aws, queue.url), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert (project / "greeted.txt").read_text() == "Hello, Ada!"
    assert code == 0, log.read_text()[-3000:]


async def _total_is_zero(aws: Aws, url: str) -> bool:
    return await aws.total(url) == 0
