"""The outcome rule (worker/runtime/rules.py): every outcome on every kind of queue, at every
attempt that matters (server-free: a pure function)."""

from __future__ import annotations

import pytest

from worker.runtime.rules import (
    ABANDONED,
    CANCELLED,
    SUCCEEDED,
    Action,
    Decision,
    Outcome,
    Policy,
    decide,
    wait_for,
)

STANDARD = Policy(fifo=False, max_receive_count=3, backoff=(10, 60, 300))
FIFO = Policy(fifo=True, max_receive_count=3, backoff=(10, 60, 300))
NO_DLQ = Policy(fifo=False, max_receive_count=None, backoff=(10, 60, 300))
FIFO_NO_DLQ = Policy(fifo=True, max_receive_count=None, backoff=(10, 60, 300))
FAILED = Outcome("failed", 7, "boom")
REJECTED = Outcome("rejected", 0, "bad")
WAITING = Outcome("waiting", 4, "s3 unavailable")


@pytest.mark.parametrize("policy", [STANDARD, FIFO, NO_DLQ, FIFO_NO_DLQ])
@pytest.mark.parametrize("attempt", [1, 3, 9])
def test_what_does_not_depend_on_the_queue_or_the_attempt(policy: Policy, attempt: int) -> None:
    assert decide(SUCCEEDED, attempt, policy) == Decision(Action.DELETE)
    assert decide(CANCELLED, attempt, policy) == Decision(Action.RELEASE)
    assert decide(ABANDONED, attempt, policy) == Decision(Action.KEEP)
    assert decide(WAITING, attempt, policy) == Decision(Action.WAIT, 4)  # no attempt spent


def test_a_standard_failure_goes_back_with_its_delay_and_says_when_it_is_the_last() -> None:
    assert decide(FAILED, 1, STANDARD) == Decision(Action.RETRY, 7, last_try=False)
    assert decide(FAILED, 2, STANDARD) == Decision(Action.RETRY, 7, last_try=False)
    assert decide(FAILED, 3, STANDARD) == Decision(Action.RETRY, 7, last_try=True)  # redrive next
    assert decide(FAILED, 4, STANDARD) == Decision(Action.RETRY, 7, last_try=True)
    assert decide(FAILED, 99, NO_DLQ) == Decision(Action.RETRY, 7, last_try=False)


def test_a_fifo_failure_waits_in_place_until_its_own_attempts_are_used_up() -> None:
    assert decide(FAILED, 1, FIFO) == Decision(Action.WAIT, 7)
    assert decide(FAILED, 2, FIFO) == Decision(Action.WAIT, 7)
    assert decide(FAILED, 3, FIFO) == Decision(Action.DEAD_LETTER)  # by the worker, in order
    assert decide(FAILED, 99, FIFO_NO_DLQ) == Decision(Action.WAIT, 7)


def test_a_rejection_goes_to_the_dlq_at_once_or_backs_off_without_one() -> None:
    for attempt in (1, 2, 3):
        assert decide(REJECTED, attempt, STANDARD) == Decision(Action.DEAD_LETTER)
        assert decide(REJECTED, attempt, FIFO) == Decision(Action.DEAD_LETTER)
    assert decide(REJECTED, 1, NO_DLQ) == Decision(Action.RETRY, 10)
    assert decide(REJECTED, 2, NO_DLQ) == Decision(Action.RETRY, 60)
    assert decide(REJECTED, 2, FIFO_NO_DLQ) == Decision(Action.WAIT, 60)


def test_the_backoff_schedule_by_attempt_its_last_delay_repeating() -> None:
    assert [STANDARD.backoff_for(a) for a in (0, 1, 2, 3, 4, 50)] == [10, 10, 60, 300, 300, 300]


def test_jitter_adds_at_most_its_share() -> None:
    policy = Policy(fifo=False, max_receive_count=None, backoff=(100,), jitter=0.25)
    delays = {policy.backoff_for(1) for _ in range(300)}
    assert min(delays) >= 100
    assert max(delays) <= 125
    assert len(delays) > 5  # it does vary


def test_exhausted_is_reached_at_max_receive_count_and_never_without_a_dlq() -> None:
    assert [STANDARD.exhausted(a) for a in (1, 2, 3, 4)] == [False, False, True, True]
    assert not NO_DLQ.exhausted(10_000)


def test_waits_on_a_dependency_double_up_to_their_cap() -> None:
    assert [wait_for(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert wait_for(-1) == 1
    assert wait_for(3, cap=5) == 5
