"""The generated reference pages (docgen/references.py): everything is described, and every
page holds everything the code has. A setting, topology key, option or metric added without
its description fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel

from docgen import references
from tests.servers import ROOT
from worker.ops.topology import Topology
from worker.settings import ConfigError, WorkerSettings, load_settings


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(root: type[BaseModel]) -> set[tuple[str, str]]:
    """(model, field) of every model under ``root``, found without docgen."""
    seen: set[type[BaseModel]] = set()
    found: set[tuple[str, str]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            found.add((model.__name__, name))
            for inner in _models(info.annotation):
                walk(inner)

    walk(root)
    return found


def _headings(page: str) -> list[str]:
    """The text of the page's headings, their ``{ #id }`` left out."""
    return [line.lstrip("#").split(" { #")[0].strip() for line in page.splitlines() if line.startswith("#")]


def _ids(page: str) -> list[str]:
    return [
        line.split(" { #")[1].rstrip(" }")
        for line in page.splitlines()
        if line.startswith("#") and " { #" in line
    ]


def test_every_setting_has_a_description() -> None:
    missing = [key.path for key in references.settings_keys() if not key.description.strip()]
    assert not missing, "settings without a docstring under their field: " + ", ".join(missing)


def test_every_topology_key_has_a_description() -> None:
    missing = [key.path for key in references.topology_keys() if not key.description.strip()]
    assert not missing, "topology keys without a docstring under their field: " + ", ".join(missing)


def test_every_command_and_option_has_help() -> None:
    commands = references.cli_commands()
    missing = [c.path for c in commands if not c.help.strip()]
    missing += [f"{p.command} {p.shown}" for c in commands for p in c.params if not p.help.strip()]
    assert not missing, "without help text: " + ", ".join(missing)


def test_every_metric_and_exit_code_is_described() -> None:
    missing = [f.name for f in references.metric_families() if not f.help.strip()]
    missing += [name for _, name, meaning in references.exit_codes() if not meaning.strip()]
    assert not missing, "without a description: " + ", ".join(missing)


def test_the_configuration_page_has_every_field() -> None:
    keys = references.settings_keys()
    assert {(k.model.__name__, k.name) for k in keys} == _fields(WorkerSettings)
    page = references.configuration_page()
    assert {f"`{k.path}`" for k in keys} <= set(_headings(page))
    assert "`queues.<key>.max_in_flight`" in _headings(page)
    assert "**Environment:** `WORKER_QUEUES__<KEY>__RETRY_BACKOFF` (JSON)" in page
    ids = _ids(page)
    assert len(ids) == len(set(ids)), "two headings with one id"


def test_the_topology_page_has_every_key() -> None:
    keys = references.topology_keys()
    assert {(k.model.__name__, k.name) for k in keys} == _fields(Topology)
    page = references.topology_page()
    headings = _headings(page)
    for section in references.topology_sections():
        shared = len([p for p in section.paths if p]) > 1
        for key in section.keys:
            assert (f"`{key.name}`" if shared else f"`{key.path}`") in headings, key.path
    assert "`queues.<name>.dead_letter.max_receive_count`" in headings
    assert "`subscriptions[].filter_policy`" in headings
    ids = _ids(page)
    assert len(ids) == len(set(ids)), "two headings with one id"


def test_the_cli_page_has_every_command_and_option() -> None:
    from worker.cli.main import build_app

    group: Any = typer.main.get_command(build_app())
    expected: set[str] = set()
    options: set[str] = set()

    def walk(command: Any, path: str) -> None:
        expected.add(path)
        options.update(f"{path} {o}" for p in command.params if p.param_type_name == "option" for o in p.opts)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(group, "worker")
    commands = references.cli_commands()
    assert {c.path for c in commands} == expected
    documented = {
        f"{p.command} {opt.split()[0]}" for p in references.cli_params() for opt in p.shown.split(", ")
    }
    assert options <= documented
    page = references.cli_page()
    for command in commands:
        assert f"## `{command.path}`" in page
        for param in command.params:
            assert f"| `{param.shown}` |" in page
    assert "`WORKER_CONFIG`" in page
    assert "`--metrics-url`" in page


def test_the_metrics_page_has_every_metric() -> None:
    from worker.observe.metrics import Metrics

    page = references.metrics_page()
    exported = {family.name for family in Metrics().registry.collect()}
    assert {f.name for f in references.metric_families()} == exported
    for family in references.metric_families():
        for series in family.series:
            assert f"`{series}`" in page
    assert "`sqs_worker_messages_received_total`" in page
    assert "`sqs_worker_queue_requests_total` | counter | `queue`, `operation` |" in page


def test_every_documented_variable_reaches_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable of the configuration page, set alone, lands on its field in what
    pydantic-settings reads from the environment (a queue key: ``billing``)."""
    from pydantic_settings import EnvSettingsSource

    keys = [k for k in references.settings_keys() if k.env]
    assert len(keys) == len(references.settings_keys())  # no list of models: every field has one
    for key in keys:
        name = key.env.replace("<KEY>", "BILLING") if key.env else ""
        value: Any = ["x"] if "list of" in key.type else {} if key.json_env else "v1"
        for variable in [v for v in list(os.environ) if v.upper().startswith("WORKER_")]:
            monkeypatch.delenv(variable)
        monkeypatch.setenv(name, json.dumps(value) if key.json_env else value)
        read = EnvSettingsSource(WorkerSettings)()
        node: Any = read
        for part in key.path.replace("<key>", "billing").split("."):
            assert isinstance(node, dict), f"{name} does not reach {key.path}: {read}"
            assert part in node, f"{name} does not reach {key.path}: {read}"
            node = node[part]
        assert node == value, f"{name}={value!r} reached {key.path} as {node!r}"
        monkeypatch.delenv(name)


BASE = {"queues": {"billing": {"handlers": ["handlers.billing"], "pollers": 2}}}


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"WORKER_QUEUES__BILLING__POLLERS": "4"}, {"pollers": 4}),
        ({"worker_queues__billing__pollers": "auto"}, {"pollers": "auto"}),
        ({"WORKER_QUEUES__BILLING__RETRY_BACKOFF": "[5, 30]"}, {"retry_backoff": [5.0, 30.0]}),
        ({"WORKER_QUEUES__BILLING": '{"batch_size": 5}'}, {"batch_size": 5, "pollers": 2}),
        ({"WORKER_AWS": '{"region": "eu-west-1"}'}, {"region": "eu-west-1"}),
        (
            {"WORKER_AWS__REGION": "eu-west-1", "WORKER_SHUTDOWN_GRACE": "60"},
            {"region": "eu-west-1", "grace": 60},
        ),
        ({"WORKER_QUEUES__AUDIT__HANDLERS": '["audit"]'}, {"queues": ["audit", "billing"]}),
    ],
)
def test_what_the_configuration_page_says_of_variables(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: dict[str, Any]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None, BASE)
    billing = settings.queues["billing"]
    seen = {
        "pollers": billing.pollers,
        "retry_backoff": billing.retry_backoff,
        "batch_size": billing.batch_size,
        "region": settings.aws.region,
        "grace": settings.shutdown_grace,
        "queues": sorted(settings.queues),
    }
    assert {k: seen[k] for k in expected} == expected


def test_a_queue_key_with_capitals_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_QUEUES__BILLING__POLLERS", "4")
    with pytest.raises(ConfigError, match=r"queues\.billing\.handlers: required"):
        load_settings(None, {"queues": {"Billing": {"handlers": ["handlers.billing"]}}})


def test_the_generated_pages_build_strictly(tmp_path: Path) -> None:
    """The site's own configuration, with docs/ holding only a home page: the hook adds the
    references, and their links and anchors hold (strict)."""
    pytest.importorskip("mkdocs")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(
        "# Home\n\n[Configuration](reference/configuration.md#queuesettings)\n"
    )
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "INHERIT": str(ROOT / "mkdocs.yml"),
                "docs_dir": str(tmp_path / "docs"),
                "site_dir": str(tmp_path / "site"),
                "hooks": [str(ROOT / "docgen" / "hooks.py")],
                "watch": [],
                "nav": ["index.md", {"Reference": list(references.PAGES)}],
            }
        )
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert 'id="queuesettings"' in html
    assert "WORKER_QUEUES__&lt;KEY&gt;__POLLERS" in html
