"""The sources a queue's message type can come from (``QueueSettings.types.sources``,
``worker.messages.types``): a module of its own, so that reading a message's type imports
no settings model."""

from __future__ import annotations

from typing import Literal

TypeSource = Literal["attribute", "cloudevents", "field", "s3", "eventbridge"]
TYPE_SOURCES: tuple[TypeSource, ...] = ("attribute", "cloudevents", "field", "s3", "eventbridge")
"""Every source, in the default order."""
