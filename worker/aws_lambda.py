"""The same handler modules under AWS Lambda (SQS event source with ReportBatchItemFailures).

Set the function's handler to ``worker.aws_lambda.handler`` and list your modules in
``WORKER_HANDLERS`` (comma-separated, e.g. ``handlers.billing,handlers.shipping``), or build
one yourself with ``make_handler(router, ...)``. Each record goes through the same routing,
decoding, middleware and outcome rules as in the worker; start-up hooks run once per
execution environment (cold start), on one event loop kept for its lifetime.

What Lambda can express is less than the worker does: a failed record is reported in
``batchItemFailures`` and becomes visible after the queue's visibility timeout (Lambda
does not take a per-message delay), so ``Retry(delay)`` and the backoff schedule do not
apply, and a rejected record is retried until the redrive policy moves it. On FIFO queues
a group stops at its first failure: that record and every later record of its group are
reported, so the group resumes in order. On a standard queue a MessageGroupId (a fair
queue's tenant) stops nothing: each record runs and is reported on its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from worker.errors import ConfigError
from worker.messages.envelope import parse_message
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Router
from worker.runtime.context import QueueContext
from worker.runtime.lease import Leases
from worker.runtime.processor import Processor
from worker.settings import QueueSettings

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def to_receive_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda SQS record in the shape ReceiveMessage returns."""
    attributes = {}
    for name, value in (record.get("messageAttributes") or {}).items():
        entry = {"DataType": value.get("dataType", "String")}
        if value.get("stringValue") is not None:
            entry["StringValue"] = value["stringValue"]
        if value.get("binaryValue") is not None:
            entry["BinaryValue"] = value["binaryValue"]
        attributes[name] = entry
    return {
        "MessageId": record["messageId"],
        "ReceiptHandle": record.get("receiptHandle", ""),
        "Body": record.get("body", ""),
        "Attributes": dict(record.get("attributes") or {}),
        "MessageAttributes": attributes,
    }


class LambdaRunner:
    def __init__(
        self, registry: Registry, type_attribute: str = "type", settings: QueueSettings | None = None
    ) -> None:
        for route in registry.idempotent:
            # The record is tied to the worker's lease of the message; Lambda's poller holds it.
            raise ConfigError(
                f"{route.source} is idempotent=True, which the Lambda entry point does not run "
                "(no lease to tie its record to): run it in the worker, or use Powertools' idempotency"
            )
        self.registry = registry
        self.resources = Resources()
        self.loop = asyncio.new_event_loop()
        settings = settings or QueueSettings(handlers=["<lambda>"])
        ctx = QueueContext.standalone(
            "lambda", settings, registry, resources=self.resources, type_attribute=type_attribute
        )
        self._types = ctx.types
        self._processor = Processor(ctx)
        self._leases = Leases(lambda lease: None)
        self._started = False

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.loop.run_until_complete(self.handle(event))

    async def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self._started:
            for router in self.registry.routers:
                for hook in router.startup:
                    await hook(self.resources)
            self._started = True
        failures: list[str] = []
        stopped_groups: set[str] = set()
        for record in event.get("Records") or []:
            raw = to_receive_entry(record)
            message = parse_message(raw, self._types)
            # Groups are ordered on FIFO queues only: on a standard queue a MessageGroupId
            # names a fair queue's tenant, and its messages are independent.
            group = message.group_id if _from_fifo(record) else None
            if group is not None and group in stopped_groups:
                failures.append(message.message_id)  # after a failure of its group: not run
                continue
            lease = self._leases.open(message, raw, time.monotonic(), 30)
            outcome = await self._processor.run_one(lease)
            if outcome.kind != "succeeded":
                failures.append(message.message_id)
                if group is not None:
                    stopped_groups.add(group)
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}


def _from_fifo(record: dict[str, Any]) -> bool:
    """Whether ``record`` came from a FIFO queue: its queue's ARN says (a record without one,
    hand-made, by the deduplication id only FIFO messages carry)."""
    arn = record.get("eventSourceARN")
    if isinstance(arn, str) and arn:
        return arn.endswith(".fifo")
    return "MessageDeduplicationId" in (record.get("attributes") or {})


def make_handler(
    *routers: Router, type_attribute: str = "type", settings: QueueSettings | None = None
) -> LambdaHandler:
    """A Lambda handler for ``routers``; ``settings``: a queue's settings (its ``types``:
    where messages carry their type, the default type)."""
    return LambdaRunner(Registry.of(*routers), type_attribute, settings)


_default: LambdaRunner | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The ready-made entry point: modules from ``WORKER_HANDLERS``."""
    global _default
    if _default is None:
        modules = [m.strip() for m in os.environ.get("WORKER_HANDLERS", "").split(",") if m.strip()]
        if not modules:
            raise RuntimeError("set WORKER_HANDLERS to your handler modules, e.g. handlers.billing")
        _default = LambdaRunner(
            Registry.from_modules(modules), os.environ.get("WORKER_MESSAGE_TYPE_ATTRIBUTE", "type")
        )
    return _default(event, context)
