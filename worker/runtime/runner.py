"""Running received messages: one loop for every message, single or batch, standard or FIFO.

Standard queues run each message as its own task, with a MessageGroupId or without (on a
standard queue it names the message's tenant for SQS fair queues, which promise no order:
messages of one group run side by side); a batch handler's messages collect in a
``Batcher`` first. FIFO queues (known by their ``FifoQueue`` attribute) run the messages of
one MessageGroupId from one receive strictly one after another (consecutive messages of a
batch type as one batch), different groups in parallel.

Every run goes through ``Runner.settle_run``: the processor runs the chain once, each
message's decision (``worker.runtime.rules``) is carried out, and the messages whose
decision is ``WAIT`` are run again here, leased, after their delay: a FIFO message retried
in place (while a group's message is in flight SQS hands no other message of that group to
anyone, so the followers are held back, neither run nor counted), or any message waiting
for a dependency of the worker's. Only a message's own failures count as its attempts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from worker.messages.routing import Route
from worker.observe.logs import get_logger
from worker.runtime.batcher import Batcher
from worker.runtime.context import QueueContext
from worker.runtime.lease import Lease, State
from worker.runtime.processor import Processor
from worker.runtime.rules import Action
from worker.runtime.settler import Settler

log = get_logger()


class Runner:
    def __init__(self, ctx: QueueContext, processor: Processor, settler: Settler, fifo: bool) -> None:
        self._ctx = ctx
        self._processor = processor
        self._settler = settler
        self._fifo = fifo
        self._retried = ctx.metrics.retried
        self.tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, Lease] = {}
        """The leases in a run now, by message id: a redelivery of one waits for it."""
        self._batchers: dict[str, Batcher] = {}
        self._stop = asyncio.Event()
        self.stopping = False

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, leases: list[Lease]) -> None:
        """Start what was received (every lease of ``leases`` is live and RUNNING); never
        raises: a bug of ours gives the messages back instead of leaving them leased."""
        try:
            self._dispatch(leases)
        except Exception:
            self._bug(leases)

    def _dispatch(self, leases: list[Lease]) -> None:
        leases = [
            lease
            for lease in leases
            if not self._settler.already_handled(lease) and not self._running_already(lease)
        ]
        if self.stopping:
            # A receive that completed during shutdown: nothing will run, give them back.
            self._settler.release(leases, "shutdown")
            return
        route_of = self._ctx.route_of
        if not self._fifo:
            for lease in leases:
                route = route_of(lease.message.type)
                if route is not None and route.batch is not None:
                    self._batcher(route).add(lease)
                else:
                    self._spawn(self.settle_run(route, [lease]), [lease])
            return
        groups: dict[str | None, list[Lease]] = {}
        for lease in leases:
            groups.setdefault(lease.message.group_id, []).append(lease)
        for group in groups.values():
            self._spawn(self._run_group(group), group)

    def _batcher(self, route: Route) -> Batcher:
        batcher = self._batchers.get(route.message_type)
        if batcher is None:
            batcher = self._batchers[route.message_type] = Batcher(route, self._run_batch_later)
        return batcher

    def _run_batch_later(self, route: Route, leases: list[Lease]) -> None:
        self._spawn(self.settle_run(route, leases), leases)

    def _spawn(self, coro: Coroutine[Any, Any, bool], leases: list[Lease]) -> None:
        """A task for ``coro``, guarded: a bug of ours must not leave its leases running.

        On Python 3.12+ the task starts eagerly: it runs here, up to its first wait, and a
        handler that never waits (its message settled) needs no turn of the event loop."""
        loop = asyncio.get_running_loop()
        guarded = self._guarded(coro, leases)
        if sys.version_info >= (3, 12):
            task = asyncio.Task(guarded, loop=loop, eager_start=True)
            if task.done():
                return
        else:
            task = loop.create_task(guarded)
        self.tasks.add(task)

    async def _guarded(self, coro: Coroutine[Any, Any, bool], leases: list[Lease]) -> None:
        try:
            await coro
        except Exception:
            self._bug(leases)
        finally:
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]

    def _bug(self, leases: list[Lease]) -> None:
        """A bug of ours must not leave a lease running forever (its slot lost, its
        message extended for good): log it and give the message back after the backoff."""
        log.exception("consumer_error", queue=self._ctx.key)
        for lease in leases:
            if lease.state is State.RUNNING:
                self._settler.settle(lease, self._processor.backoff(lease.attempt))

    def _running_already(self, lease: Lease) -> bool:
        """True when ``lease``'s message is in a run here already (SQS delivered it again:
        the earlier lease's visibility ran out). It does not run beside it, nor out of its
        group's order; it takes over the earlier run's outcome instead (``Lease.successor``)."""
        earlier = self._running.get(lease.message.message_id)
        if earlier is None or earlier is lease or not earlier.live:
            return False
        while earlier.successor is not None:  # (delivered a third time meanwhile)
            earlier = earlier.successor
        earlier.successor = lease
        self._running[lease.message.message_id] = lease
        self._ctx.counters.redelivered_running += 1
        log.warning(
            "message_redelivered_while_running",
            queue=self._ctx.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            receive_count=lease.message.receive_count,
        )
        return True

    # -- the one loop ------------------------------------------------------------------------
    async def settle_run(self, route: Route | None, leases: list[Lease]) -> bool:
        """Run ``leases`` (one message, or a batch of ``route``'s type) until each is settled:
        every decision but ``WAIT`` is carried out at once; the waiting ones run again after
        their delay, kept leased. False when the run did not finish (the worker stopped, or
        a thread was abandoned): what is left is released, or left to lapse."""
        running = self._running
        for lease in leases:
            running[lease.message.message_id] = lease
        try:
            return await self._settle_run(route, leases)
        finally:
            for lease in leases:
                running.pop(lease.message.message_id, None)

    async def _settle_run(self, route: Route | None, leases: list[Lease]) -> bool:
        pending = leases
        while pending:
            if self.stopping:
                self._settler.release(pending, "shutdown")
                return False
            items = await self._processor.run(route, pending)
            waiting: list[Lease] = []
            delay = 0
            abandoned = released = False
            for item in items:
                decision = item.decision
                assert decision is not None
                if decision.action is Action.KEEP:
                    abandoned = True  # a thread still runs: its leases (and its group's) lapse
                    continue
                released = released or decision.action is Action.RELEASE
                if decision.action is not Action.WAIT:
                    fallback = await self._settler.execute(item)
                    if fallback is None:
                        continue
                    decision = fallback
                if not waiting:
                    delay = decision.delay  # the first waiting message's: in order, the head's
                self._log_wait(item.lease, item.outcome.kind if item.outcome else "", decision.delay)
                waiting.append(self._settler.newest(item.lease))
            if abandoned or released:
                return False  # a FIFO group stops here: what follows is released, in order
            pending = waiting
            if pending and await self._wait_or_stop(delay):
                self._settler.release(pending, "shutdown")
                return False
        return True

    def _log_wait(self, lease: Lease, kind: str, delay: int) -> None:
        if kind == "waiting":
            return  # logged as message_waiting, with its dependency
        self._retried.labels(self._ctx.key, self._processor.type_label(lease.message)).inc()
        log.info(
            "message_retry_in_place",
            queue=self._ctx.key,
            message_id=lease.message.message_id,
            group_id=lease.message.group_id,
            retry_in=delay,
            attempt=lease.attempt,
        )

    async def _run_group(self, leases: list[Lease]) -> bool:
        """A FIFO group's messages in order: a run of one, or of consecutive messages of one
        batch type; the next run starts when the one before it is settled."""
        route_of = self._ctx.route_of
        i = 0
        while i < len(leases):
            route = route_of(leases[i].message.type)
            run = [leases[i]]
            if route is not None and route.batch is not None:
                for lease in leases[i + 1 :]:
                    if lease.message.type != route.message_type or len(run) >= route.batch.max_size:
                        break
                    run.append(lease)
            if not await self.settle_run(route, run):
                if not self._ctx.halt.final.is_set():
                    self._settler.release(leases[i + len(run) :], "shutdown")
                return False
            i += len(run)
        return True

    async def _wait_or_stop(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when the worker began stopping meanwhile."""
        if self.stopping:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    # -- shutdown ----------------------------------------------------------------------------
    def stop(self) -> None:
        """No new run starts; what waits for a fuller batch runs now, within the grace."""
        self.stopping = True
        self._stop.set()
        for batcher in self._batchers.values():
            batcher.flush()

    async def drain(self, grace_deadline: float, final_deadline: float) -> int:
        """Let runs finish until ``grace_deadline``; then the grace is over (``Halt``): async
        handlers are cancelled, their messages released; threads go on until
        ``final_deadline``, then are left behind. Returns how many runs were cancelled."""
        halt = self._ctx.halt
        pending = set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=_until(grace_deadline))
        halt.end_grace()
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=_until(final_deadline))
            halt.end()  # a plain-function handler still running: abandoned
            if still:
                await asyncio.wait(still, timeout=1.0)
        return len(pending)


def _until(deadline: float) -> float:
    import time

    return max(0.0, deadline - time.monotonic())
