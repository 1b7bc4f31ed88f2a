"""``max_processing_time`` over the whole step chain: the body's fetch, the claim,
middleware and the handler.

An async call past its deadline is cancelled and ends as ``Overdue``. A plain function's
thread cannot be stopped: its call is marked overdue and logged (``message_overdue``), its
messages stay leased while it runs, and its result counts when it returns; it never runs
twice at once.

One timer per ``grain`` of deadlines (a thousandth of ``max_processing_time``, at least
10 ms, rounded up) instead of one per call: ``asyncio.timeout`` costs a timer, its heap
entry and its cancellation for every message. A timer is never cancelled; one whose calls
all left fires for nothing, so there are at most a thousand of them.
"""

from __future__ import annotations

import asyncio
import math

from worker.observe.logs import get_logger
from worker.runtime.call import Call, Next, Overdue
from worker.runtime.context import Halt, QueueContext

log = get_logger()


class Deadlines:
    def __init__(self, seconds: float, queue: str = "") -> None:
        self._seconds = seconds
        self._queue = queue
        self._grain = max(0.01, seconds / 1000)
        self._slots: dict[int, dict[int, Call]] = {}
        self._cancelled: set[int] = set()

    def enter(self, call: Call) -> int:
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self._seconds) / self._grain)
        calls = self._slots.get(slot)
        if calls is None:
            calls = self._slots[slot] = {}
            loop.call_at(slot * self._grain, self._expire, slot)
        calls[id(call)] = call
        return slot

    def leave(self, call: Call, slot: int) -> bool:
        """``call`` is out of the chain; True when its deadline cancelled it."""
        calls = self._slots.get(slot)
        if calls is not None:
            calls.pop(id(call), None)
        if id(call) in self._cancelled:
            self._cancelled.discard(id(call))
            return True
        return False

    def _expire(self, slot: int) -> None:
        for call in self._slots.pop(slot).values():  # (each slot's one timer)
            if call.in_thread:
                log.warning(
                    "message_overdue",
                    queue=self._queue,
                    message_ids=[item.message.message_id for item in call.live],
                    limit=self._seconds,
                    detail="thread still running: its messages stay leased, its result counts",
                )
            elif call.task is not None:
                self._cancelled.add(id(call))
                call.overdue = True
                call.task.cancel()


class DeadlineStep:
    stage = "deadline"

    def __init__(self, ctx: QueueContext) -> None:
        self.deadlines = Deadlines(ctx.settings.max_processing_time, ctx.key)
        self._halt: Halt = ctx.halt

    async def __call__(self, call: Call, call_next: Next) -> None:
        task = asyncio.current_task()
        assert task is not None
        call.task = task
        deadlines = self.deadlines
        slot = deadlines.enter(call)
        try:
            await call_next(call)
        except (asyncio.CancelledError, TimeoutError):
            # Ours, or the handler turned our cancel into a TimeoutError. Shutdown wins over
            # the deadline: the message is released, not failed.
            if deadlines.leave(call, slot):
                task.uncancel()
                if not self._halt.grace_over:
                    raise Overdue() from None
            raise
        except BaseException:
            if deadlines.leave(call, slot):
                task.uncancel()
            raise
        if deadlines.leave(call, slot):  # it swallowed the cancel and returned
            task.uncancel()
