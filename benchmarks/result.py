"""A benchmark scenario's result and the tables it prints as (shared by run and report).

One ``Result`` per scenario: the median of its repetitions, with every ratio taken to the
raw loop *of the same repetition* before the median (the machine's speed drifts between
repetitions; a ratio within one repetition does not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

TUNED = {"noop-default": ["noop-8x200", "noop-16x500"], "io-default": ["io-10x500", "io-20x1000"]}
"""Each default-settings scenario and its hand-tuned variants: the report compares the
defaults with the best of them (``benchmarks.aggregate._best``)."""


@dataclass
class Result:
    scenario: str
    messages: int
    seconds: float
    """First message handled to the last delete (median)."""
    rate: float
    """Messages/s, start-up excluded: N / (last delete - first message handled)."""
    ratio: float | None = None
    """``rate`` / the raw loop's, same repetition (median)."""
    rate_with_startup: float | None = None
    """Messages/s, start-up included: N / (last delete - process start)."""
    ratio_with_startup: float | None = None
    first_message: float | None = None
    """Seconds from process start to the first message handled."""
    first_vs_raw: float | None = None
    """``first_message`` minus the raw loop's, same repetition (median)."""
    cpu_ms_per_message: float = 0.0
    """The consumer's CPU per message between the first message handled and the last delete."""
    cpu_ratio: float | None = None
    """``cpu_ms_per_message`` / the raw loop's, same repetition (median)."""
    ratio_adj: float | None = None
    """``ratio`` with each run's rate adjusted to the machine's speed (information only:
    ``benchmarks.aggregate``)."""
    ratio_with_startup_adj: float | None = None
    cpu_ratio_adj: float | None = None
    """``cpu_ratio`` with each run's CPU per message adjusted to the machine's speed
    (``benchmarks.aggregate.Run.cpu_adjusted``)."""
    startup_cpu: float | None = None
    """The consumer's CPU seconds from process start to the first message handled."""
    requests_per_message: float = 0.0
    worker_requests_per_message: float | None = None
    peak_rss_mb: float = 0.0
    duplicates: int = 0
    losses: int = 0
    repetitions: int = 1
    key: str = ""
    """Stable scenario id (``noop-default``, ``raw``...)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _f(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{format(value, spec):>{width}}"


HIDDEN = ("config", "concurrency_tried", "reps", "window", "profile", "imports")
"""``extra`` keys the table's notes leave out (the ``..._adj`` throughput ratios appear in
the targets' texts instead)."""


def render(results: list[Result], header: bool = True) -> str:
    """Ratios to the raw loop first (throughput without and with start-up, CPU per message,
    first message), then absolute numbers."""
    lines = []
    if header:
        lines.append(
            f"{'scenario':<40}{'x raw':>6}{'+start':>7}{'x cpu':>6}{'adj':>6}{'1st s':>6}{'-raw':>6}"
            f"{'msg/s':>7}{'+start':>7}{'cpu ms':>7}{'req/msg':>8}{'RSS':>5}{'dup':>4}{'lost':>5}  notes"
        )
    for r in results:
        notes = ", ".join(
            f"{k}={v}" for k, v in r.extra.items() if k not in HIDDEN and not k.endswith("_adj")
        )
        delta = None if r.first_vs_raw is None else r.first_vs_raw
        lines.append(
            f"{r.scenario:<40}{_f(r.ratio, '.2f', 6)}{_f(r.ratio_with_startup, '.2f', 7)}"
            f"{_f(r.cpu_ratio, '.2f', 6)}{_f(r.cpu_ratio_adj, '.2f', 6)}{_f(r.first_message, '.2f', 6)}"
            f"{_f(delta, '+.2f', 6)}"
            f"{r.rate:>7.0f}{_f(r.rate_with_startup, '.0f', 7)}{r.cpu_ms_per_message:>7.3f}"
            f"{r.requests_per_message:>8.3f}{r.peak_rss_mb:>5.0f}{r.duplicates:>4}{r.losses:>5}  {notes}"
        )
    return "\n".join(lines)


LEGEND = """\
x raw     throughput / the raw loop's, start-up excluded (first message handled -> last delete)
+start    the same ratio, start-up included (process start -> last delete)
x cpu     CPU per message / the raw loop's (first message handled -> last delete); adj: the
          same with each run's CPU per message divided by the proxy's in the same window
          (the machine's speed then: the proxy relays the same requests for every consumer)
1st s     seconds from process start to the first message handled; -raw: minus the raw loop's
msg/s     messages/s start-up excluded; +start: included
cpu ms    the consumer's CPU ms per message (start-up excluded); req/msg: SQS requests per
          message (proxy count); RSS: peak MB; dup/lost: messages handled twice / never
Ratios are medians of per-repetition ratios, each to the raw loop of the same repetition."""


@dataclass
class Capacity:
    """One heartbeat-capacity check: ``in_flight`` leases held ``hold`` seconds (several
    visibility timeouts) while every ChangeMessageVisibilityBatch call takes ``latency`` s."""

    latency: float
    in_flight: int
    visibility: int
    heartbeat_calls: int
    hold: float
    model_capacity: int
    """What the settings say the heartbeat keeps alive at this latency."""
    declared_capacity: int
    """The most max_in_flight the settings accept (their capacity at 1 s per call)."""
    held: int = 0
    """Messages that were in flight together at the peak."""
    extend_calls: int = 0
    overdue: int = 0
    """``lease_overdue`` events: a live lease whose visibility ran out."""
    extend_failed: int = 0
    duplicates: int = 0
    visible_max: int = 0
    """Most messages seen visible in the queue during the hold (a lapsed lease shows here)."""
    losses: int = 0

    @property
    def lapses(self) -> int:
        return self.overdue + self.duplicates + self.visible_max

    @property
    def ok(self) -> bool:
        return self.lapses == 0 and self.losses == 0 and self.held >= self.in_flight


def render_capacity(rows: list[Capacity]) -> str:
    lines = [
        f"{'s/call':>7}{'leases':>8}{'held':>6}{'model':>7}{'visib.':>7}{'calls':>6}{'hold s':>7}"
        f"{'CMVB':>6}{'overdue':>8}{'failed':>7}{'dup':>5}{'visible':>8}  verdict"
    ]
    for c in rows:
        lines.append(
            f"{c.latency:>7.2f}{c.in_flight:>8}{c.held:>6}{c.model_capacity:>7}{c.visibility:>7}"
            f"{c.heartbeat_calls:>6}{c.hold:>7.0f}{c.extend_calls:>6}{c.overdue:>8}{c.extend_failed:>7}"
            f"{c.duplicates:>5}{c.visible_max:>8}  {'0 lapses' if c.ok else 'LAPSED'}"
        )
    return "\n".join(lines)


CAPACITY_LEGEND = """\
s/call    seconds the proxy adds to every ChangeMessageVisibilityBatch call
leases    messages held at once: max_in_flight, at the fewest heartbeat_calls (calls) the
          settings accept for it at this visibility timeout (its declared capacity)
held      most messages in flight together; model: the settings' capacity at s/call
hold s    how long each handler keeps its message (several visibility timeouts)
CMVB      extension calls made; overdue: lease_overdue events; failed: extension calls or
          entries that failed; dup: messages handled twice; visible: most messages seen
          visible while all should be held. Any overdue, dup or visible is a lapse."""


def replace_section(doc: Path, heading: str, new: str, before: str | None = None) -> None:
    """Put ``new`` in ``doc`` in place of its ``## heading`` section (up to the next ``## ``);
    a page without it gets it before the ``before`` heading, else at the end. The benchmark
    runs that own one section of a page written by hand or by another run use it."""
    text = doc.read_text()
    start = text.find(f"## {heading}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + new + (text[end:] if end >= 0 else "")
    else:
        anchor = text.find(f"## {before}") if before else -1
        text = text[:anchor] + new + "\n" + text[anchor:] if anchor >= 0 else text.rstrip("\n") + "\n\n" + new
    doc.write_text(text)
