"""One run of the step chain: the messages it carries and what each came to.

A ``Call`` is what every step sees: a route (``None`` until the route step found it for a
message whose type is only known once its body was fetched), its ``Item`` per message, and
the run's shared facts (when it started, whether its deadline passed, which step runs).
A single-message handler's run is a call of one item; a batch handler's, a call of many:
the same steps serve both (``worker.runtime.steps``).

A step that settles an item (a body that does not decode, an object that is gone) gives
it its outcome with ``Call.conclude``; the item leaves ``live`` and no later step sees it.
What the handler's result or exception means for the items still live is the processor's
business, after the chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from worker.messages.envelope import Message
from worker.messages.routing import Route
from worker.runtime.lease import Lease
from worker.runtime.rules import Decision, Outcome

if TYPE_CHECKING:
    from worker.runtime.idempotency import Claim


@dataclass(slots=True, repr=False)
class Item:
    lease: Lease
    message: Message
    """As the handler sees it: its body once fetched, its receive count this attempt's."""
    attempt: int
    outcome: Outcome | None = None
    decision: Decision | None = None
    """What happens to the message now (``worker.runtime.rules.decide``)."""
    payload: Any = None
    """The decoded body (the route step)."""
    claim: Claim | None = None
    """Its idempotency claim (the claim step; single-message idempotent routes only)."""

    def __repr__(self) -> str:  # short: tracebacks with locals print it once per frame
        return f"<Item {self.message.message_id} attempt={self.attempt} outcome={self.outcome}>"


class Conclude(Protocol):
    def __call__(self, item: Item, exc: BaseException | None, call: Call) -> Outcome: ...


@dataclass(slots=True, repr=False)
class Call:
    route: Route | None
    items: list[Item]
    started: float
    conclude_with: Conclude
    """The processor's one rule from an exception (or None: success) to an item's outcome."""
    live: list[Item] = field(default_factory=list)
    stage: str = "start"
    """The step running now (``Step.stage``): a deadline that passes during a dependency's
    step is that dependency's fault, not the handler's."""
    in_thread: bool = False
    """A plain-function handler's thread is running: the deadline does not cancel it."""
    overdue: bool = False
    """Its deadline passed and cancelled it (``steps.deadline``)."""
    task: asyncio.Task[Any] | None = None
    value: Any = None
    """What the handler (or an idempotent replay) returned: for a batch, the failures."""
    replayed: bool = False
    traced: bool = False
    """A failure of this call was logged with its traceback: the other messages it failed
    for are logged without it (one traceback per call, not one per message)."""

    def __post_init__(self) -> None:
        self.live = list(self.items)

    def __repr__(self) -> str:
        route = self.route.message_type if self.route is not None else None
        return f"<Call {route!r} {len(self.live)}/{len(self.items)} live, stage={self.stage}>"

    @property
    def batch(self) -> bool:
        return self.route is not None and self.route.batch is not None

    def conclude(self, item: Item, exc: BaseException | None = None) -> None:
        """Give ``item`` its outcome now (``exc``: why it did not succeed); it leaves ``live``."""
        item.outcome = self.conclude_with(item, exc, self)
        self.live.remove(item)


Next = Callable[[Call], Awaitable[None]]


class Step(Protocol):
    stage: str

    async def __call__(self, call: Call, call_next: Next) -> None: ...


class Overdue(TimeoutError):
    """The call ran past ``max_processing_time`` and was cancelled (``steps.deadline``)."""


class Abandoned(BaseException):
    """A plain-function handler's thread still runs at the shutdown's final deadline."""
