"""The handler's invocation, the innermost step: one path for single and batch handlers,
async functions and plain ones.

A single-message handler is called with its payload (and what else it asks for); a batch
handler with the list of payloads. A plain function runs in the worker's thread pool, and
a thread cannot be stopped: while it runs its messages stay leased (the heartbeat extends
them) and are never run again, past ``max_processing_time`` (``steps.deadline``) or past
the shutdown's grace (``Halt``). Only at the shutdown's final deadline is it left behind
(``Abandoned``): its messages reappear after their visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from worker.messages.resources import Resources
from worker.observe.logs import get_logger
from worker.runtime.call import Abandoned, Call, Next
from worker.runtime.context import Halt, QueueContext

log = get_logger()


class InvokeStep:
    stage = "handler"

    def __init__(self, ctx: QueueContext) -> None:
        self._resources: Resources = ctx.resources
        self._executor: Executor = ctx.executor
        self._halt: Halt = ctx.halt
        self._idempotency = ctx.idempotency

    async def __call__(self, call: Call, call_next: Next) -> None:
        route = call.route
        assert route is not None
        call.stage = self.stage
        items = call.live
        if call.replayed:  # an earlier run of its idempotency key completed: not run again
            claim = items[0].claim
            assert claim is not None
            call.value = claim.result()
            return
        if call.batch:
            args = route.batch_arguments(
                [item.payload for item in items], [item.message for item in items], self._resources
            )
        else:
            item = items[0]
            record = None
            if item.claim is not None and self._idempotency is not None:
                record = item.claim.record(self._idempotency)
            args = route.arguments(item.message, self._resources, record, payload=item.payload)
        if route.is_async:
            value = await route.fn(*args)
        else:
            value = await self._in_thread(call, route.fn, args)
        call.value = value
        if not call.batch and items[0].claim is not None:
            items[0].claim.value = value  # stored as the handler returned it

    async def _in_thread(self, call: Call, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._executor, functools.partial(_in_thread, contextvars.copy_context(), fn, args)
        )
        call.in_thread = True
        try:
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if future.done() or not self._halt.grace_over:
                    raise
            # The shutdown's grace ended while the thread runs: keep waiting for it (its
            # result still counts) until the final deadline.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            log.info("handler_thread_still_running", messages=len(call.live))
            final = asyncio.ensure_future(self._halt.final.wait())
            try:
                await asyncio.wait({future, final}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if task is not None and task.cancelling():
                    task.uncancel()
            finally:
                final.cancel()
            if future.done():
                return future.result()
            log.warning("handler_thread_abandoned", messages=len(call.live))
            raise Abandoned()
        finally:
            call.in_thread = False


_threads_running = 0
_threads_lock = threading.Lock()


def _in_thread(ctx: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run a plain-function handler in a pool thread, counted while it runs."""
    global _threads_running
    with _threads_lock:
        _threads_running += 1
    try:
        return ctx.run(fn, *args)
    finally:
        with _threads_lock:
            _threads_running -= 1


def handler_threads_running() -> int:
    """Plain-function handlers running now (the CLI does not wait for them at exit)."""
    return _threads_running
