"""The log pipeline: structlog and the standard library's logging come out as one stream,
JSON off a TTY, with the message's context bound."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from typing import Literal

import pytest
import structlog

from worker import Message, Router
from worker.observe import logs
from worker.observe.logs import _Tolerant, configure_logging, flush_logs, get_logger
from worker.testing import HandlerKit, sqs_message


async def test_stdlib_logging_in_a_handler_comes_out_as_json_with_the_message_context() -> None:
    router = Router()

    @router.handler("greet")
    async def greet(payload: dict[str, str], message: Message) -> None:
        logging.getLogger("myservice.greet").info("hello %s", payload["name"])
        logging.getLogger("myservice.greet").debug("not at info level")

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        async with HandlerKit(router) as kit:
            result = await kit.run(sqs_message({"name": "Ada"}, type="greet", message_id="m-42"))
    finally:
        configure_logging("info", "console")
        structlog.contextvars.clear_contextvars()
    assert result.outcome == "succeeded"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [hello] = [line for line in lines if line.get("event") == "hello Ada"]
    assert hello["level"] == "info"
    assert hello["logger"] == "myservice.greet"
    assert hello["message_id"] == "m-42"
    assert hello["type"] == "greet"
    assert hello["queue"] == "test"
    assert not any(line.get("event") == "not at info level" for line in lines)


def test_warnings_from_libraries_are_json_too() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        logging.getLogger("some.library").warning("careful")
    finally:
        configure_logging("info", "console")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (line["event"], line["level"]) == ("careful", "warning")


def _json_lines(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw.decode().splitlines()]


def _binary_stream() -> tuple[io.BytesIO, io.TextIOWrapper]:
    """A text stream over bytes, as sys.stderr is: JSON lines go to its buffer."""
    raw = io.BytesIO()
    return raw, io.TextIOWrapper(raw, encoding="utf-8", line_buffering=True)


def test_json_lines_have_the_iso_utc_timestamp_and_event_last(monkeypatch: pytest.MonkeyPatch) -> None:
    raw, stream = _binary_stream()
    configure_logging("info", "json", stream=stream)
    try:
        log = structlog.get_logger("worker")
        log.info("first", n=1)
        monkeypatch.setattr(time, "time_ns", lambda: 1_795_000_000 * 10**9)  # a whole second
        log.info("second")
        monkeypatch.undo()
        flush_logs()
    finally:
        configure_logging("info", "console")
    first, second = _json_lines(raw.getvalue())
    assert list(first) == ["n", "level", "timestamp", "event"]
    assert first["event"] == "first"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(first["timestamp"]))
    # A whole second keeps its six digits: lines sort by their text (structlog's
    # TimeStamper writes none there, and "...40Z" sorted after "...40.5Z").
    whole = datetime.datetime.fromtimestamp(1_795_000_000, tz=datetime.UTC)
    assert second["timestamp"] == whole.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert second["timestamp"] == "2026-11-18T11:06:40.000000Z"
    assert sorted([second["timestamp"], "2026-11-18T11:06:40.000001Z"])[0] == second["timestamp"]


def test_every_line_gets_the_bound_context_the_span_and_its_level_and_the_call_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    tenant = f"tenant_{uuid.uuid4().hex[:8]}"  # a new context variable: the registry grows
    monkeypatch.setattr(logs, "trace_ids", lambda: ("t" * 32, "s" * 16))
    monkeypatch.setattr(time, "time_ns", lambda: 1_795_000_001 * 10**9 + 123_456_789)
    try:
        log = structlog.get_logger("worker")
        with structlog.contextvars.bound_contextvars(**{tenant: "acme", "user": "bound"}):
            log.info("bound", user="given")
            log.warn("warned")
            try:
                raise ZeroDivisionError
            except ZeroDivisionError:
                log.exception("failed")
        log.info("unbound")
        monkeypatch.setattr(logs, "trace_ids", lambda: None)
        log.info("outside a span")
    finally:
        monkeypatch.undo()
        configure_logging("info", "console")
    lines = {line["event"]: line for line in (json.loads(x) for x in out.getvalue().splitlines())}
    bound = lines["bound"]
    assert (bound[tenant], bound["user"]) == ("acme", "given")  # the call's key wins
    assert (bound["trace_id"], bound["span_id"]) == ("t" * 32, "s" * 16)
    assert (bound["level"], bound["timestamp"]) == ("info", "2026-11-18T11:06:41.123456Z")
    assert (lines["warned"]["level"], lines["warned"][tenant]) == ("warning", "acme")
    assert lines["failed"]["level"] == "error"
    assert tenant not in lines["unbound"]
    assert "user" not in lines["unbound"]
    assert "trace_id" not in lines["outside a span"]
    assert "span_id" not in lines["outside a span"]


def test_values_json_cannot_hold_are_rendered_as_structlog_would() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "<custom>"

    class Own:
        def __structlog__(self) -> str:
            return "own"

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        structlog.get_logger("worker").info("odd", obj=Custom(), own=Own(), big=2**70, keys={1: "a"})
    finally:
        configure_logging("info", "console")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (line["obj"], line["own"], line["big"], line["keys"]) == ("<custom>", "own", 2**70, {"1": "a"})


def test_json_lines_are_ascii_so_no_unicode_line_separator_splits_one() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        structlog.get_logger("worker").info("odd", type="a\x85b\u2028c", name="café")
    finally:
        configure_logging("info", "console")
    text = out.getvalue()
    assert text.isascii()
    [line] = [json.loads(x) for x in text.splitlines()]  # str.splitlines splits at U+0085/U+2028
    assert (line["type"], line["name"]) == ("a\x85b\u2028c", "café")


async def test_lines_logged_on_the_event_loop_are_written_together_in_order() -> None:
    raw, stream = _binary_stream()
    configure_logging("info", "json", stream=stream)
    try:
        log = structlog.get_logger("worker")
        log.info("a")
        log.info("b")
        assert raw.getvalue() == b""  # held until the loop's next iteration
        await asyncio.sleep(0)
        assert [line["event"] for line in _json_lines(raw.getvalue())] == ["a", "b"]
        log.info("c")
        logging.getLogger("lib").warning("d")  # text through the stream: what is held goes first
        log.info("e")
        await asyncio.to_thread(log.info, "f")  # another thread: at once, after what is held
        log.info("g")
        flush_logs()
    finally:
        configure_logging("info", "console")
    assert [line["event"] for line in _json_lines(raw.getvalue())] == list("abcdefg")


def test_without_an_event_loop_a_line_is_written_at_once() -> None:
    raw, stream = _binary_stream()
    configure_logging("info", "json", stream=stream)
    try:
        structlog.get_logger("worker").info("now")
        assert [line["event"] for line in _json_lines(raw.getvalue())] == ["now"]
    finally:
        configure_logging("info", "console")


def test_structlog_is_imported_without_rich_and_rich_still_works() -> None:
    code = (
        "import sys, worker.observe.logs, structlog.dev; "
        "print('rich' in sys.modules, structlog.dev.rich is None); "
        "import rich.console; print(rich.console.Console is not None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "True"]


class _Broken:
    def write(self, text: str) -> int:
        raise RuntimeError("boom")  # raised under a worker frame (_Tolerant.write)


def _failure() -> RuntimeError:
    try:
        _Tolerant(_Broken()).write("x")
    except RuntimeError as exc:
        return exc
    raise AssertionError("no failure")


def _log_three_attempts(level: str, fmt: Literal["console", "json"]) -> str:
    out = io.StringIO()
    configure_logging(level, fmt, stream=out)
    log = get_logger()
    exc = _failure()
    common = {"queue": "billing", "group_id": None, "reason": "RuntimeError: boom", "exc_info": exc}
    log.warning("message_failed", attempt=1, attempts_max=3, retry_in=10, dead_letter_next=False, **common)
    log.info("message_retry_scheduled", queue="billing", retry_in=10, dead_letter_next=False)
    log.warning("message_failed", attempt=2, attempts_max=3, retry_in=60, dead_letter_next=False, **common)
    log.warning("message_failed", attempt=3, attempts_max=3, retry_in=None, dead_letter_next=True, **common)
    log.warning("message_rejected", attempt=1, reason="bad order", retry_in=None, dead_letter_next=True)
    flush_logs()
    return out.getvalue()


def test_on_a_terminal_a_retried_failure_is_one_line_and_the_last_shows_the_users_traceback() -> None:
    text = _log_three_attempts("info", "console")
    lines = text.splitlines()
    assert "message_failed: RuntimeError: boom (attempt 1 of 3, next try in 10 s) queue=billing" in lines[0]
    assert "message_failed: RuntimeError: boom (attempt 2 of 3, next try in 60 s)" in lines[1]
    assert "message_failed: RuntimeError: boom (attempt 3 of 3, dead-letter next)" in lines[2]
    assert "message_rejected: bad order (not retried: dead-letter next)" in lines[-1]
    assert "message_retry_scheduled" not in text  # the failure line said it
    assert "group_id" not in text  # no field without a value
    assert text.count("Traceback") == 1  # once, on the last failure before the DLQ
    assert "test_logs.py" in text  # the caller's frames
    assert "_failure" in text
    assert "worker/observe/logs.py" not in text  # not the worker's own
    assert "RuntimeError: boom" in lines[-2]


def test_on_a_terminal_at_debug_every_failure_keeps_its_traceback() -> None:
    text = _log_three_attempts("debug", "console")
    assert text.count("Traceback") == 3
    assert "message_retry_scheduled" in text


def test_json_lines_of_a_failure_keep_their_fields_and_every_traceback() -> None:
    lines = [json.loads(line) for line in _log_three_attempts("info", "json").splitlines()]
    assert [line["event"] for line in lines] == [
        "message_failed",
        "message_retry_scheduled",
        "message_failed",
        "message_failed",
        "message_rejected",
    ]
    first = lines[0]
    assert {k: first[k] for k in ("attempt", "retry_in", "dead_letter_next", "reason")} == {
        "attempt": 1,
        "retry_in": 10,
        "dead_letter_next": False,
        "reason": "RuntimeError: boom",
    }
    assert "attempts_max" not in first  # the console's alone
    assert first["group_id"] is None
    assert all("exception" in line for line in lines[:4] if line["event"] == "message_failed")


def test_a_worker_bug_keeps_its_whole_traceback_and_a_rejection_without_a_dlq_says_so() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    log = get_logger()
    log.error("consumer_error", exc_info=_failure())
    log.warning("message_rejected", attempt=1, reason="bad order", retry_in=30, dead_letter_next=False)
    flush_logs()
    text = out.getvalue()
    assert "worker/observe/logs.py" in text  # the worker's own frames: it is the worker's bug
    assert "message_rejected: bad order (no DLQ: visible again in 30 s)" in text
