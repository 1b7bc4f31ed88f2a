"""A configured queue as the supervisor found it on the server at start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """A configured queue as found on the server at start-up."""

    key: str
    name: str
    url: str
    fifo: bool
    max_receive_count: int | None
    dead_letter_arn: str | None
    dead_letter_url: str | None = None
