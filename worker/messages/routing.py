"""Handler registration: ``Router`` in handler modules, ``Registry`` built from configuration.

A handler module exposes ``router = Router()`` and decorates one function per message type::

    @router.handler("order.placed")
    async def order_placed(order: OrderPlaced, message: Message) -> None: ...

The first parameter's annotation says what the handler receives: a pydantic model (the body
is parsed and validated into it), ``str`` (the raw body), ``Message`` (the whole message),
or anything else (the body decoded as JSON). Further parameters are filled by their
annotation: ``Message`` gets the message, any other class the resource of that class a
start-up hook provided (``Resources``). Plain functions run in a thread pool; coroutines are
awaited. The decorators return the function unchanged, so type checkers keep its signature.

A message type may end in ``:*`` to name a family: ``s3:ObjectCreated:*`` serves
``s3:ObjectCreated:Put`` and ``s3:ObjectCreated:Copy`` unless a handler is registered for the
exact type (the longest family wins: ``s3:ObjectCreated:*`` before ``s3:*``). S3's
``s3:TestEvent`` is settled without a handler unless one is registered for exactly it.

A router also carries start-up and shutdown hooks (``@router.on_startup``,
``@router.on_shutdown``: async functions taking ``Resources``) and middleware
(``@router.middleware``: ``async def mw(message, call_next)`` around every handler call).
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import inspect
import json
import sys
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

from worker.errors import ConfigError
from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure
from worker.messages.records import IdempotencyRecord
from worker.messages.resources import Resources
from worker.messages.s3types import S3_TEST_EVENT

Decode = Literal["model", "json", "str", "message"]
HandlerFn = Callable[..., Any]
P = ParamSpec("P")
R = TypeVar("R")
CallNext = Callable[[], Awaitable[Any]]
Middleware = Callable[[Message, CallNext], Awaitable[Any]]
BatchMiddleware = Callable[[list[Message], CallNext], Awaitable[Any]]
"""A middleware whose first parameter is ``list[Message]``: it wraps batch handlers' calls."""
AnyMiddleware = Middleware | BatchMiddleware
M = TypeVar("M", Middleware, BatchMiddleware)
"""``async def mw(message, call_next)``: ``await call_next()`` runs the rest of the chain and
the handler and returns the handler's result (for an idempotent handler's replay: the
stored result of the run that completed); raising (``Retry``, ``PermanentFailure``,
anything) or returning decides the outcome as a handler would."""
Hook = Callable[[Resources], Awaitable[None]]
_replayed: contextvars.ContextVar[bool] = contextvars.ContextVar("replayed", default=False)


def replayed() -> bool:
    """In the middleware chain of an idempotent handler: True when the handler does not run
    because an earlier run of the same key completed (``call_next()`` returns its stored
    result, JSON-decoded)."""
    return _replayed.get()


def set_replayed(value: bool) -> None:
    """The runtime's side of ``replayed()``, set before each chain runs."""
    _replayed.set(value)


@dataclass(frozen=True, slots=True)
class BatchSpec:
    max_size: int
    max_wait: float


BatchResult = dict[str, BaseException] | None
"""What a batch handler returns: None when every message succeeded, else the failed ones
by message id, each with what it raised (``Retry``, ``PermanentFailure``, any exception);
messages not named succeeded."""


WILDCARD = ":*"
DEFAULT_ROUTE = "(default)"
"""The ``message_type`` of a default handler's route (and its metrics' ``type`` label)."""


def families(message_type: str) -> list[str]:
    """The wildcard types that serve ``message_type``, longest first:
    ``s3:ObjectCreated:Put`` -> ``["s3:ObjectCreated:*", "s3:*"]``."""
    parts = message_type.split(":")
    return [":".join(parts[:n]) + WILDCARD for n in range(len(parts) - 1, 0, -1)]


class HandlerError(ConfigError):
    """A handler module cannot be loaded, or two handlers claim one message type."""


@dataclass(frozen=True, slots=True)
class Route:
    message_type: str
    fn: HandlerFn
    is_async: bool
    decode: Decode
    model: type[BaseModel] | None
    extras: tuple[type | None, ...]
    """Parameters after the payload: None for the ``Message``, else a resource's class."""
    source: str
    batch: BatchSpec | None = None
    """Set for batch handlers: they take lists, and report per-message results."""
    idempotent: bool = False
    """Runs once per message key (``worker.runtime.idempotency``)."""
    dependencies: tuple[str, ...] = ()
    """What its runs need (``dependencies=[...]``): each has a circuit breaker; while one is
    open the route's messages wait, leased, without spending attempts."""
    rate: float | None = None
    """Messages started per second (``rate=``; a queue's ``routes.<type>.rate`` overrides)."""
    burst: float | None = None
    """Messages that may start at once after a quiet spell (default: ``rate``)."""
    max_concurrency: int | None = None
    """Runs of this route at once in a process (``max_concurrency=``)."""

    def arguments(
        self,
        message: Message,
        resources: Resources | None = None,
        record: IdempotencyRecord | None = None,
        *,
        payload: Any = None,
    ) -> tuple[Any, ...]:
        """Build the handler's arguments (``payload``: the body decoded already); a body that
        cannot be decoded is a permanent failure."""
        if payload is None:
            payload = self.payload(message)
        if not self.extras:
            return (payload,)
        return (
            payload,
            *(
                message
                if kind is None
                else record
                if kind is IdempotencyRecord
                else _resource(resources, kind)
                for kind in self.extras
            ),
        )

    def batch_arguments(
        self, payloads: list[Any], messages: list[Message], resources: Resources | None
    ) -> tuple[Any, ...]:
        return (payloads, *(messages if kind is None else _resource(resources, kind) for kind in self.extras))

    def payload(self, message: Message) -> Any:
        """The decoded body (or the message itself); bad input is a PermanentFailure."""
        payload: Any
        if self.decode == "message":
            return message
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
        return payload

    @property
    def resources(self) -> list[type]:
        """The classes of the resources it takes (start-up hooks must provide them)."""
        return [kind for kind in self.extras if kind is not None and kind is not IdempotencyRecord]


def _resource(resources: Resources | None, kind: type) -> Any:
    if resources is None:
        raise LookupError(f"no resources: nothing provides {kind.__name__}")
    return resources.get(kind)


def _route(
    message_type: str,
    fn: HandlerFn,
    model: type[BaseModel] | None,
    batch: BatchSpec | None = None,
    dependencies: Sequence[str] = (),
) -> Route:
    if not callable(fn):
        raise HandlerError(f"handler for {message_type!r} is not callable")
    source = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        raise HandlerError(f"{source}: a handler takes the payload first: (payload, ...)")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise HandlerError(f"{source}: cannot resolve type hints: {exc}") from exc
    annotation = model or hints.get(params[0].name)
    if batch is not None and model is None:
        if typing.get_origin(annotation) is not list:
            raise HandlerError(f"{source}: a batch handler takes a list first: (payloads: list[Model], ...)")
        (annotation,) = typing.get_args(annotation) or (Any,)
    decode: Decode
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        decode, model = "model", annotation
    elif annotation is Message:
        decode = "message"
    elif annotation is str:
        decode = "str"
    else:
        decode = "json"
    extras: list[type | None] = []
    for param in params[1:]:
        kind = hints.get(param.name)
        if batch is not None and typing.get_origin(kind) is list and typing.get_args(kind) == (Message,):
            kind = Message
        if kind is Message:
            extras.append(None)
        elif len(params) == 2 and kind is None and decode != "message":
            extras.append(None)  # (payload, message) without annotations, as before
        elif isinstance(kind, type):
            extras.append(kind)
        else:
            raise HandlerError(
                f"{source}: parameter {param.name!r} needs a class annotation: Message, "
                "IdempotencyRecord, or the class of a resource a start-up hook provides"
            )
    if decode == "message" and None in extras:
        raise HandlerError(f"{source}: a handler taking the Message first takes no second Message")
    return Route(
        message_type=message_type,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        decode=decode,
        model=model if decode == "model" else None,
        extras=tuple(extras),
        source=source,
        batch=batch,
        dependencies=_dependencies(source, dependencies),
    )


def _limited(route: Route, rate: float | None, burst: float | None, max_concurrency: int | None) -> Route:
    if rate is not None and not rate > 0:
        raise HandlerError(f"{route.source}: rate must be a positive number of messages per second")
    if burst is not None and (rate is None or not burst >= 1):
        raise HandlerError(f"{route.source}: burst needs a rate and must be at least 1")
    if max_concurrency is not None and not (isinstance(max_concurrency, int) and max_concurrency >= 1):
        raise HandlerError(f"{route.source}: max_concurrency must be a whole number of runs, at least 1")
    if rate is None and max_concurrency is None:
        return route
    return dataclasses.replace(route, rate=rate, burst=burst, max_concurrency=max_concurrency)


def _dependencies(source: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise HandlerError(f"{source}: dependencies is a list of names, e.g. dependencies=[{names!r}]")
    if not all(isinstance(n, str) and n for n in names):
        raise HandlerError(f"{source}: dependencies must be non-empty names, got {list(names)!r}")
    return tuple(dict.fromkeys(names))


@dataclass
class Router:
    """Collects a module's handlers (one per message type), hooks and middleware."""

    _routes: dict[str, Route] = field(default_factory=dict)
    startup: list[Hook] = field(default_factory=list)
    shutdown: list[Hook] = field(default_factory=list)
    middlewares: list[AnyMiddleware] = field(default_factory=list)
    default_route: Route | None = None
    """The handler of messages without a type (``@router.default()``)."""
    default_takes_unknown: bool = False
    """It also serves messages of a type no handler serves."""

    def default(
        self, *, unknown: bool = False, model: type[BaseModel] | None = None, dependencies: Sequence[str] = ()
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register the decorated function for messages that carry no type (a plain JSON or
        text body, an AWS service's notification), and with ``unknown=True`` also for types
        no handler serves. Its first parameter decides what it gets, as for typed handlers:
        a pydantic model, ``dict``/``Any`` (the parsed JSON), ``str`` (the raw text) or
        ``Message``. A queue's ``types.default`` setting names a typed handler instead."""

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            route = _route(DEFAULT_ROUTE, fn, model, None, dependencies)
            if self.default_route is not None:
                raise HandlerError(f"two default handlers: {self.default_route.source} and {route.source}")
            self.default_route, self.default_takes_unknown = route, unknown
            return fn

        return register

    def add(
        self,
        message_type: str,
        fn: HandlerFn,
        *,
        model: type[BaseModel] | None = None,
        batch: BatchSpec | None = None,
        idempotent: bool = False,
        dependencies: Sequence[str] = (),
        rate: float | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        if not message_type:
            raise HandlerError("message type must be a non-empty string")
        if "*" in message_type and not (
            message_type.endswith(WILDCARD) and "*" not in message_type[: -len(WILDCARD)]
        ):
            raise HandlerError(
                f"message type {message_type!r}: a wildcard is a trailing ':*' (e.g. 's3:ObjectCreated:*')"
            )
        route = _limited(_route(message_type, fn, model, batch, dependencies), rate, burst, max_concurrency)
        if idempotent:
            if batch is not None:
                raise HandlerError(
                    f"{route.source}: idempotent=True is for single-message handlers (a batch "
                    "handler's members would each need their own record)"
                )
            route = dataclasses.replace(route, idempotent=True)
        elif IdempotencyRecord in route.extras:
            raise HandlerError(f"{route.source}: takes an IdempotencyRecord, so it must be idempotent=True")
        if message_type in self._routes:
            raise HandlerError(
                f"two handlers for message type {message_type!r}: "
                f"{self._routes[message_type].source} and {route.source}"
            )
        self._routes[message_type] = route

    def handler(
        self,
        message_type: str,
        *,
        model: type[BaseModel] | None = None,
        idempotent: bool = False,
        dependencies: Sequence[str] = (),
        rate: float | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register the decorated function for ``message_type``; the function is returned
        as it is, signature and all. ``idempotent=True``: it runs once per message key
        (the ``idempotency-key`` attribute, else the FIFO deduplication id, else the
        message id) within ``idempotency.expires_after``; needs ``idempotency.store``.
        ``dependencies``: what its runs need (``["payments"]``), each with a circuit breaker;
        ``rate`` (with ``burst``): messages started per second; ``max_concurrency``: runs at
        once (docs/flow-control.md)."""

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            self.add(
                message_type,
                fn,
                model=model,
                idempotent=idempotent,
                dependencies=dependencies,
                rate=rate,
                burst=burst,
                max_concurrency=max_concurrency,
            )
            return fn

        return register

    def batch_handler(
        self,
        message_type: str,
        *,
        max_size: int = 10,
        max_wait: float = 1.0,
        model: type[BaseModel] | None = None,
        dependencies: Sequence[str] = (),
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a handler that takes up to ``max_size`` messages of ``message_type`` at
        once (``payloads: list[Model]``, optionally ``messages: list[Message]``), formed
        across receives for at most ``max_wait`` seconds while every member's lease is kept.
        It returns None (all succeeded) or ``{message_id: exception}`` for the failed ones."""
        if not 1 <= max_size <= 1000:
            raise HandlerError(f"batch_handler {message_type!r}: max_size must be 1-1000")
        if not 0 <= max_wait <= 300:
            raise HandlerError(f"batch_handler {message_type!r}: max_wait must be 0-300 seconds")

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            self.add(
                message_type, fn, model=model, batch=BatchSpec(max_size, max_wait), dependencies=dependencies
            )
            return fn

        return register

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook(resources)`` once per process before the first receive (a failure
        stops the worker with exit code 1 and the error)."""
        self.startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook(resources)`` once per process after the last message is settled."""
        self.shutdown.append(hook)
        return hook

    def middleware(self, fn: M) -> M:
        """Wrap every handler call of the queues this module serves (in registration order:
        the first registered is the outermost)."""
        self.middlewares.append(fn)
        return fn

    @property
    def routes(self) -> dict[str, Route]:
        return dict(self._routes)


class Registry:
    """The message types one queue serves, from the handler modules configured for it."""

    def __init__(
        self,
        routes: dict[str, Route],
        middlewares: list[AnyMiddleware] | None = None,
        routers: list[Router] | None = None,
    ) -> None:
        self._routes = routes
        self.middlewares = list(middlewares or [])
        self.routers = list(routers or [])
        """The routers it was built from (their start-up and shutdown hooks)."""

    default: Route | None = None
    """The default handler of the routers (``@router.default()``), if one has one."""
    default_takes_unknown: bool = False

    @classmethod
    def of(cls, *routers: Router) -> Registry:
        """A registry of these routers (tests, the testing kit, embedding)."""
        routes: dict[str, Route] = {}
        defaults = [r for r in routers if r.default_route is not None]
        if len(defaults) > 1:
            sources = [r.default_route.source for r in defaults[:2] if r.default_route is not None]
            raise HandlerError(f"two default handlers: {' and '.join(sources)}")
        for router in routers:
            for message_type, route in router.routes.items():
                if message_type in routes:
                    raise HandlerError(
                        f"two handlers for message type {message_type!r}: "
                        f"{routes[message_type].source} and {route.source}"
                    )
                routes[message_type] = route
        registry = cls(routes, [m for r in routers for m in r.middlewares], list(routers))
        if defaults:
            registry.default = defaults[0].default_route
            registry.default_takes_unknown = defaults[0].default_takes_unknown
        return registry

    @classmethod
    def from_modules(cls, modules: list[str]) -> Registry:
        routers: list[Router] = []
        for name in modules:
            try:
                module = importlib.import_module(name)
            except HandlerError as exc:
                raise HandlerError(f"handler module {name!r}: {exc}") from None
            except ModuleNotFoundError as exc:
                if exc.name is not None and name.split(".")[0] == exc.name.split(".")[0]:
                    raise HandlerError(
                        f"cannot import handler module {name!r}: no such module on the import path "
                        f"(searched: {', '.join(p or '.' for p in sys.path[:4])}, ...); run the worker "
                        "from your project's directory or pass --app-dir DIR"
                    ) from None
                raise HandlerError(
                    f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            except Exception as exc:
                raise HandlerError(
                    f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            router = getattr(module, "router", None)
            if not isinstance(router, Router):
                raise HandlerError(f"handler module {name!r} has no `router = Router()`")
            routers.append(router)
        registry = cls.of(*routers)
        if not registry.types and registry.default is None:
            raise HandlerError(f"handler modules {modules} register no message type and no default handler")
        return registry

    @property
    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def get(self, message_type: str | None) -> Route | None:
        """The route for ``message_type``: its own handler, else (``s3:TestEvent``) the
        built-in one that settles it, else the longest ``:*`` family that serves it."""
        if not message_type:
            return None
        route = self._routes.get(message_type)
        if route is not None:
            return route
        if message_type == S3_TEST_EVENT:
            return _S3_TEST_EVENT_ROUTE
        if ":" not in message_type:
            return None
        for family in families(message_type):
            route = self._routes.get(family)
            if route is not None:
                return route
        return None

    @property
    def types(self) -> list[str]:
        return sorted(self._routes)

    @property
    def idempotent(self) -> list[Route]:
        """The routes registered with ``idempotent=True``."""
        return [r for r in self._routes.values() if r.idempotent]


async def settle_s3_test_event(message: Message) -> None:
    """Built in for ``s3:TestEvent``, which S3 sends once when a notification is configured:
    nothing to do, so the message is deleted."""


_S3_TEST_EVENT_ROUTE = _route(S3_TEST_EVENT, settle_s3_test_event, None)
