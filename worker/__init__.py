"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router
"""

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.routing import Router

__all__ = ["Message", "PermanentFailure", "Retry", "Router"]
__version__ = "0.1.0"
