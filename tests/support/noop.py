"""A handler module for tests that only need a valid configuration."""

from worker import Router

router = Router()


@router.handler("noop")
async def noop(payload: object) -> None:
    return None
