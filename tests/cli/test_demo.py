"""README's first command: the demo runs end to end on the embedded server."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT


def test_demo_runs_end_to_end_on_the_embedded_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--log-level", "warning"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "embedded SQS/SNS server" in out
    assert "10 handled successfully, 4 dead-lettered" in out
    assert "Plan: 26 to create" in out  # the topology came from worker provision
    assert "billing-dlq" in out
    assert "A-1003" in out  # the order whose card always fails ended in the DLQ
    # The slow carrier booking outlived the 4 s visibility timeout and was extended.
    shipping = next(line for line in out.splitlines() if line.startswith("shipping"))
    assert int(shipping.split()[4]) > 0
