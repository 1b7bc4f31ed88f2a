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
    # Each DLQ message says why it is there; a cut body ends with "…".
    assert "reason: unsupported payment method 'bitcoin'" in out
    assert "reason: unknown message type 'order.refunded'" in out
    assert "reason: moved by SQS's redrive policy" in out  # A-1003: its retries ran out
    assert any(line.endswith("…") for line in out.splitlines() if "-dlq  type=" in line)


def test_the_summary_line_of_a_dead_letter_shows_its_reason_and_marks_a_cut() -> None:
    """Was: the body cut at 60 characters without a mark, and no reason (the SNS envelope's
    attributes replaced the copy's own, where the worker stamps it)."""
    import json

    from worker.cli.demo import EXCERPT, _dead_letter_lines

    envelope = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:orders",
        "Message": json.dumps({"order_id": "A-1", "note": "x" * 100}),
        "MessageAttributes": {"type": {"Type": "String", "Value": "order.placed"}},
    }
    raw = {
        "MessageId": "d-1",
        "ReceiptHandle": "r",
        "Body": json.dumps(envelope),
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MessageAttributes": {
            "worker.failure_reason": {"DataType": "String", "StringValue": "unsupported payment method"}
        },
    }
    first, second = _dead_letter_lines("billing", raw).splitlines()
    assert first.startswith("  billing-dlq  type=order.placed ")
    body = first.split("body=", 1)[1]
    assert body.endswith("…")
    assert len(body) == EXCERPT
    assert body.startswith('{"order_id": "A-1"')
    assert second == "      reason: unsupported payment method"
    short = {**raw, "Body": "<order/>", "MessageAttributes": {}}
    first, second = _dead_letter_lines("billing", short).splitlines()
    assert first.endswith("body=<order/>")
    assert second.startswith("      reason: moved by SQS's redrive policy")
