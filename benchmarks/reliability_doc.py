"""docs/reliability.md from a fault-injection run. What follows ``KEEP`` in the page
(hand-written: the run's duplicates explained, mutation testing) is kept as it is."""

from __future__ import annotations

import argparse
import subprocess
import time

from benchmarks.accounting import Accounting, render
from benchmarks.result import ROOT

SCENARIOS = """\
| scenario | what is done | expected |
|---|---|---|
| handler-failures-5pct | 5% of handler calls raise at random (retry backoff 0 s, maxReceiveCount 3) | every message handled once or in the DLQ; no duplicate successes |
| sigkill-x2 | the worker is killed with SIGKILL twice mid-run and restarted | nothing lost; duplicates only for messages handled but not yet deleted at a kill |
| sigterm-x5 | SIGTERM under load five times, restarting each time | no loss, no duplicate of a finished message, each exit within the grace period, nothing left in flight after exit |
| outage-blackhole | the proxy holds every request for the outage, then drops it | no crash, a bounded request rate, /readyz 503 during, ready again after, all accounted |
| outage-refused | every connection is reset at once for the outage (as when LocalStack is down) | as above: backoff, not a spin |
| api-errors-20pct | 20% of calls answered ThrottlingException (400) or InternalError (500); 20% of DeleteMessageBatch entries failed inside the batch | slower, nothing lost, failed delete entries retried |
| hanging-handler | three handlers that never return, among normal work | cancelled at max_processing_time, retried, the rest goes on |
| fifo-2-workers | two worker processes on one FIFO queue, 50 groups, 5% failures | per-group order holds across processes |
| fifo-failures | one worker on a FIFO queue, 20 groups x 50, 5% handler failures (backoff 0 s, maxReceiveCount 3) | only messages whose own handler failed reach the DLQ; successes in group order |
| send-after-stop | a worker on an empty queue (20 s long polls) stops; 0.5 s later 10 messages are sent and a second worker starts | handled within seconds, not after the visibility timeout of a long poll the first worker abandoned |
| permanent-fifo | a FIFO queue where 5% of the messages raise PermanentFailure | exactly the rejected messages in the DLQ; no follower dead-lettered; the rest in order |
| sigkill-x2+idempotency | sigkill-x2 with an idempotent handler and the DynamoDB store (moto's server) | duplicate effects 0; SQS still delivers again, those deliveries are settled without running |
| outage-*+idempotency | the two outages with the idempotent handler and the store | as sigkill: redeliveries replayed, effects once |
| defaults-auto-faults-x2 | the worker's own concurrency defaults (pollers and max_in_flight `auto`: the adaptive limiter) with 5% handler failures, 10% of calls answered with errors, 10% of delete entries failed and two SIGKILLs | as the scenarios above together: nothing lost or dead-lettered unrun; duplicates only from the kills, at most the auto limit's bound per kill |
| fifo-batch-failures | a FIFO batch handler, 20 groups x 50; 10% of members fail and 3% are rejected, each on its own (backoff 0 s, maxReceiveCount 3) | no member in the DLQ for another's failures; a member that succeeded is never run again (dup 0); rejected ones in the DLQ |
| store-outage-refused | the idempotency store (moto's DynamoDB behind the fault proxy) refuses every connection for the outage; SQS does not (maxReceiveCount 3) | claims wait leased (`message_waiting`) without spending attempts: nothing in the DLQ, effects once |
| sigterm-plain-batches | plain-function batch handlers whose threads run 2 s past the grace, SIGTERM twice, restarting each time | threads past the grace keep their leases and their results count: nothing released while a thread runs, no loss, no duplicate |
| soak | steady load with 1% failures for 30 minutes | RSS at the end within 10% of after warm-up; no growth in tasks or open files |
"""


KEEP = "<!-- Hand-written from here on: benchmarks/reliability_doc.py keeps it when it rewrites the page. -->"
LEGACY_KEEP = "## Duplicates and dead letters, explained"


def kept(page: str) -> str:
    """The hand-written tail of the page (from ``KEEP``; from the first hand-written heading in
    a page written before the marker), or ""."""
    for marker in (KEEP, LEGACY_KEEP):
        at = page.find(marker)
        if at >= 0:
            tail = page[at:]
            return tail if marker == KEEP else f"{KEEP}\n\n{tail}"
    return ""


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def write(results: list[Accounting], args: argparse.Namespace, started: float) -> None:
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    size = "--quick (CI sizes)" if args.quick else "full sizes"
    text = (
        f"""# Reliability under faults

Every scenario runs real worker processes behind a fault proxy (`benchmarks/proxy.py`, aiohttp)
against LocalStack and ends with an accounting: each message sent is either handled
successfully (recorded and flushed by the handler before it returns, so even SIGKILL cannot
lose the record) or in the dead-letter queue after its own handler failed or rejected it.
A message in the DLQ that its handler never failed is `DLQ unrun` and counts as lost.
`lost` must be 0; `dup` counts messages handled successfully more than once, explained per
scenario.

    make chaos                                        # python -m benchmarks.chaos --docs ({size} here)
    python -m benchmarks.chaos --quick                     # the sizes CI runs (tests/benchmarks/test_reliability.py)
    python -m benchmarks.chaos --scenarios soak --soak-minutes 30

{SCENARIOS}
## Last run

{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))}, commit {_commit()}, {size}, scenarios: {args.scenarios}

```
{render(results)}
```

"""
        + "\n".join(f"- **{r.scenario}**: {r.explanation}" for r in results)
        + "\n"
    )
    page = docs / "reliability.md"
    tail = kept(page.read_text()) if page.exists() else ""
    page.write_text(text + ("\n" + tail if tail else ""))
