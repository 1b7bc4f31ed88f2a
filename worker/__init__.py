"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router
"""

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.payloads import PayloadPointer
from worker.messages.records import IdempotencyRecord
from worker.messages.resources import Resources
from worker.messages.routing import CallNext, Middleware, Router, replayed
from worker.messages.s3events import S3Event, S3EventRecord, S3TestEvent

__all__ = [
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
