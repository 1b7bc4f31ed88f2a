"""An asyncio worker service for AWS SQS and SNS.

Handler modules import what they need from here::

    from worker import Message, PermanentFailure, Retry, Router
"""

from worker.envelope import Message
from worker.outcomes import PermanentFailure, Retry
from worker.routing import Router

__all__ = ["Message", "PermanentFailure", "Retry", "Router"]
__version__ = "0.1.0"
