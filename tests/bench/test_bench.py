"""A smoke run of the benchmark (tiny N): the harness works and accounts for every message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Aws
from tests.servers import ROOT


def test_benchmark_smoke_run(aws: Aws, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--endpoint",
            aws.endpoint,
            "--n",
            "300",
            "--scenarios",
            "raw,noop,fifo",
            "--raw-concurrency",
            "4",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = {r["scenario"]: r for r in json.loads(out.read_text())}
    assert set(results) == {
        "raw ceiling (C=4)",
        "no-op, default settings",
        "no-op, best settings",
        "FIFO, 100 groups, no-op",
    }
    for r in results.values():
        assert r["losses"] == 0
        assert r["duplicates"] == 0
        assert r["rate"] > 0
        assert 0.1 <= r["requests_per_message"] <= 2
        assert r["peak_rss_mb"] > 10
    assert results["raw ceiling (C=4)"]["ratio"] == 1.0
    noop = results["no-op, default settings"]
    # The proxy's count and the worker's own agree (the worker also resolves its queue).
    assert abs(noop["requests_per_message"] - noop["worker_requests_per_message"]) * 300 <= 3
    assert results["FIFO, 100 groups, no-op"]["extra"]["order_violations"] == 0
