"""What start-up hooks provide to handlers: one object per class, looked up by class.

    @router.on_startup
    async def open_pool(resources: Resources) -> None:
        resources.add(await Pool.connect(DSN))

    @router.handler("order.placed")
    async def charge(order: OrderPlaced, pool: Pool) -> None: ...

Typed both ways: ``resources.get(Pool)`` is a ``Pool`` to a type checker, and a handler's
parameter annotated ``Pool`` receives it.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class Resources:
    def __init__(self) -> None:
        self._by_class: dict[type, Any] = {}

    def add(self, resource: object, as_type: type | None = None) -> None:
        """Provide ``resource`` to handlers asking for its class (or ``as_type``)."""
        kind = as_type or type(resource)
        if kind in self._by_class:
            raise ValueError(f"a {kind.__name__} resource was already provided")
        self._by_class[kind] = resource

    def get(self, kind: type[T]) -> T:
        try:
            found: T = self._by_class[kind]
        except KeyError:
            raise LookupError(
                f"no {kind.__name__} resource: provide one with resources.add() in an on_startup hook"
            ) from None
        return found

    def __contains__(self, kind: type) -> bool:
        return kind in self._by_class
