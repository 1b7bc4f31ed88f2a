"""The route's dependencies' circuit breakers (``worker.runtime.breaker``).

Before the handler: a message whose route needs a dependency whose breaker is open does
not run (a half-open breaker lets one through: the probe, whose failure is the
dependency's, so it waits too and spends no attempt); it waits, leased, until the breaker lets a probe through (``DependencyUnavailable``
with the breaker's time: outcome ``waiting``, no attempt spent). After: how the call went
is each of its dependencies' breakers' news. A rejection (bad input) says nothing about a
dependency; a ``DependencyUnavailable`` the handler raises for a declared dependency opens
its breaker at once.
"""

from __future__ import annotations

import asyncio

from worker.messages.outcomes import DependencyUnavailable, PermanentFailure
from worker.runtime.breaker import Breaker, Breakers, State
from worker.runtime.call import Call, Next
from worker.runtime.context import QueueContext

PROBE_WAIT = 1.0
"""Seconds a message waits while another one probes a half-open breaker."""


RAN = frozenset({"middleware", "handler"})
"""The stages in which the user's code runs: only a call that got there says anything about
a dependency (a claim held elsewhere, an idempotent replay, a body that does not decode
tell nothing)."""


class BreakerStep:
    stage = "breaker"

    def __init__(self, breakers: Breakers) -> None:
        self._breakers = breakers

    async def __call__(self, call: Call, call_next: Next) -> None:
        call.stage = self.stage
        names = call.route.dependencies if call.route is not None else ()
        breakers: list[Breaker] = []
        probe: Breaker | None = None
        for name in names:
            breaker = self._breakers.get(name)
            half_open = breaker.state is State.HALF_OPEN
            if not breaker.allow():
                if probe is not None:
                    probe.release()
                wait = breaker.reopens_in if breaker.state is State.OPEN else PROBE_WAIT
                closed = DependencyUnavailable(name, "circuit open", retry_after=max(wait, PROBE_WAIT))
                for item in list(call.live):
                    call.conclude(item, closed)
                return
            breakers.append(breaker)
            if half_open:
                probe = breaker  # this call holds the breaker's one probe
        settled = False
        try:
            await call_next(call)
        except DependencyUnavailable as exc:
            for breaker in breakers:
                if breaker.name == exc.dependency:
                    breaker.unavailable(exc.retry_after)
                    settled = settled or breaker is probe
            raise
        except (PermanentFailure, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and call.overdue and call.stage in RAN:
                # Its deadline cancelled it: a dependency that hangs is down too.
                for breaker in breakers:
                    breaker.failed()
                settled = True
            raise
        except Exception as exc:
            if call.stage not in RAN:
                raise
            for breaker in breakers:
                breaker.failed()
            settled = True
            if probe is not None:
                # The probe found the dependency still down: the dependency's failure, not
                # the message's; it waits with the others, no attempt spent.
                raise DependencyUnavailable(
                    probe.name,
                    f"probe failed: {type(exc).__name__}: {exc}"[:300],
                    retry_after=max(probe.reopens_in, PROBE_WAIT),
                ) from exc
            raise
        else:
            if call.stage in RAN and not call.replayed:
                failures = call.value if call.batch and isinstance(call.value, dict) else {}
                all_failed = bool(failures) and len(failures) >= len(call.live)
                for breaker in breakers:
                    breaker.failed() if all_failed else breaker.succeeded()
                settled = True
        finally:
            if probe is not None and not settled:
                probe.release()  # the probe did not reach the dependency: another may


def build(ctx: QueueContext) -> BreakerStep | None:
    """The step, for a queue with a route that declares dependencies (else none: a
    ``DependencyUnavailable`` for an undeclared dependency makes its message wait, and
    opens no breaker)."""
    if ctx.breakers is None or not any(route.dependencies for route in ctx.routes):
        return None
    return BreakerStep(ctx.breakers)
