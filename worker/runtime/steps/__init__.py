"""The step chain every message runs through, single or in a batch.

In order, outermost first: the deadline (``max_processing_time`` over everything after
it), the offloaded body (S3), the route and the body's decoding, the lag metric, the
circuit breakers of the route's dependencies, the rates and caps, the idempotency claim, the user's middleware, and the handler's invocation. Each step is one
module with one class; a new per-route feature (a rate limit, a concurrency cap, a circuit
breaker) is one more module here and one more entry in ``build``.
"""

from __future__ import annotations

from worker.runtime.call import Step
from worker.runtime.context import QueueContext
from worker.runtime.steps import breaker, limits
from worker.runtime.steps.claim import ClaimStep
from worker.runtime.steps.deadline import DeadlineStep
from worker.runtime.steps.invoke import InvokeStep
from worker.runtime.steps.lag import LagStep
from worker.runtime.steps.middleware import MiddlewareStep
from worker.runtime.steps.payload import PayloadStep
from worker.runtime.steps.route import RouteStep


def build(ctx: QueueContext) -> list[Step]:
    """The chain for one queue's context (steps with nothing to do are left out)."""
    steps: list[Step] = [DeadlineStep(ctx), PayloadStep(ctx), RouteStep(ctx), LagStep(ctx)]
    guard = breaker.build(ctx)
    if guard is not None:  # before the claim: a message kept waiting claims nothing
        steps.append(guard)
    limiter = limits.build(ctx)
    if limiter is not None:  # after the breaker: a message it holds takes no token
        steps.append(limiter)
        ctx.start_rate = limiter.bucket
    if ctx.idempotency is not None:
        steps.append(ClaimStep(ctx.idempotency))
    if ctx.registry.middlewares:
        steps.append(MiddlewareStep(ctx.registry.middlewares))
    steps.append(InvokeStep(ctx))
    return steps
