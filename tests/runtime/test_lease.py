"""The lease's rules, one test each: what the heartbeat may extend, what the acker may
send, when the lease ends. Pure state: no server needed (the behaviour on a real server is
in test_heartbeat.py, test_acker.py and test_consumer.py)."""

from __future__ import annotations

import time

import pytest

from worker.messages.envelope import Message
from worker.runtime.lease import Lease, Leases, State

VISIBILITY = 30
INTERVAL = 10.0


def make(at: float = 100.0) -> tuple[Lease, list[Lease]]:
    ended: list[Lease] = []
    leases = Leases(ended.append)
    message = Message("m-1", "{}", {}, "t", 1, receipt_handle="r-1")
    return leases.open(message, {"Body": "{}"}, at, VISIBILITY), ended


def test_a_new_lease_is_running_and_untouched() -> None:
    lease, ended = make()
    assert lease.state is State.RUNNING
    assert lease.live
    assert lease.runs == 0  # nothing has run yet in this delivery
    assert lease.failures == 0
    assert not lease.overdue
    assert not lease.extending
    assert not lease.sending
    assert ended == []


def test_the_receive_entry_is_kept_for_the_dead_letter_queue() -> None:
    leases = Leases(lambda _: None)
    raw = {"Body": '{"n": 1}', "MessageAttributes": {"type": {"DataType": "String", "StringValue": "t"}}}
    lease = leases.open(Message("m", "{}", {}, "t", 1, receipt_handle="r"), raw, 0.0, VISIBILITY)
    assert lease.raw == raw


def test_left_without_a_time_uses_the_monotonic_clock() -> None:
    lease, _ = make(at=time.monotonic())
    assert VISIBILITY - 5 < lease.left() <= VISIBILITY


def test_visibility_counts_from_the_receive_request() -> None:
    lease, _ = make(at=100.0)
    assert lease.expires_at == 130.0
    assert lease.left(110.0) == 20.0


def test_extension_is_due_after_the_interval_and_not_before() -> None:
    lease, _ = make(at=100.0)
    assert not lease.wants_extension(109.9, INTERVAL)
    assert lease.wants_extension(110.0, INTERVAL)


def test_no_second_extension_while_one_is_in_flight() -> None:
    lease, _ = make(at=100.0)
    lease.extension_sent()
    assert not lease.wants_extension(115.0, INTERVAL)
    lease.extension_done(110.0, granted=False)
    assert lease.wants_extension(115.0, INTERVAL)


def test_grant_counts_from_when_the_extension_was_sent() -> None:
    lease, _ = make(at=100.0)
    lease.extension_sent()
    lease.extension_done(112.0, granted=True)  # the response came later; sent at 112
    assert lease.granted_at == 112.0
    assert lease.expires_at == 142.0


def test_a_failed_extension_grants_nothing() -> None:
    lease, _ = make(at=100.0)
    lease.extension_sent()
    lease.extension_done(112.0, granted=False)
    assert lease.expires_at == 130.0


def test_an_older_grant_never_shortens_a_newer_one() -> None:
    lease, _ = make(at=100.0)
    lease.extension_done(120.0, granted=True)
    lease.extension_done(111.0, granted=True)
    assert lease.expires_at == 150.0


def test_a_pending_delete_keeps_being_extended() -> None:
    lease, _ = make(at=100.0)
    lease.settle_delete()
    assert lease.state is State.SETTLING
    assert lease.wants_extension(110.0, INTERVAL)


def test_a_visibility_change_in_flight_is_never_extended_one_waiting_for_a_call_is() -> None:
    lease, _ = make(at=100.0)
    lease.settle_visibility(0)
    assert lease.wants_extension(129.0, INTERVAL)  # waiting: its visibility must not run out
    assert not lease.wants_extension(100.0 + INTERVAL - 0.001, INTERVAL)  # not due yet
    lease.sending = True  # on its way: it sets the visibility itself
    assert not lease.wants_extension(129.0, INTERVAL)
    lease.sending = False  # failed, to be sent again: extended meanwhile
    lease.extension_sent()
    assert not lease.ready_to_send  # and the change waits for that extension's answer
    assert not lease.wants_extension(129.0, INTERVAL)  # one extension at a time


def test_an_ended_lease_is_never_extended_and_grants_are_ignored() -> None:
    lease, ended = make(at=100.0)
    lease.settle_delete()
    lease.confirmed()
    assert not lease.wants_extension(129.0, INTERVAL)
    lease.extension_done(125.0, granted=True)
    assert lease.expires_at == 130.0
    assert ended == [lease]


def test_a_lost_lease_is_never_extended_but_its_settle_is_still_sent() -> None:
    lease, _ = make(at=100.0)
    lease.lost = True  # SQS refused an extension as stale while the handler ran
    assert not lease.wants_extension(120.0, INTERVAL)
    lease.settle_delete()
    assert not lease.wants_extension(120.0, INTERVAL)
    assert lease.ready_to_send


def test_visibility_change_waits_for_an_extension_in_flight() -> None:
    lease, _ = make()
    lease.extension_sent()
    lease.settle_visibility(300)
    assert not lease.ready_to_send
    lease.extension_done(105.0, granted=True)
    assert lease.ready_to_send


def test_delete_does_not_wait_for_an_extension_in_flight() -> None:
    lease, _ = make()
    lease.extension_sent()
    lease.settle_delete()
    assert lease.ready_to_send


def test_nothing_is_sent_twice_at_once() -> None:
    lease, _ = make()
    lease.settle_delete()
    lease.sending = True
    assert not lease.ready_to_send


def test_a_running_lease_has_nothing_to_send() -> None:
    lease, _ = make()
    assert not lease.ready_to_send


def test_settling_twice_is_a_bug() -> None:
    lease, _ = make()
    lease.settle_delete()
    with pytest.raises(RuntimeError, match="settled twice"):
        lease.settle_visibility(0)


def test_visibility_is_clamped_to_what_sqs_accepts() -> None:
    high, _ = make()
    high.settle_visibility(100_000)
    low, _ = make()
    low.settle_visibility(-5)
    assert (high.target, low.target) == (43_200, 0)


def test_confirmation_ends_the_lease_once_with_the_right_state() -> None:
    deleted, ended = make()
    deleted.settle_delete()
    deleted.confirmed()
    deleted.confirmed()
    deleted.lapsed()
    assert deleted.state is State.SETTLED
    assert ended == [deleted]
    released, _ = make()
    released.settle_visibility(0)
    released.confirmed()
    assert released.state is State.RELEASED


def test_a_lapsed_lease_frees_its_slot_and_leaves_the_table() -> None:
    ended: list[Lease] = []
    leases = Leases(ended.append)
    lease = leases.open(Message("m", "{}", {}, "t", 1, receipt_handle="r"), {}, 0.0, VISIBILITY)
    assert len(leases) == 1
    lease.lapsed()
    assert lease.state is State.LAPSED
    assert not lease.live
    assert len(leases) == 0
    assert ended == [lease]


def test_the_table_lists_only_the_live_leases() -> None:
    leases = Leases(lambda _: None)
    first = leases.open(Message("m-1", "{}", {}, "t", 1, receipt_handle="r-1"), {}, 0.0, VISIBILITY)
    second = leases.open(Message("m-2", "{}", {}, "t", 1, receipt_handle="r-2"), {}, 0.0, VISIBILITY)
    assert leases.live() == [first, second]
    first.settle_delete()
    first.confirmed()
    assert leases.live() == [second]
