"""One benchmark scenario's result and the table it prints as (shared by run and report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    scenario: str
    messages: int
    seconds: float
    rate: float
    ratio: float | None = None
    requests_per_message: float = 0.0
    worker_requests_per_message: float | None = None
    cpu_per_1000: float = 0.0
    peak_rss_mb: float = 0.0
    duplicates: int = 0
    losses: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def render(results: list[Result], header: bool = True) -> str:
    lines = []
    if header:
        lines.append(
            f"{'scenario':<44}{'msg/s':>9}{'x raw':>7}{'req/msg':>9}{'cpu s/1k':>9}{'RSS MB':>8}{'dup':>5}{'lost':>5}  notes"
        )
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        notes = ", ".join(f"{k}={v}" for k, v in r.extra.items() if k not in ("config", "concurrency_tried"))
        lines.append(
            f"{r.scenario:<44}{r.rate:>9.0f}{ratio:>7}{r.requests_per_message:>9.3f}{r.cpu_per_1000:>9.3f}"
            f"{r.peak_rss_mb:>8.1f}{r.duplicates:>5}{r.losses:>5}  {notes}"
        )
    return "\n".join(lines)
