"""``worker demo``: the whole job end to end on an embedded SQS/SNS server.

Starts moto's server in-process (unless an endpoint is given), provisions the example
topology of config/topology.yaml (an ``orders`` topic fanning out to ``billing``, enveloped,
``shipping``, raw, and ``invoicing``, filtered on the body, each with a dead-letter queue),
publishes sample orders and a few bad messages, runs the worker with the example handlers
until every queue is drained, and prints what happened, including the messages that ended
in a dead-letter queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from worker.aws import AwsClient
from worker.observe.logs import configure_logging
from worker.ops.provision import Provisioner, render_plan
from worker.ops.queue_stats import queue_counts
from worker.ops.topology import load_topology
from worker.runtime.supervisor import Supervisor, load_registries
from worker.settings import WorkerSettings, load_settings


def _demo_root() -> Path:
    """Where the demo's handlers/ and config/ are: inside the installed package (the wheel
    maps the repository's own files to worker/_demo/, pyproject.toml), or, in a checkout,
    the repository itself. One copy of the example code either way."""
    packaged = Path(__file__).resolve().parents[1] / "_demo"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2]


ROOT = _demo_root()
CONFIG = ROOT / "config" / "demo.yaml"
TOPOLOGY = ROOT / "config" / "topology.yaml"
# billing: A-1001, A-1002 charged, A-1002 refunded; shipping: 4 reservations, 2 bookings;
# invoicing: A-1002 (paid by invoice: the body filter matches).
# DLQ: A-1003 (fails every time), A-1004 (permanent), an unknown type, a non-JSON body.
EXPECTED = (10, 4)
CONSUMED = ("billing", "shipping", "invoicing")


def _order(order_id: str, payment: str = "card") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-42",
        "items": [{"sku": "mug", "quantity": 2, "unit_price": 7.5}],
        "payment_method": payment,
    }


EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("order.placed", _order("A-1001")),
    ("order.placed", _order("A-1002", "invoice")),
    ("order.placed", _order("A-1003", "expired-card")),  # fails every time -> billing DLQ
    ("order.placed", _order("A-1004", "bitcoin")),  # PermanentFailure -> billing DLQ
    ("order.shipped", {"order_id": "A-1001", "carrier": "dhl", "tracking_number": "DHL-1"}),  # slow
    ("order.shipped", {"order_id": "A-1002", "carrier": "pigeon", "tracking_number": "P-2"}),  # Retry
    ("order.cancelled", {"order_id": "A-1002", "reason": "customer changed their mind"}),
]


async def provision(sqs: Any, sns: Any, cloudwatch: Any) -> dict[str, str]:
    """``worker provision`` on config/topology.yaml, the same code path as the command."""
    topology = load_topology(TOPOLOGY)
    provisioner = Provisioner(topology, AwsClient(sqs), AwsClient(sns), cloudwatch=AwsClient(cloudwatch))
    changes = await provisioner.plan()
    print(render_plan(changes))
    await provisioner.apply(changes)
    urls = dict(provisioner.existing.queue_urls)
    urls["topic"] = provisioner.existing.topic_arns["orders"]
    return urls


async def publish(sqs: Any, sns: Any, urls: dict[str, str]) -> int:
    for message_type, payload in EVENTS:
        await sns.publish(
            TopicArn=urls["topic"],
            Message=json.dumps(payload),
            MessageAttributes={"type": {"DataType": "String", "StringValue": message_type}},
        )
    # Bad input sent straight to a queue: an unknown type and a body that is not JSON.
    await sqs.send_message(
        QueueUrl=urls["billing"],
        MessageBody=json.dumps({"type": "order.refunded", "order_id": "A-1002"}),
    )
    await sqs.send_message(
        QueueUrl=urls["billing"],
        MessageBody="<order id='A-1005'/>",
        MessageAttributes={"type": {"DataType": "String", "StringValue": "order.placed"}},
    )
    return len(EVENTS) + 2


async def _depth(sqs: Any, url: str) -> int:
    return sum(await queue_counts(AwsClient(sqs), url))


async def _dlq_messages(sqs: Any, url: str) -> list[dict[str, Any]]:
    response = await sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return list(response.get("Messages") or [])


EXCERPT = 60
"""Characters of a dead-lettered body the summary shows ("…" when there is more)."""


def _dead_letter_lines(key: str, raw: dict[str, Any]) -> str:
    """A DLQ message for the summary: its queue, type and body (the published message of an
    SNS envelope; cut with "…"), and the reason: the ``worker.failure_reason`` the worker
    stamps when it dead-letters a message itself, else SQS's redrive policy moved it."""
    from worker.messages.envelope import parse_message
    from worker.messages.outcomes import REASON_ATTRIBUTE

    message = parse_message(raw)
    body = " ".join(message.body.split())
    excerpt = body if len(body) <= EXCERPT else body[: EXCERPT - 1] + "…"
    reason = message.attributes.get(REASON_ATTRIBUTE) or (
        "moved by SQS's redrive policy, which records no reason (see message_failed in the log)"
    )
    kind = message.type or "(none)"
    return f"  {key}-dlq  type={kind:<16} body={excerpt}\n      reason: {reason}"


async def _run(settings: WorkerSettings) -> int:
    session = get_session()
    endpoint = settings.aws.resolved_endpoint()
    region = settings.aws.resolved_region()
    async with (
        session.create_client("sqs", endpoint_url=endpoint, region_name=region) as sqs,
        session.create_client("sns", endpoint_url=endpoint, region_name=region) as sns,
        session.create_client("cloudwatch", endpoint_url=endpoint, region_name=region) as cloudwatch,
    ):
        urls = await provision(sqs, sns, cloudwatch)
        sent = await publish(sqs, sns, urls)
        print(f"demo: provisioned config/topology.yaml; published {sent} messages to 'orders'")
        supervisor = Supervisor(settings, load_registries(settings))
        task = asyncio.create_task(supervisor.run())
        deadline = time.monotonic() + 90
        quiet = 0
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(1)
            depth = sum([await _depth(sqs, urls[q]) for q in CONSUMED])
            busy = sum(c.in_flight for c in supervisor.consumers)
            quiet = quiet + 1 if depth == 0 and busy == 0 else 0
            if quiet >= 2:
                break
        supervisor.request_stop()
        await task
        print("\n=== demo summary ===")
        print(f"{'queue':<10}{'received':>9}{'ok':>5}{'failed':>8}{'extended':>10}{'in DLQ':>8}")
        dead: list[tuple[str, dict[str, Any]]] = []
        for consumer in supervisor.consumers:
            key = consumer.target.key
            in_dlq = await _dlq_messages(sqs, urls[f"{key}-dlq"])
            dead += [(key, m) for m in in_dlq]
            s = consumer.counters
            print(f"{key:<10}{s.received:>9}{s.succeeded:>5}{s.failed:>8}{s.extended:>10}{len(in_dlq):>8}")
        print("\nmessages in dead-letter queues, with why they are there:")
        for key, m in dead:
            print(_dead_letter_lines(key, m))
        ok = sum(c.counters.succeeded for c in supervisor.consumers)
        print(f"\n{ok} handled successfully, {len(dead)} dead-lettered; worker stopped cleanly.")
        if (ok, len(dead)) != EXPECTED:
            print(f"demo: expected {EXPECTED[0]} handled and {EXPECTED[1]} dead-lettered", file=sys.stderr)
            return 1
        return 0


def run_demo(endpoint_url: str | None = None, log_level: str = "info") -> int:
    server = None
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint is None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            print(
                "worker demo: the embedded server needs moto: pip install 'aio-sqs-worker[demo]'",
                file=sys.stderr,
            )
            return 2
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        print(f"demo: embedded SQS/SNS server (moto) at {endpoint}")
    # A local server accepts any credentials; real ones are never needed or read here.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    os.environ.setdefault("SHIPPING_CARRIER_SECONDS", "6")  # longer than the 4 s visibility
    settings = load_settings(CONFIG, {"aws": {"region": "us-east-1", "endpoint_url": endpoint}})
    # The demo's handlers come first, whatever directory the command runs in (a project's
    # own `handlers` package must not stand in for them).
    sys.path.insert(0, str(ROOT))
    configure_logging(log_level, "auto")
    try:
        return asyncio.run(_run(settings))
    finally:
        if server is not None:
            server.stop()
