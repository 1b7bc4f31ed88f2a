"""Where every message of a chaos scenario ended up, and the table of them."""

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

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.succeeded + self.dead_lettered == self.sent


def render(results: list[Accounting], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(f"{'scenario':<28}{'sent':>7}{'ok':>7}{'DLQ':>5}{'lost':>5}{'dup':>5}  details")
    for r in results:
        extra = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        lines.append(
            f"{r.scenario:<28}{r.sent:>7}{r.succeeded:>7}{r.dead_lettered:>5}{r.lost:>5}{r.duplicate_successes:>5}  {extra}"
        )
    return "\n".join(lines)
