"""The message type of an S3 event notification body (``worker.messages.s3events`` has the
typed payloads). Kept apart from the models so that parsing a message imports no pydantic
model the configuration does not use."""

from __future__ import annotations

from typing import Any

S3_TEST_EVENT = "s3:TestEvent"
S3_PREFIX = "s3:"


def s3_event_type(data: Any) -> str | None:
    """The message type of a decoded S3 notification body (None: not one)."""
    if not isinstance(data, dict):
        return None
    records = data.get("Records")
    if isinstance(records, list):
        first = records[0] if records else None
        if isinstance(first, dict) and first.get("eventSource") == "aws:s3":
            name = first.get("eventName")
            if isinstance(name, str) and name:
                return name if name.startswith(S3_PREFIX) else S3_PREFIX + name
        return None
    if data.get("Event") == S3_TEST_EVENT and data.get("Service") == "Amazon S3":
        return S3_TEST_EVENT
    return None
