"""Fault injection at CI sizes (python -m benchmarks.chaos --quick): every message accounted for.

Full sizes, the soak, and docs/reliability.md: ``make chaos`` / ``make soak``."""

from __future__ import annotations

import pytest

from benchmarks import chaos
from benchmarks.accounting import Accounting, render
from tests.conftest import Aws

N = chaos.QUICK["n"]


def check(result: Accounting, printed: bool = False) -> None:
    if not printed:
        print(render([result]))
    assert result.lost == 0, result
    assert result.succeeded + result.dead_lettered == result.sent, result
    assert result.extra["poller_crashes"] == 0


async def test_random_handler_failures(aws: Aws) -> None:
    result = await chaos.random_failures(aws.endpoint, int(N))
    check(result)
    assert result.duplicate_successes == 0


async def test_sigkill_twice(aws: Aws) -> None:
    result = await chaos.sigkill(aws.endpoint, int(N))
    check(result)
    assert result.duplicate_successes <= result.extra["duplicate_bound"]


async def test_the_defaults_under_every_fault_at_once(aws: Aws) -> None:
    result = await chaos.defaults_under_faults(aws.endpoint, int(N))
    check(result)
    assert result.duplicate_successes <= result.extra["duplicate_bound"]
    # Every duplicate: a kill before its delete, or a lapse the worker logged loudly.
    explained = result.extra["lease_overdue"] + result.extra["delete_failed"]
    assert result.extra["dup_not_from_a_kill"] <= explained, result
    assert max(result.extra["limit_at_kill"]) > 0  # read from the worker's /metrics (-1: not read)


async def test_sigkill_twice_with_the_idempotency_store(aws: Aws, moto_endpoint: str) -> None:
    result = await chaos.sigkill(aws.endpoint, int(N), store=moto_endpoint)
    check(result)
    # What is left is the window between a handler's effect and its record's completion.
    assert result.duplicate_successes <= result.extra["duplicate_bound"]
    assert "redeliveries_replayed" in result.extra


async def test_sigterm_five_times_under_load(aws: Aws) -> None:
    result = await chaos.sigterm_cycles(aws.endpoint, 600)
    check(result)
    assert result.duplicate_successes == 0
    assert all(t < chaos.GRACE for t in result.extra["exit_seconds_per_cycle"])
    # Nothing received-but-unfinished stays hidden after an exit (another worker may take it).
    assert all(n == 0 for n in result.extra["in_flight_right_after_exit"]), result.extra


@pytest.mark.parametrize("mode", ["blackhole", "refused"])
async def test_outage(aws: Aws, mode: str) -> None:
    result = await chaos.outage(aws.endpoint, 200, chaos.QUICK["outage"], mode)
    check(result)
    assert result.extra["worker_alive"]
    assert result.extra["readiness_went_503"]
    # Backoff, not a spin: a few requests per second at most for two pollers and the acker.
    assert result.extra["requests_per_second_during_outage"] < 5, result.extra


async def test_api_errors_and_failed_batch_entries(aws: Aws) -> None:
    result = await chaos.throttled(aws.endpoint, 200)
    check(result)
    assert result.duplicate_successes == 0
    assert result.extra["injected"].get("entry_failures", 0) > 0
    assert result.extra["delete_entries_retried"] > 0


async def test_hanging_handler(aws: Aws) -> None:
    result = await chaos.hanging_handler(aws.endpoint, 100)
    check(result)
    assert result.extra["timeouts"] == 3


async def test_fifo_order_across_two_workers(aws: Aws) -> None:
    result = await chaos.fifo_two_workers(aws.endpoint, 200)
    check(result)
    assert result.extra["order_violations"] == 0


def check_dead_letters(result: Accounting) -> None:
    """No message reached the DLQ without its own handler failing it (checked before ``lost``,
    which includes them, so that a failure names the cause)."""
    print(render([result]))
    assert result.dead_lettered_unrun == 0, result
    check(result, printed=True)


async def test_fifo_failures(aws: Aws) -> None:
    result = await chaos.fifo_failures(
        aws.endpoint, int(chaos.QUICK["fifo_groups"]), int(chaos.QUICK["fifo_per_group"])
    )
    check_dead_letters(result)
    assert result.extra["failed_calls"] > 0, result.extra
    assert result.extra["order_violations"] == 0, result.extra


async def test_send_after_stop(aws: Aws) -> None:
    result = await chaos.send_after_stop(aws.endpoint)
    check_dead_letters(result)
    # Seconds, not the 30 s visibility timeout of messages handed to an abandoned long poll.
    assert result.extra["handled_after_s"] < 10, result.extra


async def test_permanent_failures_fifo(aws: Aws) -> None:
    result = await chaos.permanent_fifo(
        aws.endpoint, int(chaos.QUICK["fifo_groups"]), int(chaos.QUICK["fifo_per_group"])
    )
    check_dead_letters(result)
    assert result.extra["rejected"] > 0, result.extra
    assert result.extra["rejected_not_in_dlq"] == 0, result.extra
    assert result.extra["followers_dead_lettered"] == 0, result.extra
    assert result.extra["order_violations"] == 0, result.extra


async def test_a_run_that_stops_on_an_error_leaves_no_process_behind(aws: Aws) -> None:
    """A scenario that raises before its accounting (a server gone, a wait run out) must
    not leave its workers and its proxy running after the chaos run ends."""
    run = chaos.Run(aws.endpoint, "abandoned")
    await run.queues()
    worker = run.spawn()
    try:
        assert worker.poll() is None
        assert run.proxy.proc.poll() is None
    finally:
        run.abandon()
    assert worker.poll() is not None
    assert run.proxy.proc.poll() is not None
    run.abandon()  # twice: nothing left to do


async def test_fifo_batch_members_count_only_their_own_failures(aws: Aws) -> None:
    result = await chaos.fifo_batch_failures(aws.endpoint, 10, 20)
    check(result)
    assert result.dead_lettered_unrun == 0
    assert result.duplicate_successes == 0  # a member that succeeded never runs again
    assert result.extra["rejected_not_in_dlq"] == 0


async def test_an_idempotency_store_outage_sends_nothing_to_the_dlq(aws: Aws, moto_endpoint: str) -> None:
    result = await chaos.store_outage(aws.endpoint, 200, 8.0, moto_endpoint)
    check(result)
    assert result.dead_lettered == 0
    assert result.duplicate_successes == 0
    assert result.extra["waiting"] > 0  # claims waited for the store instead of failing
