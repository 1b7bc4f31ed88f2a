"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router

Every name is imported on first use (PEP 562): the ``worker`` command imports this package
before anything else, and ``worker --version``, ``worker --help`` and the operator commands
must not pay for pydantic models and the router they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.messages.envelope import Message
    from worker.messages.outcomes import DependencyUnavailable, PermanentFailure, Retry
    from worker.messages.payloads import PayloadPointer
    from worker.messages.records import IdempotencyRecord
    from worker.messages.resources import Resources
    from worker.messages.routing import BatchMiddleware, CallNext, Middleware, Router, replayed
    from worker.messages.s3events import S3Event, S3EventRecord, S3TestEvent

DISTRIBUTION = "aio-sqs-worker"
"""The name this project is installed under (``pip install aio-sqs-worker``)."""

_HOMES = {
    "Message": "worker.messages.envelope",
    "DependencyUnavailable": "worker.messages.outcomes",
    "PermanentFailure": "worker.messages.outcomes",
    "Retry": "worker.messages.outcomes",
    "PayloadPointer": "worker.messages.payloads",
    "IdempotencyRecord": "worker.messages.records",
    "Resources": "worker.messages.resources",
    "BatchMiddleware": "worker.messages.routing",
    "CallNext": "worker.messages.routing",
    "Middleware": "worker.messages.routing",
    "Router": "worker.messages.routing",
    "replayed": "worker.messages.routing",
    "S3Event": "worker.messages.s3events",
    "S3EventRecord": "worker.messages.s3events",
    "S3TestEvent": "worker.messages.s3events",
}


def _version() -> str:
    """The installed distribution's version: one place, pyproject.toml, read back from the
    installed metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - imported from a tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "BatchMiddleware",
    "CallNext",
    "DependencyUnavailable",
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
    "__version__",
    "replayed",
]
