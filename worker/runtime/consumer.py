"""Everything one queue needs: slots, pollers, in-flight tasks, heartbeat and acker.

Standard queues run each received message as its own task. FIFO queues run the messages
of one MessageGroupId from one receive strictly one after another (SQS hands a group to
one consumer at a time, in order), different groups in parallel; when one message of a
group fails or the worker stops, the group's later messages are not run and are made
visible again at once, so the order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Executor
from dataclasses import dataclass

from worker.aws import AwsClient
from worker.messages.envelope import Message
from worker.messages.routing import Registry
from worker.observe.logs import get_logger
from worker.observe.metrics import Metrics
from worker.runtime.acker import Acker
from worker.runtime.counters import QueueCounters
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.poller import Poller, supervise
from worker.runtime.processor import Processor
from worker.runtime.slots import Slots
from worker.settings import QueueSettings, WorkerSettings

log = get_logger()


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """A configured queue as found on the server at start-up."""

    key: str
    name: str
    url: str
    fifo: bool
    max_receive_count: int | None
    dead_letter_arn: str | None


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
    ) -> None:
        self.target = target
        self.settings = settings
        self.counters = QueueCounters()
        self.slots = Slots(settings.max_in_flight)
        name = target.key
        self.acker = Acker(sqs, name, target.url, self.counters, worker.delete_flush_interval)
        self.metrics = metrics
        self.heartbeat = Heartbeat(
            sqs, name, target.url, settings.visibility_timeout, settings.extend_every, self.counters, metrics
        )
        self.processor = Processor(
            name, settings, registry, self.acker, self.counters, executor, target.max_receive_count, metrics
        )
        self.pollers = [
            Poller(
                lambda: self.stopping,
                sqs,
                name,
                target.url,
                settings,
                self.slots,
                self.counters,
                worker.message_type_attribute,
                self._dispatch,
                metrics,
                self.processor.type_label,
            )
            for _ in range(settings.pollers)
        ]
        self._poller_tasks: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False

    @property
    def last_receive_ok(self) -> float | None:
        times = [p.last_receive_ok for p in self.pollers if p.last_receive_ok is not None]
        return max(times) if times else None

    @property
    def pollers_alive(self) -> int:
        return sum(1 for t in self._poller_tasks if not t.done())

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled (slots held by a pending receive excluded)."""
        return len(self.heartbeat)

    def start(self) -> None:
        self.acker.start()
        self.heartbeat.start()
        for i, poller in enumerate(self.pollers):
            task = asyncio.create_task(
                supervise(
                    f"poller:{self.target.key}:{i}",
                    poller.poll_forever,
                    self.counters,
                    self.metrics.poller_restarts.labels(self.target.key).inc,
                ),
                name=f"poller:{self.target.key}:{i}",
            )
            self._poller_tasks.append(task)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, messages: list[Message], received_at: float) -> None:
        if self.stopping:
            # A receive that completed during shutdown: nothing will run, give them back.
            self._release(messages, "shutdown")
            return
        for message in messages:
            self.heartbeat.track(message, received_at)
        if not self.target.fifo:
            for message in messages:
                self._spawn(self._run_one(message))
            return
        groups: dict[str | None, list[Message]] = {}
        for message in messages:
            groups.setdefault(message.group_id, []).append(message)
        for group in groups.values():
            self._spawn(self._run_group(group))

    async def _run_one(self, message: Message) -> None:
        try:
            await self.processor.process(message)
        finally:
            self.heartbeat.untrack(message)
            self.slots.release()

    async def _run_group(self, messages: list[Message]) -> None:
        for i, message in enumerate(messages):
            if self.stopping:
                self._release(messages[i:], "shutdown")
                return
            try:
                visibility = await self.processor.process(message, defer_failure=True)
            except asyncio.CancelledError:
                self._release(messages[i + 1 :], "shutdown")
                raise
            finally:
                self.heartbeat.untrack(message)
                self.slots.release()
            if visibility is not None:
                # The failed message and its followers become visible together, the failed
                # one first, so the group resumes in order (servers differ on whether a
                # follower made visible earlier would unblock the group).
                followers = messages[i + 1 :]
                self._release(followers, "earlier message of the group failed", count_only=True)
                await self.acker.change_visibility_now([message, *followers], visibility)
                return

    def _release(self, messages: list[Message], reason: str, count_only: bool = False) -> None:
        """Give back messages that were received but will not run here: visible at once."""
        for message in messages:
            if not count_only:
                self.acker.change_visibility(message, 0)
            self.heartbeat.untrack(message)
            self.slots.release()
            self.counters.released += 1
            log.info(
                "message_released",
                queue=self.target.key,
                message_id=message.message_id,
                type=message.type,
                group_id=message.group_id,
                reason=reason,
            )

    async def stop_polling(self, settle: float = 1.0) -> None:
        """Stop receiving: no new receive starts; one in progress gets ``settle`` seconds
        to come back (what it brings is made visible again at once), then it is cancelled.

        Cancelling a receive outright could lose a response the server has already sent:
        its messages would stay invisible for a whole visibility timeout. Under load a
        receive returns within milliseconds; an idle long poll is cancelled after ``settle``."""
        self.stopping = True
        if self._poller_tasks:
            _, pending = await asyncio.wait(self._poller_tasks, timeout=settle)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._poller_tasks, return_exceptions=True)

    async def drain(self, grace: float) -> int:
        """Let running handlers finish within ``grace``; cancel the rest. Returns how many
        were cancelled (their messages are made visible again at once)."""
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def close(self) -> None:
        await self.heartbeat.stop()
        with contextlib.suppress(Exception):
            await self.acker.close()
