"""Every code block of README.md and docs/ holds (docgen/examples.py; the convention is in
docs/development.md, "Writing docs"), and the checks catch what they say they catch."""

from __future__ import annotations

from pathlib import Path

import pytest

from docgen import examples


def test_every_example_in_the_docs_holds() -> None:
    files = examples.doc_files()
    assert Path(examples.ROOT / "README.md") in files
    found = examples.problems(files)
    assert not found, "code blocks that do not hold:\n" + "\n".join(found)


def _problems(tmp_path: Path, text: str) -> list[str]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return [p.split("page.md:", 1)[1] for p in examples.problems([page])]


def test_yaml_must_be_a_valid_configuration_or_topology(tmp_path: Path) -> None:
    text = """
```yaml
queues:
  billing:
    handlers: [handlers.billing]
    visiblity_timeout: 30
```

```yaml
log: {level: loud}
```

```yaml
queues: {billing: {pollers: 4}}   # a fragment: handlers left out
payloads: {bucket: my-payloads}
```

```yaml
subscriptions:                    # names queues and topics it does not declare
  - {topic: orders, queue: billing}
queues:
  billing: {dead_letter: {queue: billing-dlq, max_receive_count: 5}}
alarms: {notify: [ops-alerts]}
```

```yaml
topics: {orders: {colour: blue}}
```

```yaml
services: {worker: {image: sqs-worker}}
```

<!-- check: parse -->
```yaml
services: {worker: {image: sqs-worker}}
```

```yaml
a: [1
```
"""
    found = _problems(tmp_path, text)
    assert found == [
        "2: invalid configuration (the block): queues.billing.visiblity_timeout: unknown field "
        "(did you mean 'visibility_timeout'?)",
        "9: invalid configuration (the block): log.level: Input should be 'debug', 'info', 'warning' or "
        "'error' (got 'loud')",
        "26: invalid topology (the block): topics.orders.colour: unknown field",
        "30: neither a worker configuration nor a topology (keys ['services']); mark other YAML "
        "<!-- check: parse -->",
        "41: not valid YAML: expected ',' or ']', but got '<stream end>'",
    ]


def test_python_must_compile_and_marked_blocks_run(tmp_path: Path) -> None:
    text = """
```python
result = await producer.send("q", {"a": 1})   # top-level await is fine
```

```python
{"id": 1, ...}
```

<!-- check: run; greet {"name": "Ada"} -> succeeded; greet {} -> rejected; greet {"name": "Bo"} -> rejected -->
```python
from pydantic import BaseModel

from worker import Router

router = Router()


class Greeting(BaseModel):
    name: str


@router.handler("greet")
async def greet(greeting: Greeting) -> None:
    pass


async def test_the_router_has_the_handler() -> None:
    assert "greet" in router.routes


def test_fails() -> None:
    assert 1 == 2, "one is not two"
```

<!-- check: run -->
```python
raise RuntimeError("at import")
```

<!-- check: skip pseudo-code -->
```python
this is not python
```

<!-- check: bogus -->
```python
pass
```

```pycon
>>> 1 + 1
3
```
"""
    found = _problems(tmp_path, text)
    assert found == [
        "7: does not compile: ':' expected after dictionary key",
        "11: test_fails() raised AssertionError: one is not two",
        '11: greet {"name": "Bo"}: succeeded, expected rejected',
        "37: raised RuntimeError: at import",
        "47: unknown check marker 'bogus' (skip, parse or run)",
        "51: doctest failed: Failed example: 1 + 1 Expected: 3 Got: 2",
    ]


def test_worker_commands_must_parse(tmp_path: Path) -> None:
    text = """
```sh
worker run -c config/worker.yaml > worker.log 2>&1 &   # fine
python3 -m uv run --project /srv/sqs-worker worker check -c worker.yaml
WORKER_LOG__LEVEL=debug worker dlq show billing --limit 3 && echo done
worker send billing --type t --delay soon
worker dlq nope
worker provision --prune --yes --dry-run --colour
worker stats \\
    --interval 0.1
worker send --help
worker --version
kubectl apply -k deploy/k8s   # not the worker: not checked
```

```console
$ worker iam-policy -t config/topology.yaml --bogus
worker: error: No such option: --bogus
$ python3 -m uv run worker demo
```
"""
    found = _problems(tmp_path, text)
    assert found == [
        "6: `worker send billing --type t --delay soon`: worker send: Invalid value for '--delay': "
        "Input should be a valid integer, unable to parse string as an integer",
        "7: `worker dlq nope`: worker dlq: no such command 'nope'",
        "8: `worker provision --prune --yes --dry-run --colour`: worker provision: No such option: --colour",
        "9: `worker stats --interval 0.1`: worker stats: Invalid value for '--interval': "
        "Input should be greater than or equal to 0.5",
        "17: `worker iam-policy -t config/topology.yaml --bogus`: worker iam-policy: No such option: --bogus",
    ]


def test_json_and_toml_must_parse(tmp_path: Path) -> None:
    text = '```json\n{"a": 1,}\n```\n\n```toml\n[x]\na = 1\n```\n'
    assert [p.split(":")[0] for p in _problems(tmp_path, text)] == ["1"]


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("````markdown\n```yaml\na: [\n```\n````\n", []),  # a fence inside a longer one is text
        ("- item\n\n  ```yaml\n  log: {level: loud}\n  ```\n", [3]),  # indented, in a list
        ("~~~yaml\nlog: {level: loud}\n~~~\n", [1]),
    ],
)
def test_fences_are_found_where_markdown_finds_them(tmp_path: Path, text: str, lines: list[int]) -> None:
    assert [int(p.split(":")[0]) for p in _problems(tmp_path, text)] == lines
