"""Where every message of a chaos scenario ended up, and the table of them.

A message is accounted for when its handler returned (``succeeded``) or when it is in the
dead-letter queue after its own handler failed or rejected it at least once
(``dead_lettered``). A message in the DLQ that its handler never failed or rejected (moved
there only by receives it had no part in, e.g. as a FIFO follower of a failing message, or
received by a long poll nobody was waiting for) is ``dead_lettered_unrun``, and counts in
``lost`` as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Accounting:
    scenario: str
    sent: int
    succeeded: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicate_successes: int = 0
    explanation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    dead_lettered_unrun: int = 0
    """In the DLQ without its handler ever having failed or rejected it (included in ``lost``)."""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.dead_lettered_unrun == 0
            and self.succeeded + self.dead_lettered == self.sent
        )


def render(results: list[Accounting], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            f"{'scenario':<28}{'sent':>7}{'ok':>7}{'DLQ':>5}{'DLQ unrun':>10}{'lost':>5}{'dup':>5}  details"
        )
    for r in results:
        extra = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        lines.append(
            f"{r.scenario:<28}{r.sent:>7}{r.succeeded:>7}{r.dead_lettered:>5}{r.dead_lettered_unrun:>10}"
            f"{r.lost:>5}{r.duplicate_successes:>5}  {extra}"
        )
    return "\n".join(lines)
