"""structlog set-up: JSON lines off a TTY, a readable console on one.

Event names are fixed (see ``worker.events``); per-message context (queue, message_id,
type, receive_count) is bound by the processor, so every line about a message carries it.

JSON lines are rendered by orjson (a fraction of ``json.dumps``'s time: the worker writes
one line per message) and written with one ``write`` each; the ISO timestamp is built from
a per-second prefix.

structlog imports rich (and pygments) when they are installed, for pretty console
tracebacks the worker never uses (it renders tracebacks plainly or as JSON): unless
something imported rich already, structlog is imported here without it, which takes about
45 ms off every start. rich itself stays importable (typer's help uses it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

if "structlog" in sys.modules or "rich" in sys.modules:
    import structlog
else:
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails: structlog goes without
    try:
        import structlog
    finally:
        del sys.modules["rich"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: object | None = None,
) -> None:
    flush_logs()  # lines held for the stream this replaces
    out = _Tolerant(stream if stream is not None else sys.stderr)
    _outputs[:] = [out]
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.typing.Processor] = [_context]
    renderer: list[structlog.typing.Processor]
    if use_console:
        renderer = [
            _Readable(debug=level == "debug"),
            structlog.dev.ConsoleRenderer(
                exception_formatter=structlog.dev.plain_traceback,
                sort_keys=False,
                colors=out.isatty() and not os.environ.get("NO_COLOR"),  # no-color.org
            ),
        ]
        line = renderer
    else:
        renderer = [_JsonLine(binary=False)]
        line = [_JsonLine(binary=out.binary)]
    structlog.configure(
        processors=[*shared, *line],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=_LineLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # The standard library's loggers (handler code, libraries) go through the same
    # renderer with the same bound context (queue, message_id, type), at the same level.
    # The handler's own name is kept as ``logger``.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _drop_color_message],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # botocore/aiohttp chatter stays out unless asked for.
    for noisy in ("botocore", "aiobotocore", "aiohttp", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the embedded demo server


def _drop_color_message(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event.pop("color_message", None)
    return event


# -- the timestamp ------------------------------------------------------------------------
_second_prefix: tuple[int, str] = (-1, "")
"""The last second formatted (``_context``) and its text."""


# -- the bound context ----------------------------------------------------------------------
_STRUCTLOG_VARS: dict[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)
_PREFIX_LENGTH = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)
_bound: tuple[tuple[str, contextvars.ContextVar[Any]], ...] = ()
"""structlog's variables with their keys, as of the registry's last size."""
_binders: tuple[contextvars.ContextVar[dict[str, Any] | None], ...] = ()
"""Each ``ContextBinder``'s variable (one per binder, holding all of its keys)."""


trace_ids: Callable[[], tuple[str, str] | None] | None = None
"""Set by ``worker.observe.tracing`` when tracing is on: the current span's ids."""

_LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def _context(logger: object, name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """What every line gets, in one processor (a per-message line goes through it once):

    * the bound context: the ``ContextBinder`` values (the message's queue, id, type...),
      then what was bound with ``structlog.contextvars`` (handler code may), reading only
      the variables structlog created instead of copying the whole context;
    * ``trace_id`` and ``span_id`` of the current span, inside one (tracing on);
    * ``level`` (as ``structlog.processors.add_log_level`` names it);
    * ``timestamp``: ISO 8601 in UTC with microseconds, always six digits
      (``2026-11-22T23:40:01.123456Z``; a whole second is ``.000000``, where structlog's
      ``TimeStamper`` writes none, so that lines sort by their text), with the date and
      time of day formatted once per second.

    Keys the call gave win over bound ones."""
    global _bound, _second_prefix
    for binder in _binders:
        values = binder.get()
        if values is not None:
            for key, value in values.items():
                event.setdefault(key, value)
    registry = _STRUCTLOG_VARS
    if registry is None:  # pragma: no cover - a structlog without the registry
        event = structlog.contextvars.merge_contextvars(logger, name, event)
    else:
        bound = _bound
        if len(bound) != len(registry):  # a variable was added (structlog never removes one)
            bound = _bound = tuple(
                (key[_PREFIX_LENGTH:], var)
                for key, var in tuple(registry.items())  # (threads may add one meanwhile)
            )
        for key, var in bound:
            bound_value = var.get()
            if bound_value is not Ellipsis:
                event.setdefault(key, bound_value)
    if trace_ids is not None:
        ids = trace_ids()
        if ids is not None:
            event.setdefault("trace_id", ids[0])
            event.setdefault("span_id", ids[1])
    event["level"] = _LEVEL_NAMES.get(name, name)
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached, prefix = _second_prefix  # one read: threads log too
    if second != cached:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_prefix = (second, prefix)
    event["timestamp"] = f"{prefix}.{nanos // 1000:06d}Z"
    return event


class ContextBinder:
    """Binds a fixed set of keys for every log line of the current context (the task),
    handler code's lines included: ``bind(*values)`` binds them in order, replacing what
    this binder bound before. One context variable per binder (one ``set`` per message,
    instead of one per key with ``structlog.contextvars.bind_contextvars``)."""

    def __init__(self, *keys: str) -> None:
        global _binders
        self._keys = keys
        self._var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
            f"worker_log_context_{len(_binders)}", default=None
        )
        _binders = (*_binders, self._var)

    def bind(self, *values: object) -> None:
        self._var.set(dict(zip(self._keys, values, strict=True)))


# -- rendering ----------------------------------------------------------------------------
def _fallback(value: object) -> object:
    """What orjson cannot serialise: ``__structlog__()`` if it has one, else ``repr``
    (structlog's own fallback)."""
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


def _dumps(event: structlog.typing.EventDict) -> bytes:
    """Compact JSON, ASCII only (as ``json.dumps`` writes it: a non-ASCII character is
    escaped, so no line separator such as U+2028 or U+0085 can split a line)."""
    try:
        line = orjson.dumps(event, default=_fallback, option=_ORJSON_OPTIONS)
        if line.isascii():
            return line
    except TypeError:  # an int beyond 64 bits, a key orjson refuses
        pass
    return json.dumps(event, default=_fallback, separators=(",", ":")).encode()


class _JsonLine:
    """The JSON line: the traceback rendered as a structure, without local variables (they
    would carry message bodies), ``event`` moved last, orjson; bytes for a binary stream."""

    def __init__(self, binary: bool) -> None:
        self._binary = binary
        self._exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )

    def __call__(self, logger: object, name: str, event: structlog.typing.EventDict) -> str | bytes:
        if "exc_info" in event:
            event = self._exceptions(logger, name, event)
        event.pop(ATTEMPTS_KEY, None)
        event["event"] = event.pop("event")
        line = _dumps(event)
        return line if self._binary else line.decode()


# -- the console: a terminal a person reads ---------------------------------------------
ATTEMPTS_KEY = "attempts_max"
"""The console's "attempt n of m": a message's failure line carries it; the JSON line drops
it (JSON lines keep the fields they always had)."""

_FAILURE_DETAILS = (
    "reason",
    "attempt",
    ATTEMPTS_KEY,
    "retry_in",
    "dead_letter_next",
    "duration",
    "receive_count",
)
_WORKER_DIR = str(Path(__file__).resolve().parents[1])
_DEMO_DIR = str(Path(_WORKER_DIR) / "_demo")
_ASYNCIO_DIR = str(Path(asyncio.__file__).resolve().parent)


class _Readable:
    """The console's shape of a message's failure: one line, ``message_failed: ValueError:
    card declined (attempt 2 of 3, next try in 10 s)``, its traceback left out while the
    message will be tried again; the last failure before the DLQ (or any failure at
    ``--log-level debug``) keeps it. The settle line that repeats the failure line's
    decision is left out, and so is any field without a value."""

    def __init__(self, debug: bool) -> None:
        self._debug = debug

    def __call__(
        self, logger: object, name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        if event.get("event") == "message_retry_scheduled" and not self._debug:
            raise structlog.DropEvent
        if "attempt" in event and "dead_letter_next" in event:
            self._failure(event)
        for key in [key for key, value in event.items() if value is None]:
            del event[key]
        return event

    def _failure(self, event: structlog.typing.EventDict) -> None:
        last = bool(event.get("dead_letter_next"))
        exc_info = event.pop("exc_info", None)
        if exc_info and (last or self._debug):
            event["exception"] = _user_traceback(exc_info)
        if event["event"] == "message_rejected" and last:
            details = ["not retried: dead-letter next"]
        elif event["event"] == "message_rejected":
            details = [
                "no DLQ: visible again"
                + (f" in {event['retry_in']:g} s" if event.get("retry_in") is not None else "")
            ]
        else:
            attempts = f" of {event[ATTEMPTS_KEY]}" if event.get(ATTEMPTS_KEY) else ""
            details = [f"attempt {event.get('attempt')}{attempts}"]
            if last:
                details.append("dead-letter next")
            elif event.get("retry_in") is not None:
                details.append(f"next try in {event['retry_in']:g} s")
        event["event"] = f"{event['event']}: {event.get('reason') or ''} ({', '.join(details)})"
        for key in _FAILURE_DETAILS:
            event.pop(key, None)


def _user_traceback(exc_info: Any) -> str:
    """A message failure's traceback without the worker's own frames (nor asyncio's): what
    is left is the handler's code and the libraries it called. (Any other event's traceback,
    a bug of the worker's, is printed whole.)"""
    import traceback

    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return ""
    shown = traceback.TracebackException(*exc_info)
    for part in _chain(shown):
        kept = [
            frame
            for frame in part.stack
            if not (
                frame.filename.startswith((_WORKER_DIR, _ASYNCIO_DIR))
                and not frame.filename.startswith(_DEMO_DIR)
            )
        ]
        part.stack = traceback.StackSummary.from_list(kept)
    return "".join(shown.format()).rstrip("\n")


def _chain(shown: Any) -> list[Any]:
    parts, seen = [], set()
    while shown is not None and id(shown) not in seen:
        seen.add(id(shown))
        parts.append(shown)
        shown = shown.__cause__ or (None if shown.__suppress_context__ else shown.__context__)
    return parts


# -- output -------------------------------------------------------------------------------
class _LineLogger:
    """Hands each rendered line to the stream: bytes (JSON for a binary stream) or text."""

    def __init__(self, out: _Tolerant) -> None:
        self._out = out

    def msg(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._out.write_line(message)
        else:
            self._out.write(message + "\n")
            self._out.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineLoggerFactory:
    def __init__(self, out: _Tolerant) -> None:
        self._logger = _LineLogger(out)

    def __call__(self, *args: Any) -> _LineLogger:
        return self._logger


MAX_PENDING = 256
"""JSON lines held for one event-loop iteration at most before they are written anyway."""


class _Tolerant:
    """A log stream whose failures (a closed pipe, a full disk) never reach the caller: a
    worker must go on handling messages, and signals, when nobody reads its log.

    For a text stream with a binary buffer underneath (``sys.stderr``), JSON lines go to the
    buffer as bytes. Lines logged on a running event loop are written together at its next
    iteration (one ``write`` for the lines of every handler that finished in this one,
    instead of a system call per line; they are never held while the loop waits): anything
    else written (text, a line from another thread) first writes what is held, so the order
    stays. ``flush_logs()`` writes what is held (the CLI calls it before ``os._exit``; an
    exit handler does at exit)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream
        buffer = getattr(stream, "buffer", None)
        self._buffer = buffer if callable(getattr(buffer, "write", None)) else None
        self._lock = threading.RLock()
        self._pending: list[bytes] = []
        self._drain_on: asyncio.AbstractEventLoop | None = None

    @property
    def binary(self) -> bool:
        return self._buffer is not None

    def write(self, text: str) -> int:
        with self._lock:
            self._drain()
            try:
                return int(self._stream.write(text))  # type: ignore[attr-defined]
            except (OSError, ValueError):
                return 0

    def write_line(self, line: bytes) -> None:
        """One JSON line (without its newline)."""
        if self._buffer is None:
            self.write(line.decode() + "\n")
            self.flush()
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if loop is None:  # another thread, or no event loop: at once, after what is held
                self._pending.append(line)
                self._drain()
                return
            self._pending.append(line)
            if len(self._pending) >= MAX_PENDING:
                self._drain()
            elif self._drain_on is not loop:
                self._drain_on = loop
                loop.call_soon(self.drain)

    def drain(self) -> None:
        """Write the JSON lines held (the event loop calls it once per iteration with lines)."""
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        self._drain_on = None
        if not self._pending:
            return
        data = b"\n".join(self._pending) + b"\n"
        self._pending.clear()
        assert self._buffer is not None
        try:
            self._buffer.write(data)
            self._buffer.flush()
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        with self._lock:
            self._drain()
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()  # type: ignore[attr-defined]

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())  # type: ignore[attr-defined]
        except (OSError, ValueError, AttributeError):
            return False


_outputs: list[_Tolerant] = []


def flush_logs() -> None:
    """Write every log line still held (before ``os._exit``; also run at exit)."""
    for out in _outputs:
        out.flush()


atexit.register(flush_logs)


def get_logger(**bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("worker", **bound)
    return logger
