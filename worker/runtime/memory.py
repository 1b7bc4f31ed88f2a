"""What this process remembers about messages it handled, by message id: one bounded,
optionally time-limited map, oldest first, used for every such memory (the rejections a
redelivery meets again, the failures counted once, the deletes that may not have landed).
Only messages that went wrong are remembered: nothing per message on the fast path."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """At most ``cap`` message ids with a value each, for ``ttl`` seconds (None: until
    pushed out by newer ones); the oldest go first."""

    def __init__(
        self, cap: int, ttl: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cap = cap
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def remember(self, key: str, value: V) -> bool:
        """Remember ``key`` (again: it becomes the newest); True when it was not known."""
        now = self._prune()
        known = self._items.pop(key, None) is not None
        if len(self._items) >= self._cap:
            self._items.popitem(last=False)
        self._items[key] = (now + self._ttl if self._ttl is not None else 0.0, value)
        return not known

    def add(self, key: str, value: V) -> bool:
        """Remember ``key`` unless it is known already (the first value stays); True when new."""
        if key in self._items:
            return False
        return self.remember(key, value)

    def get(self, key: str) -> V | None:
        if not self._items:
            return None
        self._prune()
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def take(self, key: str) -> V | None:
        """``get`` and forget: answered once."""
        if not self._items:
            return None
        self._prune()
        entry = self._items.pop(key, None)
        return None if entry is None else entry[1]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def _prune(self) -> float:
        """Forget what ran out (deadlines are in insertion order); the clock's reading."""
        now = self._clock()
        if self._ttl is not None:
            items = self._items
            while items:
                key = next(iter(items))
                if items[key][0] >= now:
                    break
                del items[key]
        return now
