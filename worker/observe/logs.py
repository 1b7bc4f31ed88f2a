"""structlog set-up: JSON lines off a TTY, a readable console on one.

Event names are fixed (see ``worker.events``); per-message context (queue, message_id,
type, receive_count) is bound by the processor, so every line about a message carries it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Literal

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: object | None = None,
) -> None:
    out = _Tolerant(stream if stream is not None else sys.stderr)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor]
    if use_console:
        renderer = [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    else:
        renderer = [
            # Tracebacks without local variables: locals would carry message bodies.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.EventRenamer("event"),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
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


class _Tolerant:
    """A log stream whose failures (a closed pipe, a full disk) never reach the caller: a
    worker must go on handling messages, and signals, when nobody reads its log."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()  # type: ignore[attr-defined]

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())  # type: ignore[attr-defined]
        except (OSError, ValueError, AttributeError):
            return False


def get_logger(**bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("worker", **bound)
    return logger
