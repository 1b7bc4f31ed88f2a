"""The user's middleware around the handler (first registered outermost).

A middleware whose first parameter is a ``Message`` wraps single-message calls; one whose
first parameter is a ``list[Message]`` wraps batch calls. ``call_next()`` returns what the
handler returned (a batch handler: its failures), or an idempotent replay's stored result.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from worker.messages.routing import AnyMiddleware
from worker.runtime.call import Call, Next


def takes_batches(middleware: Callable[..., Any]) -> bool:
    """Whether ``middleware``'s first parameter is annotated as a list of messages."""
    try:
        hints = typing.get_type_hints(middleware)
        first = next(iter(inspect.signature(middleware).parameters))
    except Exception:
        return False
    origin = typing.get_origin(hints.get(first))
    return origin in (list, collections.abc.Sequence)


class MiddlewareStep:
    stage = "middleware"

    def __init__(self, middlewares: list[AnyMiddleware]) -> None:
        self._single: list[Callable[..., Awaitable[Any]]] = [m for m in middlewares if not takes_batches(m)]
        self._batch: list[Callable[..., Awaitable[Any]]] = [m for m in middlewares if takes_batches(m)]

    async def __call__(self, call: Call, call_next: Next) -> None:
        chain: list[Callable[..., Awaitable[Any]]] = self._batch if call.batch else self._single
        if not chain:
            await call_next(call)
            return

        async def innermost() -> Any:
            await call_next(call)
            return call.value

        subject: Any = [item.message for item in call.live] if call.batch else call.live[0].message
        step: Callable[[], Awaitable[Any]] = innermost
        for middleware in reversed(chain):
            step = functools.partial(middleware, subject, step)
        call.stage = self.stage
        await step()
