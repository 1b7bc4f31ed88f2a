"""Handler registration: ``Router`` in handler modules, ``Registry`` built from configuration.

A handler module exposes ``router = Router()`` and decorates one function per message type::

    @router.handler("order.placed")
    async def order_placed(order: OrderPlaced, message: Message) -> None: ...

The first parameter's annotation says what the handler receives: a pydantic model (the body
is parsed and validated into it), ``str`` (the raw body), ``Message`` (the whole message),
or anything else (the body decoded as JSON). A second parameter, if present, gets the
``Message``. Plain functions run in a thread pool; coroutines are awaited.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ValidationError

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure

Decode = Literal["model", "json", "str", "message"]
HandlerFn = Callable[..., Any]


class HandlerError(Exception):
    """A handler module cannot be loaded, or two handlers claim one message type."""


@dataclass(frozen=True, slots=True)
class Route:
    message_type: str
    fn: HandlerFn
    is_async: bool
    decode: Decode
    model: type[BaseModel] | None
    wants_message: bool
    source: str

    def arguments(self, message: Message) -> tuple[Any, ...]:
        """Build the handler's arguments; a body that cannot be decoded is a permanent failure."""
        payload: Any
        if self.decode == "message":
            return (message,)
        if self.decode == "str":
            payload = message.body
        elif self.decode == "model":
            assert self.model is not None
            try:
                payload = self.model.model_validate_json(message.body)
            except RecursionError:
                raise PermanentFailure("body is nested too deeply to decode") from None
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}"
                    for e in exc.errors(include_input=False)[:5]
                )
                raise PermanentFailure(f"invalid payload for {self.model.__name__}: {problems}") from None
        else:
            try:
                payload = json.loads(message.body)
            except json.JSONDecodeError as exc:
                raise PermanentFailure(f"body is not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise PermanentFailure("body is nested too deeply to decode") from None
            except ValueError as exc:  # e.g. numbers too long to convert: still bad input
                raise PermanentFailure(f"body cannot be decoded: {exc}"[:300]) from None
        return (payload, message) if self.wants_message else (payload,)


def _route(message_type: str, fn: HandlerFn, model: type[BaseModel] | None) -> Route:
    if not callable(fn):
        raise HandlerError(f"handler for {message_type!r} is not callable")
    source = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(params) <= 2:
        raise HandlerError(f"{source}: a handler takes (payload) or (payload, message)")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise HandlerError(f"{source}: cannot resolve type hints: {exc}") from exc
    annotation = model or hints.get(params[0].name)
    decode: Decode
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        decode, model = "model", annotation
    elif annotation is Message:
        if len(params) == 2:
            raise HandlerError(f"{source}: a handler taking the Message takes nothing else")
        decode = "message"
    elif annotation is str:
        decode = "str"
    else:
        decode = "json"
    return Route(
        message_type=message_type,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        decode=decode,
        model=model if decode == "model" else None,
        wants_message=len(params) == 2,
        source=source,
    )


class Router:
    """Collects a module's handlers, one per message type."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(self, message_type: str, fn: HandlerFn, *, model: type[BaseModel] | None = None) -> None:
        if not message_type:
            raise HandlerError("message type must be a non-empty string")
        route = _route(message_type, fn, model)
        if message_type in self._routes:
            raise HandlerError(
                f"two handlers for message type {message_type!r}: "
                f"{self._routes[message_type].source} and {route.source}"
            )
        self._routes[message_type] = route

    def handler(
        self, message_type: str, *, model: type[BaseModel] | None = None
    ) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.add(message_type, fn, model=model)
            return fn

        return register

    @property
    def routes(self) -> dict[str, Route]:
        return dict(self._routes)


class Registry:
    """The message types one queue serves, from the handler modules configured for it."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self._routes = routes

    @classmethod
    def from_modules(cls, modules: list[str]) -> Registry:
        routes: dict[str, Route] = {}
        for name in modules:
            try:
                module = importlib.import_module(name)
            except HandlerError as exc:
                raise HandlerError(f"handler module {name!r}: {exc}") from None
            except Exception as exc:
                raise HandlerError(
                    f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            router = getattr(module, "router", None)
            if not isinstance(router, Router):
                raise HandlerError(f"handler module {name!r} has no `router = Router()`")
            for message_type, route in router.routes.items():
                if message_type in routes:
                    raise HandlerError(
                        f"two handlers for message type {message_type!r}: "
                        f"{routes[message_type].source} and {route.source}"
                    )
                routes[message_type] = route
        if not routes:
            raise HandlerError(f"handler modules {modules} register no message type")
        return cls(routes)

    def get(self, message_type: str | None) -> Route | None:
        return self._routes.get(message_type) if message_type else None

    @property
    def types(self) -> list[str]:
        return sorted(self._routes)
