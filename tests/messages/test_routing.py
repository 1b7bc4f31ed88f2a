"""Handler registration and payload decoding."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from worker import Message, PermanentFailure, Router
from worker.messages.routing import HandlerError, Registry


class Order(BaseModel):
    order_id: str


def message(body: str) -> Message:
    return Message(message_id="m", body=body, attributes={}, type="t", receive_count=1)


def test_payload_is_decoded_by_the_first_parameter_annotation() -> None:
    router = Router()

    @router.handler("model")
    async def model(order: Order, msg: Message) -> None: ...

    @router.handler("raw")
    def raw(body: str) -> None: ...

    @router.handler("json")
    async def as_json(data: dict[str, int]) -> None: ...

    @router.handler("whole")
    async def whole(msg: Message) -> None: ...

    routes = router.routes
    m = message('{"order_id": "7"}')
    assert routes["model"].arguments(m) == (Order(order_id="7"), m)
    assert routes["raw"].arguments(m) == ('{"order_id": "7"}',)
    assert routes["json"].arguments(m) == ({"order_id": "7"},)
    assert routes["whole"].arguments(m) == (m,)
    assert routes["model"].is_async
    assert not routes["raw"].is_async


def test_bad_bodies_are_permanent_failures_without_echoing_the_body() -> None:
    router = Router()

    @router.handler("model")
    async def model(order: Order) -> None: ...

    @router.handler("json")
    async def as_json(data: object) -> None: ...

    with pytest.raises(PermanentFailure, match="body is not valid JSON"):
        router.routes["json"].arguments(message("nope"))
    with pytest.raises(PermanentFailure, match="order_id: Field required") as info:
        router.routes["model"].arguments(message('{"secret": "s3cr3t"}'))
    assert "s3cr3t" not in str(info.value)


def test_two_handlers_for_one_type_are_refused() -> None:
    router = Router()
    router.add("t", lambda payload: None)
    with pytest.raises(HandlerError, match="two handlers for message type 't'"):
        router.add("t", lambda payload: None)


def test_registry_refuses_duplicates_across_modules_and_bad_modules() -> None:
    with pytest.raises(HandlerError, match=r"two handlers for message type 'order\.placed'"):
        Registry.from_modules(["handlers.billing", "handlers.shipping"])
    with pytest.raises(HandlerError, match=r"cannot import handler module 'no\.such\.module'"):
        Registry.from_modules(["no.such.module"])
    registry = Registry.from_modules(["handlers.billing"])
    assert registry.types == ["order.cancelled", "order.placed"]
    assert registry.get("order.placed") is not None
    assert registry.get(None) is None


def test_handler_signature_is_checked() -> None:
    router = Router()
    with pytest.raises(HandlerError, match=r"takes the payload first"):
        router.add("t", lambda: None)
