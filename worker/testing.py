"""Test handlers without SQS: a message goes through the real routing, decoding, middleware,
hooks and outcome rules in memory, and you get back what the worker would do with it.

    from worker.testing import HandlerKit, sns_message, sqs_message
    from handlers.billing import router

    async def test_bitcoin_is_rejected() -> None:
        async with HandlerKit(router) as kit:
            result = await kit.run(sqs_message({"order_id": "1", "payment_method": "bitcoin"},
                                               type="order.placed"))
        assert result.outcome == "rejected"
        assert result.reason == "unsupported payment method"

``sqs_message``/``sns_message`` build a message exactly as ReceiveMessage returns it: plain,
an SNS envelope (raw delivery off), or SNS raw delivery. For tests against a real server,
``worker.pytest_plugin`` has an ``sqs_endpoint`` fixture.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from worker.idempotency.store import MemoryStore
from worker.messages.envelope import Message, parse_message
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Router
from worker.runtime.context import QueueContext
from worker.runtime.idempotency import Idempotency
from worker.runtime.lease import Leases
from worker.runtime.processor import Processor
from worker.runtime.rules import REPLAYED
from worker.settings import QueueSettings

__all__ = ["HandlerKit", "Result", "sns_message", "sqs_message"]


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Literal["succeeded", "retry", "rejected"]
    """``succeeded``: deleted. ``retry``: visible again in ``retry_in`` seconds (or, on a
    FIFO queue, retried in place). ``rejected``: moved to the DLQ with ``reason``."""
    retry_in: int | None = None
    reason: str = ""
    message: Message | None = None
    replayed: bool = False
    """An idempotent handler's copy: succeeded without running (its key completed in
    ``kit.store``, the kit's in-memory idempotency store)."""


def _attributes(message_type: str | None, attributes: dict[str, str] | None) -> dict[str, Any]:
    values = dict(attributes or {})
    if message_type is not None:
        values.setdefault("type", message_type)
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


def _body(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body)


def sqs_message(
    body: Any,
    *,
    type: str | None = None,
    attributes: dict[str, str] | None = None,
    group_id: str | None = None,
    receive_count: int = 1,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A message as ReceiveMessage returns it (JSON-encodes a body that is not a str)."""
    system: dict[str, Any] = {
        "ApproximateReceiveCount": str(receive_count),
        "SentTimestamp": str(int(time.time() * 1000)),
    }
    if group_id is not None:
        system["MessageGroupId"] = group_id
    return {
        "MessageId": message_id or str(uuid.uuid4()),
        "ReceiptHandle": f"test-{uuid.uuid4().hex}",
        "Body": _body(body),
        "MessageAttributes": _attributes(type, attributes),
        "Attributes": system,
    }


def sns_message(
    body: Any,
    *,
    type: str | None = None,
    attributes: dict[str, str] | None = None,
    topic_arn: str = "arn:aws:sns:us-east-1:000000000000:test-topic",
    raw_delivery: bool = False,
    receive_count: int = 1,
) -> dict[str, Any]:
    """A message as an SNS subscription delivers it to SQS: enveloped (the default) or raw."""
    if raw_delivery:
        return sqs_message(body, type=type, attributes=attributes, receive_count=receive_count)
    values = dict(attributes or {})
    if type is not None:
        values.setdefault("type", type)
    envelope = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": _body(body),
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "MessageAttributes": {k: {"Type": "String", "Value": v} for k, v in values.items()},
    }
    return sqs_message(json.dumps(envelope), receive_count=receive_count)


class HandlerKit:
    """The worker's per-message path for ``routers``, in memory. ``async with`` runs their
    start-up and shutdown hooks (so handlers get their resources)."""

    def __init__(
        self,
        *routers: Router,
        settings: QueueSettings | None = None,
        type_attribute: str = "type",
    ) -> None:
        self.registry = Registry.of(*routers)
        self.settings = settings or QueueSettings(handlers=["<testing>"], retry_jitter=0)
        self.resources = Resources()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="handler")
        self.store = MemoryStore()
        """Where idempotent handlers' runs are recorded: run a message twice to see the replay."""
        idempotency = (
            Idempotency(self.store, "test", 86_400, self.settings.visibility_timeout / 2)
            if self.registry.idempotent
            else None
        )
        ctx = QueueContext.standalone(
            "test",
            self.settings,
            self.registry,
            resources=self.resources,
            executor=self._executor,
            type_attribute=type_attribute,
        )
        self._types = ctx.types
        ctx.idempotency = idempotency
        self._processor = Processor(ctx)
        self._leases = Leases(lambda lease: None)

    async def __aenter__(self) -> HandlerKit:
        for router in self.registry.routers:
            for hook in router.startup:
                await hook(self.resources)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for router in reversed(self.registry.routers):
            for hook in reversed(router.shutdown):
                await hook(self.resources)
        self._executor.shutdown(wait=False)

    async def run(self, raw: dict[str, Any]) -> Result:
        """Handle one message as the worker would; what would happen to it."""
        message = parse_message(raw, self._types)
        lease = self._leases.open(message, raw, time.monotonic(), self.settings.visibility_timeout)
        outcome = await self._processor.run_one(lease)
        if outcome.kind == "succeeded":
            return Result("succeeded", message=message, replayed=outcome is REPLAYED)
        if outcome.kind == "rejected":
            return Result("rejected", reason=outcome.reason, message=message)
        return Result("retry", retry_in=outcome.visibility, reason=outcome.reason, message=message)
