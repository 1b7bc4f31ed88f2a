"""The benchmark's explanation of a miss says which part bound the run: the server (its one
core used up), the machine (both cores busy) or the consumer's own waiting."""

from __future__ import annotations

from typing import Any

from benchmarks.result import Result
from benchmarks.targets import SERVER_BOUND, where_cpu_went


def _result(**window: Any) -> Result:
    return Result("s", 5000, 5.0, 1000.0, extra={"window": window})


def test_a_server_using_its_core_is_named_as_the_bound() -> None:
    text = where_cpu_went(_result(host_busy=0.75, server_core=0.93), _result(host_busy=0.8, server_core=0.95))
    assert "the server used 93% of a core (raw loop: 95%)" in text
    assert "the server was the bound" in text
    assert "had room" not in text


def test_below_the_bound_the_machine_decides() -> None:
    below = SERVER_BOUND - 0.01
    assert "had room" in where_cpu_went(_result(host_busy=0.7, server_core=below), None)
    assert "saturated" in where_cpu_went(_result(host_busy=0.95, server_core=below), None)
    assert "had room" in where_cpu_went(_result(host_busy=0.7), None)  # no server reading


def test_no_window_no_sentence() -> None:
    assert where_cpu_went(Result("s", 1, 1.0, 1.0), None) == ""
