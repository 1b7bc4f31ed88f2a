"""Long-poll ReceiveMessage for as many messages as there are free slots.

A poller takes its slots before it asks, so a message is only received when it can start
at once. Transient AWS errors are retried inside the call (backoff with jitter, forever);
anything else ends ``poll_forever``, and ``supervise`` logs it and starts it again with
backoff, so a poller is never silently lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from worker.aws import AwsClient
from worker.messages.envelope import Message, parse_message
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.counters import QueueCounters
from worker.runtime.slots import Slots
from worker.settings import QueueSettings

log = get_logger()


class Poller:
    def __init__(
        self,
        stopping: Callable[[], bool],
        sqs: AwsClient,
        queue: str,
        url: str,
        settings: QueueSettings,
        slots: Slots,
        counters: QueueCounters,
        type_attribute: str,
        dispatch: Callable[[list[Message], float], None],
        metrics: Metrics,
        type_label: Callable[[Message], str],
    ) -> None:
        self._stopping = stopping
        self._sqs = sqs
        self._queue = queue
        self._url = url
        self._settings = settings
        self._slots = slots
        self._counters = counters
        self._type_attribute = type_attribute
        self._dispatch = dispatch
        self._metrics = metrics
        self._type_label = type_label
        self._received: dict[str, Any] = {}
        self.last_receive_ok: float | None = None

    async def receive_once(self) -> int:
        wanted = await self._slots.acquire(self._settings.batch_size)
        got = 0
        sent_at = time.monotonic()
        try:
            response = await self._sqs.call(
                "receive_message",
                retry_for=None,
                QueueUrl=self._url,
                MaxNumberOfMessages=wanted,
                WaitTimeSeconds=self._settings.wait_time_seconds,
                VisibilityTimeout=self._settings.visibility_timeout,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            received_at = time.monotonic()
            self.last_receive_ok = received_at
            self._metrics.receive_latency.labels(self._queue).observe(received_at - sent_at)
            raw: list[dict[str, Any]] = response.get("Messages") or []
            messages = [parse_message(m, self._type_attribute) for m in raw]
            got = len(messages)
            self._counters.receives += 1
            self._counters.received += got
            for m in messages:
                label = self._type_label(m)
                counter = self._received.get(label)
                if counter is None:
                    counter = self._received[label] = self._metrics.received.labels(self._queue, label)
                counter.inc()
            if not got:
                self._counters.empty_receives += 1
            self._dispatch(messages, received_at)
            return got
        finally:
            self._slots.release(wanted - got)

    async def poll_forever(self) -> None:
        while not self._stopping():
            await self.receive_once()


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    counters: QueueCounters,
    on_restart: Callable[[], None] | None = None,
    max_backoff: float = 30.0,
) -> None:
    """Run ``run`` until cancelled; log and restart it with backoff when it dies."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > 60:
                failures = 0
            failures += 1
            counters.poller_restarts += 1
            if on_restart:
                on_restart()
            delay = min(max_backoff, 0.5 * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            log.error(
                "poller_crashed",
                task=name,
                error=f"{type(exc).__name__}: {exc}"[:500],
                restart_in=round(delay, 2),
                failures=failures,
                exc_info=True,
            )
            await asyncio.sleep(delay)
