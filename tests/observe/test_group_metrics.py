"""``health.group_metrics``: handler outcomes counted per MessageGroupId in
``sqs_worker_group_messages_total{queue,group,outcome}``, only when switched on (a label per
tenant is a cardinality risk), against LocalStack."""

from __future__ import annotations

import json

from tests.conftest import Aws, eventually, running, settings_for
from tests.observe.test_metrics import scrape
from worker import Message, PermanentFailure, Retry, Router

GROUP_SERIES = "sqs_worker_group_messages_total"


def tenants_router() -> Router:
    router = Router()

    @router.handler("job")
    async def job(payload: dict[str, str], message: Message) -> None:
        if payload.get("reject"):
            raise PermanentFailure("unknown tenant")
        if payload.get("fail") and message.receive_count == 1:
            raise Retry(0, "once more")

    return router


async def send(aws: Aws, url: str, body: dict[str, str], group: str | None) -> None:
    extra = {} if group is None else {"MessageGroupId": group}
    await aws.sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(body),
        MessageAttributes={"type": {"DataType": "String", "StringValue": "job"}},
        **extra,
    )


async def test_outcomes_are_counted_per_group_only_when_switched_on(aws: Aws) -> None:
    queue = await aws.queue()
    for body, group in (
        ({}, "acme"),
        ({"fail": "1"}, "acme"),
        ({"reject": "1"}, "globex"),
        ({}, None),  # no group: counted nowhere per group
    ):
        await send(aws, queue.url, body, group)
    settings = settings_for(aws.endpoint, queue, health={"group_metrics": True})
    async with running(settings, tenants_router()) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 3 and counters.rejected == 1, timeout=15)
        text, m = scrape(worker.metrics)
    grouped = {labels: value for (name, labels), value in m.items() if name == GROUP_SERIES}
    assert grouped == {
        (("group", "acme"), ("outcome", "succeeded"), ("queue", "q")): 2,
        (("group", "acme"), ("outcome", "failed"), ("queue", "q")): 1,
        (("group", "globex"), ("outcome", "rejected"), ("queue", "q")): 1,
    }

    # Off by default: not one series per group, whatever the messages carry.
    await send(aws, queue.url, {}, "initech")
    async with running(settings_for(aws.endpoint, queue), tenants_router()) as worker:
        counters = worker.consumers[0].counters
        await eventually(lambda: counters.succeeded == 1, timeout=15)
        text, m = scrape(worker.metrics)
    assert not [key for key in m if key[0] == GROUP_SERIES]
    assert "initech" not in text
