"""Registers a type that handlers.billing registers too: start-up must refuse it."""

from worker import Router

router = Router()


@router.handler("order.placed")
async def also_placed(payload: object) -> None:
    return None
