"""Rates, caps of runs at once and slow mode (``worker.runtime.flow``).

A message whose route is over its limits waits here, leased (the heartbeat keeps
extending it; none of its attempts is spent), until it may start: a token of the queue's
and the route's rate, a place under the route's ``max_concurrency`` (one, in slow mode)
and under ``max_per_group`` for its message group. A deadline that passes while it waits
is a wait, not a failure (``processor._DEPENDENCY_OF_STAGE``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.messages.outcomes import DependencyUnavailable, PermanentFailure
from worker.messages.routing import Route
from worker.observe.logs import get_logger
from worker.runtime.call import Call, Next
from worker.runtime.context import QueueContext
from worker.runtime.flow import SlowMode, TokenBucket

log = get_logger()


@dataclass(slots=True)
class _RouteLimits:
    bucket: TokenBucket | None
    cap: int | None
    """``max_concurrency``: runs at once."""
    slow: SlowMode
    running: int = 0


@dataclass(slots=True)
class _Groups:
    limit: int
    running: dict[str, int] = field(default_factory=dict)


class LimitsStep:
    stage = "limits"

    def __init__(self, ctx: QueueContext) -> None:
        settings = ctx.settings
        self._queue = ctx.key
        self.bucket = TokenBucket(settings.rate, settings.burst) if settings.rate else None
        """The queue's rate (the poller asks it how many to receive)."""
        self._groups = _Groups(settings.max_per_group) if settings.max_per_group else None
        self._overrides = settings.routes
        self._slow_after = settings.slow_mode_after
        self._routes: dict[str, _RouteLimits] = {}
        self._changed = asyncio.Condition()
        self._waiters = 0

    def _limits(self, route: Route) -> _RouteLimits:
        limits = self._routes.get(route.message_type)
        if limits is None:
            over = self._overrides.get(route.message_type)
            rate = over.rate if over is not None and over.rate is not None else route.rate
            burst = over.burst if over is not None and over.burst is not None else route.burst
            cap = over.max_concurrency if over is not None and over.max_concurrency else route.max_concurrency
            limits = self._routes[route.message_type] = _RouteLimits(
                TokenBucket(rate, burst) if rate else None,
                cap or None,
                SlowMode(self._slow_after),
            )
        return limits

    async def __call__(self, call: Call, call_next: Next) -> None:
        call.stage = self.stage
        route = call.route
        if route is None:
            await call_next(call)
            return
        limits = self._routes.get(route.message_type) or self._limits(route)
        queue_bucket, route_bucket = self.bucket, limits.bucket
        if queue_bucket is not None or route_bucket is not None:
            wait = 0.0
            for bucket in (queue_bucket, route_bucket):
                if bucket is not None:
                    for _ in call.live:
                        wait = max(wait, bucket.take())
            if wait > 0:
                await asyncio.sleep(wait)
        groups = self._group_ids(call) if self._groups is not None else ()
        slow = limits.slow
        cap = 1 if slow.on else limits.cap
        if (cap is not None and limits.running >= cap) or (groups and not self._may_start(limits, groups)):
            self._waiters += 1  # (the common case starts without the lock)
            try:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._may_start(limits, groups))
            finally:
                self._waiters -= 1
        limits.running += 1
        if groups:
            self._enter(groups)
        try:
            await call_next(call)
        except (PermanentFailure, DependencyUnavailable, asyncio.CancelledError):
            raise  # bad input, a dependency's outage, a stop: nothing about the handler
        except Exception:
            self._failed(route, limits)
            raise
        else:
            if call.batch and isinstance(call.value, dict) and len(call.value) >= len(call.items):
                self._failed(route, limits)
            elif slow.failures and slow.succeeded():  # (resets the count; True if it was on)
                log.info("slow_mode_ended", queue=self._queue, type=route.message_type)
        finally:
            limits.running -= 1
            if groups:
                self._leave(groups)
            if self._waiters:
                asyncio.get_running_loop().create_task(self._notify())

    def _group_ids(self, call: Call) -> list[str]:
        return [item.message.group_id for item in call.live if item.message.group_id is not None]

    def _may_start(self, limits: _RouteLimits, groups: Sequence[str]) -> bool:
        cap = 1 if limits.slow.on else limits.cap
        if cap is not None and limits.running >= cap:
            return False
        if self._groups is not None:
            running = self._groups.running
            return all(running.get(g, 0) < self._groups.limit for g in groups)
        return True

    def _enter(self, groups: Sequence[str]) -> None:
        assert self._groups is not None
        running = self._groups.running
        for g in groups:
            running[g] = running.get(g, 0) + 1

    def _leave(self, groups: Sequence[str]) -> None:
        assert self._groups is not None
        running = self._groups.running
        for g in groups:
            left = running[g] - 1
            if left:
                running[g] = left
            else:
                del running[g]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _failed(self, route: Route, limits: _RouteLimits) -> None:
        if limits.slow.failed():
            log.warning(
                "slow_mode_started",
                queue=self._queue,
                type=route.message_type,
                failures=limits.slow.failures,
                detail="one message at a time until one succeeds",
            )


def build(ctx: QueueContext) -> LimitsStep | None:
    """The step, for a queue with any limit (else none: nothing to pay for)."""
    s = ctx.settings
    limited = any(r.rate or r.max_concurrency for r in ctx.routes)
    if not (s.rate or s.max_per_group or s.slow_mode_after or s.routes or limited):
        return None
    return LimitsStep(ctx)
