"""The route and the decoded body.

A single message's route is looked up by its type as the handler will see it (an
offloaded body's type is known only once it was fetched). A message of an unknown type,
or whose body does not decode, is rejected here, once, with the reason.
"""

from __future__ import annotations

from worker.messages.outcomes import PermanentFailure
from worker.runtime.call import Call, Next
from worker.runtime.context import QueueContext


class RouteStep:
    stage = "route"

    def __init__(self, ctx: QueueContext) -> None:
        self._route_of = ctx.route_of

    async def __call__(self, call: Call, call_next: Next) -> None:
        call.stage = self.stage
        for item in list(call.live):
            message = item.message
            route = self._route_of(message.type)
            if route is None:
                why = f"unknown message type {message.type!r}" if message.type else "message has no type"
                call.conclude(item, PermanentFailure(why))
                continue
            if len(call.items) == 1 and not call.batch:
                call.route = route  # (its type may be known only now, from the fetched body)
            elif route is not call.route:  # an offloaded body of another type than announced
                call.conclude(
                    item,
                    PermanentFailure(
                        f"message type {message.type!r} does not belong in a batch of "
                        f"{call.route.message_type if call.route else None!r}"
                    ),
                )
                continue
            try:
                item.payload = route.payload(message)
            except PermanentFailure as exc:
                call.conclude(item, exc)
        if call.live:
            await call_next(call)
