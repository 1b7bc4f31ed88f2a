"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router
"""

from typing import TYPE_CHECKING, Any

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.payloads import PayloadPointer
from worker.messages.records import IdempotencyRecord
from worker.messages.resources import Resources
from worker.messages.routing import BatchMiddleware, CallNext, Middleware, Router, replayed

if TYPE_CHECKING:
    from worker.messages.s3events import S3Event, S3EventRecord, S3TestEvent

_LAZY = {"S3Event", "S3EventRecord", "S3TestEvent"}
"""Imported on first use: the S3 event models cost a worker that handles no S3 events
start-up time (their pydantic classes), so a handler module that names them pays it."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from worker.messages import s3events

        value = getattr(s3events, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'worker' has no attribute {name!r}")


__all__ = [
    "BatchMiddleware",
    "CallNext",
    "IdempotencyRecord",
    "Message",
    "Middleware",
    "PayloadPointer",
    "PermanentFailure",
    "Resources",
    "Retry",
    "Router",
    "S3Event",
    "S3EventRecord",
    "S3TestEvent",
    "replayed",
]
__version__ = "0.1.0"
