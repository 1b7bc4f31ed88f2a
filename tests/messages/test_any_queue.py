"""Queues fed by an EventBridge rule and by an AWS service's SNS notifications, consumed end
to end by a worker process on LocalStack, with the handler chosen by the configuration
alone (the producers set no type the worker knows)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.conftest import Aws, eventually
from tests.messages.sample_events import cloudwatch_alarm_message
from tests.support.process import WorkerProcess

pytestmark = pytest.mark.timeout(120)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _config(aws: Aws, queues: dict[str, dict[str, object]]) -> dict[str, object]:
    return {
        "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1"},
        "shutdown_grace": 5,
        "queues": {
            key: {"handlers": ["tests.support.any_queue"], "wait_time_seconds": 1, **q}
            for key, q in queues.items()
        },
    }


async def test_an_eventbridge_rule_and_an_aws_service_topic_reach_their_handlers(
    aws: Aws, tmp_path: Path
) -> None:
    async with get_session().create_client(
        "events", endpoint_url=aws.endpoint, region_name="us-east-1"
    ) as events:
        await _run(aws, events, tmp_path)


async def _run(aws: Aws, events: Any, tmp_path: Path) -> None:
    rules_queue = await aws.queue(prefix="eb")
    alarms_queue = await aws.queue(prefix="alarms")
    rule = f"orders-{rules_queue.name}"
    await events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["shop.orders"]}))
    await events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": rules_queue.arn}])
    topic = (await aws.sns.create_topic(Name=f"ops-{alarms_queue.name}"))["TopicArn"]
    await aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=alarms_queue.arn)

    record = tmp_path / "records.jsonl"
    worker = WorkerProcess(
        tmp_path,
        _config(
            aws,
            {
                "orders": {"name": rules_queue.name},
                # An alarm's notification has no type anywhere: the queue names the handler's.
                "alarms": {"name": alarms_queue.name, "types": {"default": "alarm"}},
            },
        ),
        {"RECORD_FILE": str(record)},
    ).start()
    try:
        await eventually(lambda: "consumer_started" in worker.log(), timeout=30)
        await events.put_events(
            Entries=[
                {
                    "Source": "shop.orders",
                    "DetailType": "Order Placed",
                    "Detail": json.dumps({"order_id": "E-1"}),
                }
            ]
        )
        await aws.sns.publish(
            TopicArn=topic, Subject='ALARM: "orders-dlq-not-empty"', Message=cloudwatch_alarm_message()
        )
        await eventually(lambda: len(_records(record)) == 2, timeout=30)
        await eventually(lambda: _settled(aws, rules_queue.url, alarms_queue.url), timeout=30)
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.wait(30)
    by_handler = {r["handler"]: r for r in _records(record)}
    assert by_handler["order_placed"]["payload"] == {"order_id": "E-1"}
    assert by_handler["order_placed"]["type"] == "Order Placed"
    assert by_handler["order_placed"]["envelope"] == "eventbridge"
    assert by_handler["order_placed"]["source"] == "shop.orders"
    alarm = by_handler["alarm"]
    assert alarm["type"] is None
    assert alarm["topic_arn"] == topic
    assert isinstance(alarm["payload"], dict)
    assert alarm["payload"]["NewStateValue"] == "ALARM"
    assert code == 0, worker.log()[-2000:]
    assert "message_rejected" not in worker.log()


async def _settled(aws: Aws, *urls: str) -> bool:
    return all([await aws.total(url) == 0 for url in urls])
