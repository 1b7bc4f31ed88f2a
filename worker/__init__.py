"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router
"""

from worker.messages.envelope import Message
from worker.messages.outcomes import PermanentFailure, Retry
from worker.messages.resources import Resources
from worker.messages.routing import CallNext, Middleware, Router

__all__ = ["CallNext", "Message", "Middleware", "PermanentFailure", "Resources", "Retry", "Router"]
__version__ = "0.1.0"
