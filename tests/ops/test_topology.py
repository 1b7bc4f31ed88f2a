"""Topology files: every error is one line naming the file, the field and what was wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.ops.topology import load_topology
from worker.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_worker_configuration_given_as_topology() -> None:
    # It used to give 20 lines of "Extra inputs are not permitted".
    path = ROOT / "config" / "worker.yaml"
    assert error_of(path) == (
        f"{path}: this is a worker configuration (it has 'queues.billing.handlers'), not a topology file; "
        "pass the topology file (config/topology.yaml)"
    )


def test_worker_configuration_without_queues_is_recognised_too(tmp_path: Path) -> None:
    path = write(tmp_path, {"aws": {"region": "eu-west-1"}, "shutdown_grace": 10})
    assert error_of(path).startswith(f"{path}: this is a worker configuration (it has 'aws'), not a topology")


def test_invalid_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    # It used to give 8 lines naming "<unicode string>".
    path = tmp_path / "topology.yaml"
    path.write_text("queues:\n  a: {}\ntopics:\n  t: {display_name: [x}\n")
    assert error_of(path) == (
        f"{path}:4:23: not valid YAML: expected ',' or ']', but got '}}' "
        "(while parsing a flow sequence started at 4:21)"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"queues": {"a": {"visiblity_timeout": 5}}},
            "queues.a.visiblity_timeout: unknown field (did you mean 'visibility_timeout'?)",
        ),
        # A union (a literal or a mapping): one message, no member names in the path.
        (
            {"queues": {"a": {"encryption": "x"}}},
            "queues.a.encryption: Input should be 'sqs' or 'none' (got 'x')",
        ),
        ({"queues": {"a": {"encryption": {}}}}, "queues.a.encryption.kms_key_id: required"),
        (
            {"queues": {"a": {"redrive_allow": 5}}},
            "queues.a.redrive_allow: Input should be 'all' or 'deny' (got 5)",
        ),
        (
            {"queues": {"a": {"visibility_timeout": -1}, "b": {"delay": 1000}, "c": {"colour": "red"}}},
            "queues.a.visibility_timeout: Input should be greater than or equal to 0 (got -1); "
            "and 2 more: queues.b.delay, queues.c.colour",
        ),
        (
            {"queues": {"a": {}}, "subscriptions": [{"topic": "t", "queue": "a"}]},
            "subscriptions.0.topic: unknown topic 't'",
        ),
    ],
)
def test_validation_errors_are_one_line_naming_the_file_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    path = write(tmp_path, data)
    assert error_of(path) == f"invalid topology ({path}): {expected}"


def test_unknown_keys_are_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, {"topics": {"t": {"secret": "hunter2"}}})
    message = error_of(path)
    assert message == f"invalid topology ({path}): topics.t.secret: unknown field"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"- a\n", "{path}: the top level must be a mapping, not list"),
        (b"1: x\n", "{path}: top-level key 1 is not a field name"),
        (b"queues:\n  \xff: {}\n", "{path}:2:3: not UTF-8 text (byte 0xff)"),
    ],
)
def test_files_that_are_not_a_mapping(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "topology.yaml"
    path.write_bytes(content)
    assert error_of(path) == expected.format(path=path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"cannot read topology file {path}: No such file or directory"


def test_the_topology_page_names_every_key_of_the_topology() -> None:
    """Adding a topology key without documenting it in docs/topology.md fails here."""
    from pydantic import BaseModel

    from tests.servers import ROOT
    from worker.ops.topology import Topology

    section = (ROOT / "docs" / "topology.md").read_text()
    missing: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if name not in section:
                missing.add(f"{model.__name__}.{name}")
            for inner in _models(field.annotation):
                walk(inner)

    walk(Topology)
    assert not missing


def _models(annotation: object) -> list[type[Any]]:
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]
