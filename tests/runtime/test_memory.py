"""The one memory of messages handled here (worker/runtime/memory.py), server-free."""

from __future__ import annotations

from worker.runtime.memory import Recent


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_keeps_the_newest_up_to_its_cap_oldest_first() -> None:
    memory: Recent[int] = Recent(3)
    for i in range(5):
        assert memory.remember(f"m{i}", i)
    assert list(memory) == ["m2", "m3", "m4"]
    assert len(memory) == 3
    assert not memory.remember("m2", 22)  # known: it becomes the newest, with its new value
    assert list(memory) == ["m3", "m4", "m2"]
    assert memory.get("m2") == 22
    assert memory.remember("m5", 5)  # the cap pushes out the oldest, not the one just renewed
    assert list(memory) == ["m4", "m2", "m5"]


def test_add_keeps_the_first_value() -> None:
    memory: Recent[str] = Recent(10)
    assert memory.add("m", "first")
    assert not memory.add("m", "second")
    assert memory.get("m") == "first"
    assert "m" in memory
    assert "x" not in memory


def test_take_answers_once_and_what_ran_out_is_forgotten() -> None:
    clock = _Clock()
    memory: Recent[str] = Recent(10, ttl=60, clock=clock)
    memory.remember("a", "why-a")
    clock.now += 30
    memory.remember("b", "why-b")
    assert memory.take("a") == "why-a"
    assert memory.take("a") is None  # once
    memory.remember("a", "again")
    clock.now += 60  # both at their deadline (190): still kept
    assert memory.get("b") == "why-b"
    clock.now += 0.001
    assert memory.get("b") is None
    assert memory.get("a") is None
    assert list(memory) == []
    assert memory.take("zzz") is None


def test_without_a_ttl_nothing_runs_out() -> None:
    clock = _Clock()
    memory: Recent[int] = Recent(2, clock=clock)
    memory.remember("a", 1)
    clock.now += 10**9
    assert memory.get("a") == 1
    assert memory.take("a") == 1
    assert memory.get("a") is None
