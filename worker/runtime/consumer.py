"""Everything one queue needs: slots, leases, pollers, handler tasks, heartbeat and acker,
and what happens to a message after its handler ran.

Standard queues run each message as its own task, with a MessageGroupId or without (on a
standard queue it names the message's tenant for SQS fair queues, which promise no order:
messages of one group run side by side). A failure makes it visible again after the backoff
(SQS's redrive policy moves it to the DLQ after maxReceiveCount failed deliveries); a
rejection moves it to the DLQ at once. Without a DLQ, both follow the backoff schedule (no
spinning on a poison message).

FIFO queues (known by their ``FifoQueue`` attribute, never by their messages) run the messages of
one MessageGroupId from one receive strictly one after another, different groups in
parallel. While a group's message is in flight SQS hands no other message of that group to
anyone, so a failed message is retried *in place*: the worker keeps the group's leases,
waits out the backoff and runs it again. Only when its own attempts are used up (or it is
rejected) is it moved to the DLQ, by the worker, and the group goes on with the next
message. The followers are never given back because of another message's failure, so
their receive counts do not rise and none of them reaches the DLQ without having run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from worker.aws import AwsClient
from worker.idempotency.store import IdempotencyStore
from worker.messages.payload_store import PayloadStore
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Route
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.batcher import Batcher
from worker.runtime.counters import QueueCounters
from worker.runtime.deadletter import DeadLetters
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.idempotency import Idempotency
from worker.runtime.lease import Lease, Leases, State
from worker.runtime.limiter import TICK, Limiter
from worker.runtime.poller import Poller, supervise
from worker.runtime.processor import Processor
from worker.runtime.settler import Settler
from worker.runtime.slots import Slots
from worker.runtime.target import QueueTarget
from worker.settings import QueueSettings, WorkerSettings

if TYPE_CHECKING:
    from worker.observe.tracing import Tracing

log = get_logger()


class Consumer:
    def __init__(
        self,
        target: QueueTarget,
        settings: QueueSettings,
        worker: WorkerSettings,
        sqs: AwsClient,
        registry: Registry,
        executor: Executor,
        metrics: Metrics,
        resources: Resources | None = None,
        payloads: PayloadStore | None = None,
        tracing: Tracing | None = None,
        store: IdempotencyStore | None = None,
    ) -> None:
        self.target = target
        if tracing is not None:
            tracing = tracing.for_queue(target.name, target.url)
        self.payloads = payloads
        self.settings = settings
        self.counters = QueueCounters()
        self.metrics = metrics
        name = target.key
        metrics.init_queue(name, registry.types)  # every series at 0 before the first event
        sqs = sqs.counting(metrics.queue_requests(name))  # every request of this queue's roles
        flight, polls = settings.in_flight_bounds, settings.poller_bounds
        self.limiter: Limiter | None = None
        """Adaptive concurrency (None when both the limit and the pollers are fixed)."""
        if not (flight.fixed and polls.fixed):
            self.limiter = Limiter(flight, polls, settings.batch_size, time.monotonic())
        self.slots = Slots(flight.high if self.limiter is None else self.limiter.limit)
        self.leases = Leases(self._lease_ended)
        self.acker = Acker(
            sqs,
            name,
            target.url,
            self.counters,
            metrics,
            worker.delete_flush_interval,
            max_calls=settings.settle_calls,
            tracing=tracing,
        )
        self.heartbeat = Heartbeat(
            sqs,
            name,
            target.url,
            self.leases,
            settings.extend_every,
            settings.heartbeat_calls,
            self.counters,
            metrics,
        )
        self.dead_letters = DeadLetters(sqs, name, target.dead_letter_url, target.fifo)
        self.idempotency: Idempotency | None = None
        if store is not None and registry.idempotent:
            self.idempotency = Idempotency(
                store,
                target.name,  # the queue, not its configuration key: records outlive renames
                worker.idempotency.expires_after,
                settings.visibility_timeout / 2,
                target.max_receive_count,
            )
        self.processor = Processor(
            name,
            settings,
            registry,
            self.counters,
            executor,
            metrics,
            resources,
            payloads,
            tracing,
            self.idempotency,
            group_metrics=worker.health.group_metrics,
        )
        self.settler = Settler(target, self.acker, self.dead_letters, self.processor, self.counters, metrics)
        self.pollers = [
            Poller(
                lambda: self.stopping,
                sqs,
                name,
                target.url,
                target.fifo,
                settings,
                self.slots,
                self.leases,
                self.counters,
                worker.message_type_attribute,
                self._dispatch,
                metrics,
                self.processor.type_label,
                self.limiter,
                None if self.limiter is None else functools.partial(self._retire, i),
                tracing,
            )
            for i in range(polls.high)
        ]
        self._running: dict[int, asyncio.Task[None]] = {}
        """The pollers started and not retired, by index in ``pollers``."""
        self._control_task: asyncio.Task[None] | None = None
        self._limit_gauge = metrics.in_flight_limit.labels(name)
        self._pollers_gauge = metrics.pollers.labels(name)
        self._tasks: set[asyncio.Task[None]] = set()
        self._discarding: set[asyncio.Task[bool]] = set()
        self._batchers: dict[str, Batcher] = {}
        self._stop = asyncio.Event()
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

    def _retire(self, index: int) -> bool:
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
        message = self.settler.discards.pop(lease, None)
        if (
            message is not None
            and lease.state is State.SETTLED
            and self.payloads is not None
            and not self.acker.unsure(lease)
        ):
            # Deleted from SQS: its offloaded body goes too (as configured; never raises). Not
            # when the delete was confirmed so late that SQS may hand the message out again.
            task = asyncio.create_task(self.payloads.discard(message), name="payload-discard")
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None], leases: list[Lease] | None = None) -> None:
        """A task for ``coro``; ``leases``: wrap it in ``_guarded`` (``_run_one`` guards
        itself: one coroutine less per message).

        On Python 3.12+ the task starts eagerly: it runs here, up to its first wait, and a
        handler that never waits (its message settled) needs no turn of the event loop at
        all. Either way a task leaves ``_tasks`` itself when it ends (``_done``), without
        a done callback (one loop callback less per message)."""
        loop = asyncio.get_running_loop()
        if leases is not None:
            coro = self._guarded(coro, leases)
        if sys.version_info >= (3, 12):
            task = asyncio.Task(coro, loop=loop, eager_start=True)
            if task.done():
                return
        else:
            task = loop.create_task(coro)
        self._tasks.add(task)

    def _done(self) -> None:
        """The end of a spawned task (its last line): out of ``_tasks``."""
        self._tasks.discard(asyncio.current_task())

    async def _guarded(self, coro: Coroutine[Any, Any, None], leases: list[Lease]) -> None:
        try:
            await coro
        except Exception:
            self._bug(leases)
        finally:
            self._done()

    def _bug(self, leases: list[Lease]) -> None:
        """A bug of ours must not leave a lease running forever (its slot lost, its
        message extended for good): log it and give the message back after the backoff."""
        log.exception("consumer_error", queue=self.target.key)
        for lease in leases:
            if lease.state is State.RUNNING:
                self.settler.settle(lease, self.processor.backoff(lease.message.receive_count))

    def _dispatch(self, leases: list[Lease]) -> None:
        leases = [lease for lease in leases if not self.settler.already_handled(lease)]
        if self.stopping:
            # A receive that completed during shutdown: nothing will run, give them back.
            self.settler.release(leases, "shutdown")
            return
        if not self.target.fifo:
            for lease in leases:
                route = self.processor.registry.get(lease.message.type)
                if route is not None and route.batch is not None:
                    self._batcher(route).add(lease)
                else:
                    self._spawn(self._run_one(lease))
            return
        groups: dict[str | None, list[Lease]] = {}
        for lease in leases:
            groups.setdefault(lease.message.group_id, []).append(lease)
        for group in groups.values():
            self._spawn(self._run_group(group), group)

    # -- standard queues ---------------------------------------------------------------------
    async def _run_one(self, lease: Lease) -> None:
        try:
            await self.settler.apply(lease, await self.processor.run(lease))
        except Exception:
            self._bug([lease])
        finally:
            self._done()

    def _batcher(self, route: Route) -> Batcher:
        batcher = self._batchers.get(route.message_type)
        if batcher is None:
            batcher = self._batchers[route.message_type] = Batcher(route, self._run_batch_later)
        return batcher

    def _run_batch_later(self, route: Route, leases: list[Lease]) -> None:
        self._spawn(self._run_batch(route, leases), leases)

    async def _run_batch(self, route: Route, leases: list[Lease]) -> None:
        outcomes = await self.processor.run_batch(route, leases)
        for lease, outcome in zip(leases, outcomes, strict=True):
            await self.settler.apply(lease, outcome)

    # -- FIFO queues -------------------------------------------------------------------------
    async def _run_group(self, leases: list[Lease]) -> None:
        i = 0
        while i < len(leases):
            route = self.processor.registry.get(leases[i].message.type)
            run = [leases[i]]
            if route is not None and route.batch is not None:
                # Consecutive messages of the same batch type, in group order.
                for lease in leases[i + 1 :]:
                    if lease.message.type != route.message_type or len(run) >= route.batch.max_size:
                        break
                    run.append(lease)
            if not await self._run_in_order(run, route):
                self.settler.release(leases[i + len(run) :], "shutdown")
                return
            i += len(run)

    async def _run_in_order(self, run: list[Lease], route: Route | None) -> bool:
        """Run ``run`` (one message, or a batch) until each has succeeded or gone to the DLQ,
        in order: a failed message is retried in place with everything after it held back.
        False when the worker stopped meanwhile (what is left is released)."""
        while run:
            if self.stopping:
                self.settler.release(run, "shutdown")
                return False
            if route is not None and route.batch is not None:
                outcomes = await self.processor.run_batch(route, run)
            else:
                outcomes = [await self.processor.run(run[0])]
            done = 0
            while done < len(outcomes) and outcomes[done].kind == "succeeded":
                self.settler.settle_success(run[done])
                done += 1
            if done == len(run):
                return True
            head, outcome = run[done], outcomes[done]
            run = run[done:]
            if outcome.kind == "cancelled":
                self.settler.release(run, "shutdown")
                return False
            if outcome.kind == "abandoned":
                return False  # the thread still runs: every lease of the group is left to lapse
            for follower, result in zip(run[1:], outcomes[done + 1 :], strict=True):
                if result.kind == "failed":  # failed in the same batch call: it runs again too
                    self.metrics.retried.labels(
                        self.target.key, self.processor.type_label(follower.message)
                    ).inc()
            if self.settler.exhausted(head, outcome) and await self.settler.dead_letter(head, outcome):
                run = run[1:]
                continue
            delay = outcome.visibility if outcome.kind == "failed" else self.processor.backoff(head.attempts)
            self.metrics.retried.labels(self.target.key, self.processor.type_label(head.message)).inc()
            log.info(
                "message_retry_in_place",
                queue=self.target.key,
                message_id=head.message.message_id,
                group_id=head.message.group_id,
                retry_in=delay,
                attempt=head.message.receive_count + head.attempts - 1,
                held=len(run) - 1,
            )
            if await self._wait_or_stop(delay):
                self.settler.release(run, "shutdown")
                return False
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
    async def stop_polling(self, deadline: float) -> None:
        """Stop receiving: no new receive starts; one in progress is let finish until
        ``deadline`` (what it brings is released at once), then it is cancelled."""
        self.stopping = True
        self._stop.set()
        if self._control_task is not None:
            self._control_task.cancel()  # no poller is started from now on
        for batcher in self._batchers.values():
            batcher.flush()  # what was waiting for a fuller batch runs now, within the grace
        tasks = self._poller_tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_until(deadline))
            for task in pending:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._control_task is not None:
            await asyncio.gather(self._control_task, return_exceptions=True)

    async def drain(self, grace_deadline: float, final_deadline: float) -> int:
        """Let handlers finish until ``grace_deadline``; then cancel them (async handlers
        stop, their messages are released; threads go on until ``final_deadline``).
        Returns how many were cancelled."""
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=_until(grace_deadline))
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=_until(final_deadline))
            for task in still:
                task.cancel()  # a plain-function handler still running: abandoned
            if still:
                await asyncio.wait(still, timeout=1.0)
        return len(pending)

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
