"""One message through its handler, to exactly one outcome.

=====================  =============================================================
handler outcome        what happens to the message
=====================  =============================================================
returns                deleted (batched)
raises ``Retry(d)``    visible again in ``d`` seconds
raises PermanentFailure visible again at once; the redrive policy moves it to the DLQ
unknown/missing type,  same as PermanentFailure, with the reason logged
bad body, bad payload
raises anything else   visible again after the queue's backoff for its receive count
runs too long          cancelled at ``max_processing_time``; backoff as above
worker shuts down      cancelled after the grace period; visible again at once
=====================  =============================================================

Nothing is ever deleted without its handler having returned.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
import time
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any

import structlog

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.routing import Registry, Route
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.counters import QueueCounters
from worker.settings import QueueSettings

REJECTED_MEMORY = 10_000
REASONS = {
    "message_failed": "error",
    "message_timeout": "timeout",
    "message_retry_requested": "retry_requested",
    "message_rejected": "rejected",
}


class Processor:
    def __init__(
        self,
        queue: str,
        settings: QueueSettings,
        registry: Registry,
        acker: Acker,
        counters: QueueCounters,
        executor: Executor,
        max_receive_count: int | None,
        metrics: Metrics,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.registry = registry
        self.acker = acker
        self.counters = counters
        self.executor = executor
        self.max_receive_count = max_receive_count
        self.metrics = metrics
        # Resolved once: the per-message path should not look loggers or labels up again.
        self.log = get_logger().bind()
        self._success_children: dict[str, tuple[Any, Any]] = {}
        # Message ids rejected as permanent failures, so a redelivery is not logged again.
        self._rejected: OrderedDict[str, None] = OrderedDict()

    def backoff(self, receive_count: int) -> int:
        schedule = self.settings.retry_backoff
        base = schedule[min(max(receive_count, 1), len(schedule)) - 1]
        return round(base * (1 + random.uniform(0, self.settings.retry_jitter)))

    async def _invoke(self, route: Route, args: tuple[Any, ...]) -> None:
        if route.is_async:
            await route.fn(*args)
            return
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, functools.partial(ctx.run, route.fn, *args))

    async def process(self, message: Message, defer_failure: bool = False) -> int | None:
        """Run the handler and settle the message. Returns None when it succeeded, else the
        visibility (seconds) the failed message gets; with ``defer_failure`` the caller
        applies that visibility itself (FIFO groups: together with the group's followers)."""
        apply = not defer_failure
        structlog.contextvars.bind_contextvars(
            queue=self.queue,
            message_id=message.message_id,
            type=message.type,
            receive_count=message.receive_count,
        )
        started = time.monotonic()
        timeout = asyncio.timeout(self.settings.max_processing_time)
        try:
            if message.message_id in self._rejected:
                # Rejected before (by this process): back to the queue at once, without
                # running or logging it again, until the redrive policy moves it.
                return self._reject_again(message, apply)
            route = self.registry.get(message.type)
            if route is None:
                reason = f"unknown message type {message.type!r}" if message.type else "message has no type"
                raise PermanentFailure(reason)
            args = route.arguments(message)
            async with timeout:
                await self._invoke(route, args)
        except PermanentFailure as exc:
            self._remember_rejection(message.message_id)
            return self._fail(
                message, started, 0, "message_rejected", apply, reason=exc.reason, permanent=True
            )
        except Retry as exc:
            return self._fail(
                message, started, int(exc.delay), "message_retry_requested", apply, reason=exc.reason
            )
        except asyncio.CancelledError:
            # Shutdown past its grace period: let another consumer have it now.
            self.acker.change_visibility(message, 0)
            self.counters.released += 1
            self.log.warning("message_cancelled", duration=self._since(started))
            raise
        except TimeoutError as exc:
            event = "message_timeout" if timeout.expired() else "message_failed"
            return self._fail(
                message,
                started,
                self.backoff(message.receive_count),
                event,
                apply,
                error=f"{type(exc).__name__}: {exc}"[:500] if not timeout.expired() else None,
                exc_info=not timeout.expired(),
            )
        except Exception as exc:
            return self._fail(
                message,
                started,
                self.backoff(message.receive_count),
                "message_failed",
                apply,
                error=f"{type(exc).__name__}: {exc}"[:500],
                exc_info=True,
            )
        else:
            self.acker.delete(message)
            self.counters.succeeded += 1
            duration = self._since(started)
            succeeded, timing = self._success_metrics(self.type_label(message))
            succeeded.inc()
            timing.observe(duration)
            self.log.info("message_succeeded", duration=duration)
            return None

    def _fail(
        self,
        message: Message,
        started: float,
        visibility: int,
        event: str,
        apply: bool,
        *,
        permanent: bool = False,
        exc_info: bool = False,
        **fields: Any,
    ) -> int:
        if apply:
            self.acker.change_visibility(message, visibility)
        self.counters.failed += 1
        if permanent:
            self.counters.rejected += 1
        last_try = self.max_receive_count is not None and message.receive_count >= self.max_receive_count
        duration = self._since(started)
        label = self.type_label(message)
        self.metrics.failed.labels(self.queue, label, REASONS[event]).inc()
        (self.metrics.dead_lettered if last_try else self.metrics.retried).labels(self.queue, label).inc()
        self.metrics.duration.labels(self.queue, label).observe(duration)
        self.log.warning(
            event,
            duration=duration,
            retry_in=visibility,
            dead_letter_next=last_try,
            exc_info=exc_info,
            **{k: v for k, v in fields.items() if v is not None},
        )
        return visibility

    def _success_metrics(self, label: str) -> tuple[Any, Any]:
        children = self._success_children.get(label)
        if children is None:
            children = (
                self.metrics.succeeded.labels(self.queue, label),
                self.metrics.duration.labels(self.queue, label),
            )
            self._success_children[label] = children
        return children

    def _remember_rejection(self, message_id: str) -> None:
        self._rejected[message_id] = None
        if len(self._rejected) > REJECTED_MEMORY:
            self._rejected.popitem(last=False)

    def _reject_again(self, message: Message, apply: bool) -> int:
        if apply:
            self.acker.change_visibility(message, 0)
        self.counters.failed += 1
        self.counters.rejected += 1
        label = self.type_label(message)
        self.metrics.failed.labels(self.queue, label, "rejected").inc()
        last_try = self.max_receive_count is not None and message.receive_count >= self.max_receive_count
        (self.metrics.dead_lettered if last_try else self.metrics.retried).labels(self.queue, label).inc()
        self.log.debug("message_rejected_again", dead_letter_next=last_try)
        return 0

    def type_label(self, message: Message) -> str:
        known = message.type is not None and self.registry.get(message.type) is not None
        return message.type if known and message.type else "unknown"

    @staticmethod
    def _since(started: float) -> float:
        return round(time.monotonic() - started, 4)
