"""The log pipeline: structlog and the standard library's logging come out as one stream,
JSON off a TTY, with the message's context bound."""

from __future__ import annotations

import io
import json
import logging

import structlog

from worker import Message, Router
from worker.observe.logs import configure_logging
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
