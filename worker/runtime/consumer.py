"""Everything one queue needs: its context, slots, leases, pollers, heartbeat and acker, and
the runner that takes each message through the step chain and settles it
(``worker.runtime.runner``). The consumer owns their lifecycle: start, the limiter's
control loop, and the shutdown's three phases (stop polling, drain, flush).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from worker.observe.logs import get_logger
from worker.runtime.acker import Acker
from worker.runtime.context import QueueContext
from worker.runtime.deadletter import DeadLetters
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.lease import Lease, Leases, State
from worker.runtime.limiter import TICK, Limiter
from worker.runtime.poller import Poller, supervise
from worker.runtime.processor import Processor
from worker.runtime.runner import Runner
from worker.runtime.settler import Settler
from worker.runtime.slots import Slots
from worker.runtime.target import QueueTarget

log = get_logger()


class Consumer:
    def __init__(self, ctx: QueueContext, target: QueueTarget, flush_interval: float = 0.05) -> None:
        """``ctx``: the queue's context, its client counting this queue's requests;
        ``flush_interval``: ``delete_flush_interval``."""
        self.ctx = ctx
        self.target = target
        settings = self.settings = ctx.settings
        self.payloads = ctx.payloads
        self.counters = ctx.counters
        metrics = self.metrics = ctx.metrics
        name = target.key
        metrics.init_queue(name, ctx.registry.types)  # every series at 0 before the first event
        flight, polls = settings.in_flight_bounds, settings.poller_bounds
        self.limiter: Limiter | None = None
        """Adaptive concurrency (None when both the limit and the pollers are fixed)."""
        if not (flight.fixed and polls.fixed):
            self.limiter = Limiter(flight, polls, settings.batch_size, time.monotonic())
        self.slots = Slots(flight.high if self.limiter is None else self.limiter.limit)
        self.leases = Leases(self._lease_ended)
        self.acker = Acker(ctx, flush_interval)
        self.heartbeat = Heartbeat(ctx, self.leases)
        self.dead_letters = DeadLetters(ctx.client, name, target.dead_letter_url, target.fifo)
        self.idempotency = ctx.idempotency
        self.processor = Processor(ctx)
        self.settler = Settler(ctx, target, self.acker, self.dead_letters, self.processor.type_label)
        self.runner = Runner(ctx, self.processor, self.settler, target.fifo)
        self.dispatch = self.runner.dispatch
        self.pollers = [Poller(ctx, self, target.fifo, i) for i in range(polls.high)]
        self._running: dict[int, asyncio.Task[None]] = {}
        """The pollers started and not retired, by index in ``pollers``."""
        self._control_task: asyncio.Task[None] | None = None
        self._limit_gauge = metrics.in_flight_limit.labels(name)
        self._pollers_gauge = metrics.pollers.labels(name)
        self._discarding: set[asyncio.Task[bool]] = set()
        self.stopping = False

    # -- state read by health, metrics and summaries ----------------------------------------
    @property
    def last_receive_ok(self) -> float | None:
        times = [p.last_receive_ok for p in self.pollers if p.last_receive_ok is not None]
        return max(times) if times else None

    @property
    def _poller_tasks(self) -> list[asyncio.Task[None]]:
        return list(self._running.values())

    @property
    def pollers_alive(self) -> int:
        return sum(1 for t in self._running.values() if not t.done())

    @property
    def in_flight(self) -> int:
        """Messages received whose lease has not ended (handler running or settle pending)."""
        return len(self.leases)

    @property
    def busy(self) -> bool:
        """Every slot is held by a running handler: no receive can start, which is not a
        stall (slots held by settles that SQS does not confirm are one)."""
        running = sum(1 for lease in self.leases.live() if lease.state is State.RUNNING)
        return running >= self.slots.limit

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.acker.start()
        self.heartbeat.start()
        if self.idempotency is not None:
            self.idempotency.start()
        self._scale_pollers()
        self._limit_gauge.set(self.slots.limit)
        if self.limiter is not None:
            self._control_task = asyncio.create_task(self._control(), name=f"limiter:{self.target.key}")

    def _scale_pollers(self) -> None:
        """Start pollers until as many run as the limiter wants (all of them when fixed)."""
        wanted = len(self.pollers) if self.limiter is None else self.limiter.pollers
        for i, poller in enumerate(self.pollers):
            if len(self._running) >= wanted or self.stopping:
                break
            if i not in self._running:
                self._running[i] = asyncio.create_task(
                    supervise(
                        f"poller:{self.target.key}:{i}",
                        poller.poll_forever,
                        self.counters,
                        self.metrics.poller_restarts.labels(self.target.key).inc,
                    ),
                    name=f"poller:{self.target.key}:{i}",
                )
        self._pollers_gauge.set(len(self._running))

    def retire(self, index: int) -> bool:
        """Asked by poller ``index`` between receives: True (and it returns at once) when it
        is one too many."""
        if self.limiter is None or len(self._running) <= self.limiter.pollers:
            return False
        del self._running[index]
        self._pollers_gauge.set(len(self._running))
        return True

    async def _control(self) -> None:
        """Every TICK: let the limiter see the slots in use; apply what it decides."""
        limiter = self.limiter
        assert limiter is not None
        applied = (limiter.limit, limiter.pollers)
        while not self.stopping:
            await asyncio.sleep(TICK)
            try:
                limiter.tick(time.monotonic(), self.slots.slot_seconds())
                if (limiter.limit, limiter.pollers) == applied:
                    continue
                applied = (limiter.limit, limiter.pollers)
                self.slots.resize(limiter.limit)
                self._limit_gauge.set(limiter.limit)
                self._scale_pollers()
                log.debug(
                    "concurrency_changed",
                    queue=self.target.key,
                    max_in_flight=limiter.limit,
                    pollers=limiter.pollers,
                    reason=limiter.reason,
                    in_flight=len(self.leases),
                    slot_time_ms=_ms(limiter.latency),
                    base_slot_time_ms=_ms(limiter.base),
                    window=dataclasses.asdict(limiter.last_window),
                )
            except Exception:  # a bug of ours must not freeze concurrency where it is
                log.exception("limiter_error", queue=self.target.key)

    def _lease_ended(self, lease: Lease) -> None:
        self.slots.release()
        if self.limiter is not None:
            self.limiter.completed()
        if lease.state is State.LAPSED:
            self.counters.lapsed += 1
        message = lease.discard
        if (
            message is not None
            and lease.state is State.SETTLED
            and self.payloads is not None
            and not self.acker.deliveries.unsure(lease)
        ):
            # Deleted from SQS in time: its offloaded body goes too (it may: Lease.discard;
            # never raises). Not when the delete was confirmed so late that SQS may hand the
            # message out again.
            lease.discard = None
            task = asyncio.create_task(self.payloads.discard(message), name="payload-discard")
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)

    # -- shutdown ----------------------------------------------------------------------------
    async def stop_polling(self, deadline: float) -> None:
        """Stop receiving: no new receive starts; one in progress is let finish until
        ``deadline`` (what it brings is released at once), then it is cancelled."""
        self.stopping = True
        if self._control_task is not None:
            self._control_task.cancel()  # no poller is started from now on
        self.runner.stop()
        tasks = self._poller_tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_until(deadline))
            for task in pending:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._control_task is not None:
            await asyncio.gather(self._control_task, return_exceptions=True)

    async def drain(self, grace_deadline: float, final_deadline: float) -> int:
        """Let runs finish until ``grace_deadline``, then cancel them (``Runner.drain``)."""
        return await self.runner.drain(grace_deadline, final_deadline)

    async def close(self, deadline: float) -> int:
        """Flush pending settles until ``deadline`` while the heartbeat keeps their leases;
        returns how many leases were left unconfirmed."""
        left = await self.acker.close(deadline)
        await self.heartbeat.stop()
        if self.idempotency is not None:
            await self.idempotency.stop()
        if self._discarding:
            await asyncio.wait(set(self._discarding), timeout=_until(deadline))
        return left


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _until(deadline: float) -> float:
    """Seconds from now to ``deadline`` (``time.monotonic()``), never negative."""
    return max(0.0, deadline - time.monotonic())
