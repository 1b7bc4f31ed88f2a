"""Adaptive concurrency: the in-flight limit and the number of pollers, found while running.

The pollers report every receive (``received``: how many slots were taken for it, how many
messages came back, whether fewer than a batch of slots were free when it started), the
consumer every lease that ended (``completed``), and every ``TICK`` seconds the consumer
calls ``tick(now, slot_seconds)`` with the slots in use integrated over time. At most every
``INTERVAL`` seconds (in slow start ``SLOW_START_INTERVAL``, or the base slot time if that is
longer), once it holds enough events, the window is evaluated:

* **backlog**: at least half the receives came back as full as they asked (SQS had more);
* **starved**: at least a quarter of the receives started with fewer than ``batch_size``
  free slots: the in-flight limit, not the pollers, held receiving back;
* **slot time**: how long a message holds its slot, from the receive to the confirmed
  delete, by Little's law: slot-seconds over messages through (the mean of those received
  and those ended, so that a window in which the slots fill up or drain is not taken for
  a slower one). No per-message timestamp is needed. ``base`` is the lowest slot time of a
  steady window (as many in as out).

The in-flight limit moves only while it is what holds receiving back (starved), like
Netflix's Gradient2 (concurrency-limits). Within ``TOLERANCE`` times the base and with a
backlog, the limit doubles (slow start, until the slot time first passes the tolerance or
the limit and the pollers reach their bounds), then grows by a tenth per window. Past it,
the limit moves halfway to ``limit * gradient``, ``gradient = TOLERANCE * base / slot time``
(at least 0.5). It settles where the slot time is about ``TOLERANCE`` times its unloaded
value: what a handler, the event loop, the thread pool or a downstream that no longer keeps
up shows. The tolerance is wide on purpose: on a busy process the slot time grows with the
load well before throughput stops growing (deletes and receives wait for the event loop),
and a queue consumer's goal is throughput. A limit that is not used is left as it is. When
the slot time stays above the tolerance at the lowest limit, the handler became slower for
good: ``base`` starts again from there.

The pollers follow the backlog, like Lambda's SQS pollers: with a backlog and free slots
(not starved) their number doubles, and the limit is raised to ``SLOTS_PER_POLLER``
batches for each; in slow start they also double when the limit does (a ramp that moved
only one of the two per window took twice as many windows to reach full speed). There are
never more pollers than that many batches of the limit allow (more would only wait for
slots and receive partial batches: more requests per message).
Each receive that comes back empty (a whole long poll without a message) takes one poller
away, so an idle queue keeps its lowest number of pollers, each long-polling.

Everything stays within the configured bounds. The limiter only counts and decides; the
consumer applies ``limit`` to its slots and starts or retires pollers (a poller retires
only between receives, so no receive is abandoned and no message is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.settings import Bounds

TICK = 0.1
"""Seconds between the consumer's calls of ``tick``."""
TIMER_SLACK = 0.005
"""A window this much short of its length is due (a tick's timer may fire a little early)."""
INTERVAL = 0.2
"""Shortest window evaluated, in seconds."""
SLOW_START_INTERVAL = 0.1
"""Shortest window evaluated in slow start, while the base slot time is shorter: each window
there can double the limit and the pollers, so the ramp to full speed takes half as long
(16 pollers from 2 in three windows; a 50 ms handler's 5,000-message run lasts about 2.5 s
on the benchmark machine). A window shorter than the slot time would misjudge it (messages
that finish together make Little's law swing), so a slow-start window lasts at least the
base slot time, up to ``INTERVAL``."""
MAX_WINDOW = 5.0
"""A window is evaluated after this long whatever it holds (a slow or quiet queue)."""
MIN_SAMPLES = 8
"""Leases ended in a window for its slot time to count, and receives (or leases ended) for
it to be evaluated before ``MAX_WINDOW``."""
TOLERANCE = 8.0
"""How many times its base the slot time may reach before the limit stops growing."""
GROWTH = 0.1
"""After slow start: the limit grows by this fraction (at least a batch) per window."""
MIN_GRADIENT = 0.5
"""The lowest gradient: the limit aims at no less than half of what it is."""
SMOOTHING = 0.5
"""A shrinking limit moves this fraction of the way to its aim per window (one noisy
window must not halve it)."""
SLOTS_PER_POLLER = 3
"""Batches of slots the limit keeps for each poller."""


@dataclass
class Window:
    """What happened since the last evaluation."""

    started: float
    receives: int = 0
    full: int = 0
    empty: int = 0
    starved: int = 0
    messages: int = 0
    completed: int = 0
    slot_seconds: float = 0.0


class Limiter:
    def __init__(self, in_flight: Bounds, pollers: Bounds, batch_size: int, now: float) -> None:
        self.in_flight = in_flight
        self.poller_bounds = pollers
        self.batch_size = batch_size
        self.pollers = _clamp(2, pollers)
        self.limit = _clamp(self.pollers * batch_size * SLOTS_PER_POLLER, in_flight)
        self.pollers = min(self.pollers, self._most_pollers())
        self.base: float | None = None
        """The lowest slot time of a steady window (seconds a message holds its slot)."""
        self.latency: float | None = None
        """Slot time of the last window evaluated (None: too few leases ended in it)."""
        self.slow_start = True
        self.reason = "start"
        """Why the last change was made (for the debug log)."""
        self._window = Window(now)
        self.last_window = self._window
        """The last window evaluated (for the debug log)."""
        self._slot_seconds = 0.0

    # -- events ----------------------------------------------------------------------------
    def received(self, asked: int, got: int, starved: bool) -> None:
        """A receive came back: ``asked`` slots were taken for it, ``got`` messages came;
        ``starved``: fewer than ``batch_size`` slots were free when it started."""
        w = self._window
        w.receives += 1
        w.messages += got
        if got >= asked:
            w.full += 1
        if starved:
            w.starved += 1
        if got == 0:
            w.empty += 1
            if self.pollers > self.poller_bounds.low:
                self.pollers -= 1  # a whole long poll without a message: fewer pollers will do
                self.reason = "empty receive"

    def completed(self) -> None:
        """A lease ended: its slot is free again."""
        self._window.completed += 1

    def tick(self, now: float, slot_seconds: float) -> bool:
        """``slot_seconds``: the slots in use integrated over time until ``now``
        (``Slots.slot_seconds``). Evaluates the window when it is due; True when it was."""
        w = self._window
        w.slot_seconds += slot_seconds - self._slot_seconds
        self._slot_seconds = slot_seconds
        elapsed = now - w.started
        if elapsed + TIMER_SLACK < self._interval():
            return False
        if elapsed < MAX_WINDOW and w.completed < MIN_SAMPLES and w.receives < MIN_SAMPLES:
            return False
        self._evaluate(w)
        self._window = Window(now)
        return True

    # -- decisions ---------------------------------------------------------------------------
    def _evaluate(self, w: Window) -> None:
        self.last_window = w
        self.latency = None
        if w.completed >= MIN_SAMPLES:
            self.latency = 2 * w.slot_seconds / (w.messages + w.completed)
            steady = abs(w.messages - w.completed) * 4 <= w.messages + w.completed
            if self.base is None or (steady and self.latency < self.base):
                self.base = self.latency
        if w.receives == 0:
            return
        backlog = w.full * 2 >= w.receives
        starved = w.starved * 4 >= w.receives
        if starved and self.latency is not None and self.base is not None:
            over = self.latency > TOLERANCE * self.base
            if over and self.limit <= self.in_flight.low:
                self.base = self.latency  # slower for good: measure from here
                self.reason = "slot time rose at the lowest limit"
            elif over:
                self.slow_start = False
                gradient = max(MIN_GRADIENT, TOLERANCE * self.base / self.latency)
                self._set_limit(self.limit * (1 - SMOOTHING * (1 - gradient)), "slot time rose")
            elif backlog:
                step = self.limit if self.slow_start else max(self.batch_size, self.limit * GROWTH)
                before = self.limit
                self._set_limit(self.limit + step, "backlog, slots full")
                if self.slow_start and self.limit > before:
                    # The pollers double with it: the doubled limit has slots for them.
                    self.pollers = min(self.poller_bounds.high, self.pollers * 2)
        if backlog and not starved and self.pollers < self.poller_bounds.high:
            self.pollers = min(self.poller_bounds.high, self.pollers * 2)
            self.reason = "backlog, slots free"
            self._set_limit(max(self.limit, self.pollers * self.batch_size * SLOTS_PER_POLLER), self.reason)
        if self.pollers > self._most_pollers():
            self.pollers = self._most_pollers()
            self.reason += ", pollers follow the limit"
        if self.slow_start and self.limit >= self.in_flight.high and self.pollers >= self._most_pollers():
            self.slow_start = False  # nothing left to ramp: windows of INTERVAL from here

    def _interval(self) -> float:
        """The shortest window now: ``INTERVAL``, or in slow start ``SLOW_START_INTERVAL``
        stretched to the base slot time (at most ``INTERVAL``)."""
        if not self.slow_start:
            return INTERVAL
        return max(SLOW_START_INTERVAL, min(INTERVAL, self.base or 0.0))

    def _most_pollers(self) -> int:
        """Pollers the limit has ``SLOTS_PER_POLLER`` batches of slots for (within bounds)."""
        return _clamp(-(-self.limit // (self.batch_size * SLOTS_PER_POLLER)), self.poller_bounds)

    def _set_limit(self, value: float, reason: str) -> None:
        new = _clamp(round(value), self.in_flight)
        if new != self.limit:
            self.limit = new
            self.reason = reason


def _clamp(value: int, bounds: Bounds) -> int:
    return max(bounds.low, min(bounds.high, value))
