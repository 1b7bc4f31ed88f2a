"""The adaptive limiter's rules, on a fake clock: every window is fed by hand (or by a small
model of a queue and a server), so each decision is exact and repeatable."""

from __future__ import annotations

import math

import pytest

from worker.runtime.limiter import (
    INTERVAL,
    MAX_WINDOW,
    SLOW_START_INTERVAL,
    TIMER_SLACK,
    TOLERANCE,
    Limiter,
    Window,
)
from worker.settings import Bounds


class Feed:
    """A limiter and the clock and slot-seconds it is fed with."""

    def __init__(
        self,
        in_flight: tuple[int, int] = (10, 1000),
        pollers: tuple[int, int] = (1, 16),
        batch: int = 10,
        now: float = 100.0,
    ) -> None:
        self.now = now
        self.slot_seconds = 0.0
        self.batch = batch
        self.lim = Limiter(Bounds(*in_flight), Bounds(*pollers), batch, self.now)

    def window(
        self,
        latency: float = 0.125,
        *,
        receives: int = 20,
        full: int | None = None,
        starved: int = 0,
        completed: int | None = None,
        seconds: float = INTERVAL,
    ) -> bool:
        """``receives`` full-batch receives (``full`` of them as full as asked, the others one
        short), ``starved`` of them starved; ``completed`` leases ended (default: as many as
        came); slot-seconds such that Little's law gives ``latency``. Then one tick."""
        full = receives if full is None else full
        messages = 0
        for i in range(receives):
            got = self.batch if i < full else self.batch - 1
            messages += got
            self.lim.received(self.batch, got, i < starved)
        completed = messages if completed is None else completed
        for _ in range(completed):
            self.lim.completed()
        self.slot_seconds += latency * (messages + completed) / 2
        self.now += seconds
        return self.lim.tick(self.now, self.slot_seconds)

    def busy(
        self,
        latency: float = 0.125,
        *,
        receives: int = 20,
        full: int | None = None,
        completed: int | None = None,
        seconds: float = INTERVAL,
    ) -> bool:
        """A window in which every receive waited for slots."""
        return self.window(
            latency, receives=receives, full=full, starved=receives, completed=completed, seconds=seconds
        )


# -- the start ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("in_flight", "pollers", "start"),
    [
        ((10, 1000), (1, 16), (2, 60)),  # two pollers, three batches of slots each
        ((10, 40), (1, 16), (2, 40)),  # within the in-flight bound
        ((10, 20), (1, 16), (1, 20)),  # and no more pollers than it has batches for
        ((100, 1000), (1, 16), (2, 100)),
        ((10, 1000), (4, 8), (4, 120)),
        ((10, 1000), (1, 1), (1, 30)),
    ],
)
def test_starts_with_two_pollers_and_three_batches_each_within_bounds(
    in_flight: tuple[int, int], pollers: tuple[int, int], start: tuple[int, int]
) -> None:
    lim = Feed(in_flight, pollers).lim
    assert (lim.pollers, lim.limit) == start
    assert lim.reason == "start"
    assert lim.slow_start is True
    assert lim.latency is None
    assert lim.base is None
    assert lim.last_window == Window(100.0)  # loggable before the first evaluation


def test_a_window_counts_what_it_saw() -> None:
    f = Feed()
    f.lim.received(10, 0, False)
    f.lim.received(10, 0, True)
    f.window(receives=10, full=6, starved=3)
    assert f.lim.last_window == Window(
        100.0, receives=12, full=6, empty=2, starved=4, messages=96, completed=96, slot_seconds=12.0
    )


# -- windows -----------------------------------------------------------------------------------
def test_a_window_is_due_once_the_interval_has_passed() -> None:
    f = Feed(now=0.0)
    assert f.window(seconds=SLOW_START_INTERVAL)  # 0.0 + 0.1 - 0.0 == 0.1 exactly: due
    h = Feed(now=0.0)
    h.lim.slow_start = False
    assert h.window(seconds=INTERVAL)  # 0.2 exactly past slow start
    early = Feed(now=0.0)
    early.lim.slow_start = False
    assert early.window(seconds=INTERVAL - TIMER_SLACK)  # a timer that fired a little early
    late = Feed(now=0.0)
    late.lim.slow_start = False
    assert not late.window(seconds=INTERVAL - TIMER_SLACK - 0.001)
    g = Feed(now=0.0)
    assert not g.window(receives=7, completed=7, seconds=INTERVAL)
    g.now = MAX_WINDOW
    assert g.lim.tick(g.now, g.slot_seconds)  # exactly the longest window: due


def test_a_window_is_evaluated_after_the_interval_and_enough_events() -> None:
    f = Feed()
    f.lim.slow_start = False
    assert not f.busy(seconds=INTERVAL - 0.01)  # enough events, too early
    assert f.lim.limit == 60
    assert f.busy(seconds=0.01)  # the same window, now due: it held both
    assert f.lim.last_window.receives == 40
    assert f.lim.limit == 70  # grown by a batch (past slow start)


def test_slow_start_evaluates_twice_as_often() -> None:
    """Each slow-start window may double the limit and the pollers: shorter windows there
    halve the ramp to full speed; past slow start the windows are ``INTERVAL`` long."""
    assert SLOW_START_INTERVAL < INTERVAL
    f = Feed()
    assert not f.busy(seconds=SLOW_START_INTERVAL - 0.01)
    assert f.busy(seconds=0.01)
    assert (f.lim.limit, f.lim.pollers) == (120, 4)
    f.lim.slow_start = False
    assert not f.busy(seconds=SLOW_START_INTERVAL)
    assert f.busy(seconds=INTERVAL - SLOW_START_INTERVAL + 0.001)


def test_slow_start_ends_when_the_limit_and_the_pollers_reach_their_bounds() -> None:
    """Nothing is left to ramp: the windows go back to ``INTERVAL`` (a fast handler's slot
    time never passes the tolerance, so slow start would otherwise last for good)."""
    f = Feed(in_flight=(10, 240))
    assert f.busy(0.05, seconds=SLOW_START_INTERVAL)
    assert (f.lim.limit, f.lim.pollers, f.lim.slow_start) == (120, 4, True)
    assert f.busy(0.05, seconds=SLOW_START_INTERVAL)
    assert (f.lim.limit, f.lim.pollers, f.lim.slow_start) == (240, 8, False)
    assert not f.busy(0.05, seconds=SLOW_START_INTERVAL)
    assert f.busy(0.05, seconds=INTERVAL - SLOW_START_INTERVAL + 0.001)
    g = Feed(in_flight=(10, 240))
    g.busy()
    for _ in range(3):
        g.lim.received(10, 0, False)  # empty receives: fewer pollers than the bound allows
    g.lim.limit = 240
    g.busy(receives=4, full=0)  # no backlog: the limit is at its bound, the pollers are not
    assert (g.lim.limit, g.lim.pollers, g.lim.slow_start) == (240, 1, True)
    h = Feed(in_flight=(10, 1000), pollers=(1, 4))
    h.busy()
    assert (h.lim.limit, h.lim.pollers, h.lim.slow_start) == (120, 4, True)  # the limit is not


@pytest.mark.parametrize(("base", "window"), [(0.05, SLOW_START_INTERVAL), (0.15, 0.15), (0.5, INTERVAL)])
def test_a_slow_start_window_lasts_at_least_the_base_slot_time(base: float, window: float) -> None:
    """Shorter than the slot time, a window misjudges it (messages finishing together make
    Little's law swing): slow start's windows stretch to the base slot time, up to INTERVAL."""
    f = Feed()
    f.lim.base = base
    assert not f.busy(base, seconds=window - TIMER_SLACK - 0.002)
    assert f.busy(base, seconds=0.003)


@pytest.mark.parametrize(
    ("receives", "completed", "due"),
    [(7, 7, False), (8, 0, True), (1, 8, True), (0, 0, False)],
)
def test_a_quiet_window_waits_for_eight_events_or_the_longest_window(
    receives: int, completed: int, due: bool
) -> None:
    f = Feed()
    assert f.window(receives=receives, completed=completed) is due
    if not due:
        f.now += MAX_WINDOW - INTERVAL - 0.01
        assert not f.lim.tick(f.now, f.slot_seconds)
        f.now += 0.01
        assert f.lim.tick(f.now, f.slot_seconds)


def test_a_window_without_receives_changes_nothing() -> None:
    f = Feed()
    assert f.window(receives=0, completed=8)
    assert (f.lim.limit, f.lim.pollers, f.lim.reason) == (60, 2, "start")


# -- the slot time -----------------------------------------------------------------------------
def test_slot_time_is_littles_law_over_what_came_and_what_left() -> None:
    f = Feed()
    f.lim.received(10, 10, False)
    for _ in range(30):
        f.lim.completed()
    f.now += INTERVAL
    assert f.lim.tick(f.now, 2.0)  # 2 slot-seconds for (10 + 30) / 2 messages through
    assert f.lim.latency == pytest.approx(0.1)
    f.lim.received(10, 10, False)
    for _ in range(10):
        f.lim.completed()
    f.now += INTERVAL
    assert f.lim.tick(f.now, 3.0)  # only what was added since the last window counts
    assert f.lim.latency == pytest.approx(0.1)


def test_too_few_ended_leases_give_no_slot_time_and_no_change() -> None:
    f = Feed()
    f.busy(0.125, receives=8, completed=7)
    assert f.lim.latency is None
    assert f.lim.base is None
    assert f.lim.limit == 60  # starved with a backlog, but nothing to judge the latency by
    f.busy(0.125, receives=8, completed=8)
    assert f.lim.latency == pytest.approx(0.125)
    assert f.lim.limit == 120


def test_the_base_is_the_lowest_slot_time_of_a_steady_window() -> None:
    f = Feed()
    f.window(0.5, completed=100)  # the first window sets it, steady or not
    assert f.lim.base == pytest.approx(0.5)
    f.window(0.25, completed=100)  # 200 came, 100 left: slots filling up, not steady
    assert f.lim.base == pytest.approx(0.5)
    f.window(0.25, completed=120)  # |200 - 120| * 4 = 320 = 200 + 120: steady enough
    assert f.lim.base == pytest.approx(0.25)
    f.window(0.375)  # higher: the base stays
    assert f.lim.base == pytest.approx(0.25)
    f.window(0.125, completed=300)  # |200 - 300| * 4 = 400 <= 500: lower and steady
    assert f.lim.base == pytest.approx(0.125)


# -- the in-flight limit -----------------------------------------------------------------------
def test_slow_start_doubles_the_limit_while_slots_are_full_and_there_is_a_backlog() -> None:
    f = Feed()
    seen = []
    for _ in range(6):
        f.busy()
        seen.append((f.lim.limit, f.lim.pollers))
    # Up to the bound, no further; the pollers double with the limit (one window per step,
    # not one for the limit and the next for the pollers), up to theirs.
    assert seen == [(120, 4), (240, 8), (480, 16), (960, 16), (1000, 16), (1000, 16)]
    assert f.lim.reason == "backlog, slots full"
    g = Feed(in_flight=(10, 100))
    g.busy()
    assert (g.lim.limit, g.lim.pollers) == (100, 4)  # as many as the limit has batches for
    h = Feed()
    h.busy()
    h.busy(0.125 * TOLERANCE * 2)  # past the tolerance: slow start ends
    for _ in range(3):
        h.lim.received(10, 0, False)  # empty receives: fewer pollers than the limit allows
    pollers = h.lim.pollers
    limit = h.lim.limit
    h.busy(0.125)  # after slow start a starved window grows the limit only
    assert h.lim.limit > limit
    assert h.lim.pollers == pollers
    k = Feed(in_flight=(10, 60))  # starts at its bound: 60, 2 pollers
    k.lim.received(10, 0, False)  # an empty receive: 1 poller
    k.busy()  # slow start, but the limit cannot rise: no pollers for a starved window
    assert (k.lim.limit, k.lim.pollers) == (60, 1)
    assert k.lim.slow_start  # (the pollers are below what the limit has slots for)


def test_a_quarter_of_the_receives_starved_is_enough_to_raise_the_limit() -> None:
    f = Feed()
    f.window(starved=5)
    assert (f.lim.limit, f.lim.pollers) == (120, 4)  # slow start: the pollers with it
    assert f.lim.reason == "backlog, slots full"
    g = Feed()
    g.window(starved=4)  # fewer: the pollers were what held receiving back
    assert g.lim.limit == 120  # raised for the pollers added, not for starving
    assert g.lim.pollers == 4
    assert g.lim.reason == "backlog, slots free"


def test_the_limit_grows_only_with_a_backlog() -> None:
    f = Feed()
    f.busy(full=9)  # 11 of 20 receives came back short: SQS had no more
    assert (f.lim.limit, f.lim.pollers) == (60, 2)
    f.busy(full=10)  # half of them full: a backlog
    assert f.lim.limit == 120


def test_an_unused_limit_is_left_as_it_is() -> None:
    f = Feed(pollers=(2, 2))
    f.window(0.125, starved=0)  # a backlog, but slots were free: the pollers are the bound
    assert f.lim.limit == 60
    assert f.lim.reason == "start"  # and there are as many pollers as allowed: nothing to do
    f.window(4.0, starved=0)  # a slow handler that does not use the limit changes nothing
    assert f.lim.limit == 60
    assert f.lim.slow_start


def test_the_limit_shrinks_halfway_to_the_gradient_when_the_slot_time_passes_the_tolerance() -> None:
    f = Feed()
    f.busy(0.125)  # base 0.125: limit 60 -> 120
    f.busy(0.125)  # 240
    assert f.lim.limit == 240
    f.busy(0.125 * TOLERANCE)  # exactly at the tolerance: gradient 1, still growing
    assert f.lim.limit == 480
    assert f.lim.slow_start
    f.busy(1.25)  # gradient 8 * 0.125 / 1.25 = 0.8: aims at 384, goes halfway: 432
    assert f.lim.limit == 432
    assert f.lim.reason == "slot time rose, pollers follow the limit"  # 16 -> ceil(432 / 30)
    assert f.lim.pollers == 15
    assert f.lim.slow_start is False
    f.busy(4.0)  # gradient 0.25, but never below 0.5: aims at 216, goes halfway: 324
    assert f.lim.limit == 324


def test_after_slow_start_the_limit_grows_by_a_tenth_and_at_least_a_batch() -> None:
    f = Feed(in_flight=(10, 1000))
    f.busy(0.125)  # 120
    f.busy(2.0)  # 90
    assert f.lim.limit == 90
    f.busy(0.125)
    assert f.lim.limit == 100  # a tenth would be 9: a batch
    f.busy(0.125)
    assert f.lim.limit == 110
    f.busy(0.125)
    assert f.lim.limit == 121  # a tenth


def test_the_limit_never_leaves_its_bounds() -> None:
    f = Feed(in_flight=(40, 100))
    assert f.lim.limit == 60
    f.busy(0.125)
    assert f.lim.limit == 100
    for _ in range(4):
        f.busy(2.0)  # 75, 56, 42, 40
    assert f.lim.limit == 40


def test_slower_for_good_at_the_lowest_limit_measures_from_there() -> None:
    f = Feed(in_flight=(10, 10), pollers=(1, 1))
    f.busy(0.125)
    assert f.lim.base == pytest.approx(0.125)
    f.busy(2.0)  # 16 times the base, and the limit cannot go lower
    assert f.lim.limit == 10
    assert f.lim.base == pytest.approx(2.0)
    assert f.lim.reason == "slot time rose at the lowest limit"
    h = Feed(in_flight=(20, 100), pollers=(1, 1))
    h.busy(0.125)  # 30 -> 60
    for _ in range(3):
        h.busy(2.0)  # 45, 34, 26
    assert (h.lim.limit, h.lim.base) == (26, 0.125)
    h.busy(2.0)  # 20: the lowest
    assert (h.lim.limit, h.lim.base) == (20, 0.125)
    h.busy(2.0)  # still 16 times the base at the lowest limit: 2 s is the new normal
    assert (h.lim.limit, h.lim.base) == (20, 2.0)
    h.busy(2.0)  # and from there it may grow again (by a batch)
    assert h.lim.limit == 30
    g = Feed(in_flight=(10, 100), pollers=(1, 1))
    g.busy(0.125)
    g.busy(2.0)  # above the lowest limit: it shrinks, the base stays
    assert g.lim.base == pytest.approx(0.125)
    assert g.lim.limit < 60


# -- pollers -----------------------------------------------------------------------------------
def test_pollers_double_with_a_backlog_and_free_slots_and_get_slots_of_their_own() -> None:
    f = Feed()
    seen = []
    for _ in range(5):
        f.window(starved=0)
        seen.append((f.lim.pollers, f.lim.limit))
    assert seen == [(4, 120), (8, 240), (16, 480), (16, 480), (16, 480)]
    assert f.lim.reason == "backlog, slots free"


def test_pollers_do_not_grow_without_a_backlog() -> None:
    f = Feed()
    f.window(full=9)
    assert (f.lim.pollers, f.lim.limit) == (2, 60)


def test_no_more_pollers_than_the_limit_has_three_batches_for() -> None:
    f = Feed(in_flight=(10, 200))
    for _ in range(4):
        f.window(starved=0)
    assert (f.lim.pollers, f.lim.limit) == (7, 200)  # 16 wanted; 200 slots are 7 pollers' worth
    assert f.lim.reason == "backlog, slots free, pollers follow the limit"
    g = Feed()
    for _ in range(3):
        g.window(starved=0)
    assert (g.lim.pollers, g.lim.limit) == (16, 480)
    g.busy(0.125)  # base 0.125; slow start: 960
    g.busy(4.0)  # 960 -> 720
    assert (g.lim.pollers, g.lim.limit) == (16, 720)
    g.busy(4.0)  # 540
    g.busy(4.0)  # 405
    assert (g.lim.pollers, g.lim.limit) == (14, 405)  # ceil(405 / 30)
    assert g.lim.reason == "slot time rose, pollers follow the limit"


def test_an_empty_receive_takes_one_poller_away_at_once_down_to_the_lowest() -> None:
    f = Feed()
    for _ in range(2):
        f.window(starved=0)
    assert f.lim.pollers == 8
    f.lim.received(10, 0, False)  # a long poll that brought nothing
    assert f.lim.pollers == 7
    assert f.lim.reason == "empty receive"
    for _ in range(20):
        f.lim.received(10, 0, False)
    assert f.lim.pollers == 1
    g = Feed(pollers=(2, 16))
    g.lim.received(10, 0, False)
    assert g.lim.pollers == 2
    assert g.lim.reason == "start"


def test_a_receive_with_messages_takes_no_poller_away() -> None:
    f = Feed()
    f.lim.received(10, 1, False)
    f.lim.received(1, 1, True)
    assert f.lim.pollers == 2


def test_fixed_bounds_never_move() -> None:
    f = Feed(in_flight=(50, 50), pollers=(3, 3))
    for latency in (0.125, 0.125, 4.0, 0.125):
        f.busy(latency)
        f.window(latency, starved=0)
    for _ in range(5):
        f.lim.received(10, 0, False)
    assert (f.lim.limit, f.lim.pollers) == (50, 3)


# -- the whole loop, against a model of a queue and a server -----------------------------------
def run_model(
    f: Feed,
    seconds: float,
    slot_time: float,
    capacity: float,
    rtt: float = 0.02,
    backlog: bool = True,
) -> list[tuple[int, int, float]]:
    """Feed the limiter what a consumer would see every 0.1 s: a server that completes at
    most ``capacity`` messages per second and holds each slot ``slot_time`` (more when it is
    saturated: Little's law), pollers each receiving ``batch`` per ``rtt``. Returns (limit,
    pollers, throughput) per tick."""
    history = []
    carry = 0.0
    for _ in range(round(seconds / 0.1)):
        lim = f.lim
        by_limit = min(lim.limit / slot_time, capacity)
        by_pollers = lim.pollers * f.batch / rtt
        rate = min(by_limit, by_pollers) if backlog else 0.0
        carry += rate * 0.1
        messages = int(carry) // f.batch * f.batch
        carry -= messages
        starved = by_limit <= by_pollers
        for _ in range(messages // f.batch):
            lim.received(f.batch, f.batch, starved)
        if not backlog:
            for _ in range(lim.pollers):
                lim.received(f.batch, 0, False)
        for _ in range(messages):
            lim.completed()
        held = rate * max(slot_time, min(lim.limit, rate * 10) / capacity)
        f.slot_seconds += held * 0.1
        f.now += 0.1
        lim.tick(f.now, f.slot_seconds)
        history.append((lim.limit, lim.pollers, rate))
    return history


def test_io_bound_handler_grows_until_the_pollers_are_the_bound() -> None:
    # 50 ms per message and a server that never saturates: more in flight is more throughput.
    f = Feed()
    history = run_model(f, 5, slot_time=0.05, capacity=1e9)
    limit, pollers, rate = history[-1]
    assert pollers == 16
    assert limit >= 16 * 30
    assert rate == pytest.approx(16 * 10 / 0.02)
    first_full = next(i for i, (_, p, r) in enumerate(history) if p == 16 and r == rate)
    assert first_full * 0.1 <= 0.7  # full speed within 0.7 s (0.2 s windows: 0.9 s)


def test_a_saturated_server_stops_the_limit_near_the_tolerance() -> None:
    # 2,000 msg/s at most, 50 ms unloaded: past the knee the slot time grows with what is in
    # flight; the limit settles where it is about TOLERANCE times its unloaded value.
    f = Feed()
    history = run_model(f, 20, slot_time=0.05, capacity=2000)
    settled = [limit for limit, _, _ in history[-50:]]
    knee = TOLERANCE * 0.05 * 2000  # 800
    assert all(0.6 * knee <= limit <= 1.15 * knee for limit in settled), settled
    assert all(rate == pytest.approx(2000, rel=0.06) for _, _, rate in history[-50:])
    assert f.lim.base == pytest.approx(0.05, rel=0.05)


def test_an_idle_queue_keeps_the_fewest_pollers() -> None:
    f = Feed()
    run_model(f, 3, slot_time=0.05, capacity=1e9)
    assert f.lim.pollers == 16
    limit = f.lim.limit
    history = run_model(f, 2, slot_time=0.05, capacity=1e9, backlog=False)
    assert history[-1][1] == 1
    assert f.lim.limit == limit  # an unused limit is kept for the next backlog
    assert math.isclose(history[-1][2], 0.0)
