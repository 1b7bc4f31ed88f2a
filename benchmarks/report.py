"""docs/benchmarks.md and docs/benchmarks.png from a benchmark run.

python -m benchmarks.report benchmarks/results.json      # the docs again from a run's JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.commands import section as commands_section
from benchmarks.result import CAPACITY_LEGEND, LEGEND, ROOT, Capacity, Result, render, render_capacity
from benchmarks.targets import evaluate, render_targets

NOTES = """\
## How it is measured

- Every consumer is its own process, started by the benchmark: the raw loop
  (`benchmarks/raw.py`: C tasks, each receive ten / handle / DeleteMessageBatch) or the worker
  through its console script (`worker run --config ...`, info-level JSON logs, so the
  per-message `message_succeeded` line is written). Each run gets a fresh queue with N
  messages loaded before the process starts, and a counting proxy in front of LocalStack.
- **Start-up included** is process start to the delete that completes N; **start-up
  excluded** is the first message handled (recorded by the handler) to that delete.
  **CPU per message** is the consumer's CPU over the same excluded window (read from
  /proc); the CPU it spent before its first message is its start-up CPU.
- **The same workload**: besides its no-op on a standard queue, the raw loop runs each
  workload a consumer cannot make cheaper: 50 ms of asyncio sleep per message, a FIFO
  queue with 100 groups, and 20 ms of blocking `time.sleep` in a pool of 32 threads (the
  worker's `thread_pool_size`). The FIFO and blocking targets are judged against the raw
  loop on the same workload (`x_raw_fifo`, `x_raw_block`), with the ratio to the no-op
  shown beside it: what the raw loop itself loses there is the server's or the handler's
  bound, not the consumer's.
- **The server's pauses**: LocalStack's heap grows through a run (3.2 million objects
  after two minutes of benchmark), and each full garbage collection walks all of it:
  pauses of 0.1 s growing to 1.5 s, one every 15-25 s (2026-11-24, measured with a
  `gc.callbacks` probe in the server). About one 3-second run in five lost up to half its
  time to one: the outliers of earlier runs (a no-op run with 1.3 s without a message; a
  latency pair with a p99 of 4.8 s). The LocalStack the bench starts loads
  `benchmarks/server_site/sitecustomize.py`, which freezes its heap every second (`gc.freeze`),
  so a collection walks only what is new; the run's header says how many pauses of 50 ms
  or more were left. The same slice of the benchmark had 11 full collections of 0.1-1.5 s
  without it and none over 50 ms with it.
- **LocalStack's own metrics**: for every SQS send, receive and delete, LocalStack
  publishes a CloudWatch metric to itself (a botocore client, an HTTP request, its
  CloudWatch provider and a metrics table that grows through the run): a sixth of its
  samples in a py-spy profile of the server under the raw loop (2026-11-24). Real SQS does
  that off the consumer's path, so the LocalStack the bench starts runs with
  `SQS_DISABLE_CLOUDWATCH_METRICS=1` (`python -m benchmarks.compare` and `make chaos` keep
  LocalStack's default). One before/after comparison, not interleaved: the raw loop went
  from about 1,900 to 2,600-3,000 messages/s. It speeds up the raw loop the ratios are
  divided by too, so ratios from runs before and after it are not comparable. The header
  says whether they were off.
- **The server's cost per message is not fixed**: it falls as more requests are in flight
  at once (its event loop and thread pool amortise each turn over more of them). The raw
  loop with 4, 16 and 32 receive loops against one LocalStack (pinned to its own core, 3
  interleaved repetitions of 8,000 messages, 2026-11-24): 0.78-0.89, 0.43-0.61 and
  0.37-0.45 server CPU ms per message, throughput 1,111-1,255, 1,652-2,257 and 2,184-2,674
  messages/s. A consumer that keeps fewer requests in flight (shown for the raw loop)
  costs the server more per message.
- The repeated scenarios run interleaved: each repetition runs every scenario once, each
  raw loop before the scenarios compared with it, and every other repetition in reverse
  order (the raw loop after them), so that the machine's drift during a repetition does
  not always count against the same side. A ratio is taken within a repetition, then the
  median over repetitions is reported; absolute numbers are medians too.
- **CPU per message adjusted to the machine** (`adj`, the CPU target's measure): on these
  shared cloud cores the CPU the same work takes moves by up to half between runs seconds
  apart, for every process at once. One raw loop, two repetitions of one run (2026-11-24
  00:15): 0.249 and 0.365 CPU ms per message; its proxy 0.122 and 0.188; LocalStack 0.560
  and 0.868; and a probe process timing the same piece of Python work every 50 ms, 0.454
  and 0.664 ms. The proxy relays the same requests for every consumer (0.20 per message),
  so its CPU per message in a run's window is what the machine charged for a message's
  requests right then. Divided by it, a configuration's CPU per message varies over its
  repetitions by 0.5-6% (coefficient of variation) instead of 3-21% (three full runs of
  2026-11-23/24 and a 4-repetition one; each run's own figures are under its table). LocalStack would be the other gauge, but
  the worker's requests cost it more than the raw loop's (the worker asks for five system
  attributes and every message attribute, which the server serializes): by LocalStack's
  CPU the worker's no-op ratios come out 0.98-1.04x, by the proxy's 1.04-1.09x in the same
  two runs; the stricter gauge is the one used. Throughput ratios adjusted the same way
  (rates multiplied by the gauge) stand beside the throughput verdicts as information
  only; the verdicts keep the plain ratios. A rate follows the machine only while the run
  is bound by CPU somewhere, and a run bound by its own waits does not (the raw loop's
  50 ms handler run of 2026-11-23 22:12: 1,079-1,090 msg/s while its proxy's CPU per
  message moved by 10%), which no gauge at hand tells apart.
- **Where the CPU went**: /proc samples every 50 ms while a run lasts: the machine's busy
  share and the CPU per message of the consumer, the server (LocalStack) and the proxy. All
  three share the machine's cores: when it is saturated, CPU one of them spends is CPU the
  others lack, and the server usually needs the most. **The server's core** is the share of
  one core LocalStack used: it answers from one Python process, which one core bounds
  whatever the machine has left (measured on this machine, 2026-11-23: raw loops of 4, 16
  and 64 tasks on a standard queue got 937, 1,192 and 1,335 msg/s with LocalStack at 99%,
  97% and 93% of a core while the machine was 67% busy). From 85% on, a miss names the
  server as the run's bound: each message's share of it is its server CPU per message.
- The start-up pairs run the raw loop and the worker with default settings alternately on
  a small queue, every other pair the worker first; the target uses the median of the
  per-pair differences.
- **Latency**: messages sent at a steady 200/s to a consumer already long-polling, each
  with its send time in the body; latency is send to handler. The raw loop (two loops of
  20 s polls, as the worker's defaults poll at that rate; it deletes each batch before its
  next receive) and the worker with default settings run alternately, 10 s each, three
  pairs; the target uses the medians of the per-pair differences of p50 and p99. LocalStack
  itself sets most of it: the raw loop's p50 moved between 32 and 230 ms, its p99 between
  120 and 990 ms across the runs of 2026-11-24.
- **Heartbeat capacity**: the settings accept `max_in_flight` only up to what the heartbeat
  keeps alive at 1 s per ChangeMessageVisibilityBatch call (10 x heartbeat_calls x
  interval, interval = visibility / 3). Each row holds that many messages (the fewest
  heartbeat_calls that accept them, a short visibility timeout) in handlers for several
  visibility timeouts while the proxy delays every ChangeMessageVisibilityBatch call; a
  lapse is a `lease_overdue` event, a message handled twice, or a message visible in the
  queue while all of them should be held. `model` is the settings' own capacity at that
  latency.
- `raw-fifo-attrs` is the raw loop on the FIFO queue asking for what the worker's receive
  asks for (all message attributes, the system attributes it reads, a visibility timeout,
  a receive attempt id): what those attributes cost the server and botocore, beside the
  FIFO target (the worker needs them: the message type routes, the receive count decides
  the retry or the DLQ, the group and deduplication ids keep FIFO order and moves).
- Throughput targets are judged on the plain ratios. The same ratios adjusted to the
  machine are shown beside them as information only: a rate times the proxy's CPU per
  message is the proxy's share of a core in that window, and the proxy's (like the server's)
  CPU per request falls as the load on it rises, so the adjusted ratio is not independent of
  the rates it would judge. The defaults are compared with the best hand-tuned setting (the
  one with the highest median over the repetitions) in each repetition.
- Profiles (`--profile missed`): one more run of each scenario that missed its target,
  with a cProfile of the worker's event-loop thread from the first message to the exit
  (the wall time waiting in the selector is time the worker waited for the network), or
  `python -X importtime` for start-up. With a worker profile, the raw loop is profiled
  too and the own time per message is split by package side by side (the worker's own
  code, the log line's libraries, botocore, aiohttp, the event loop): what the worker adds
  over the raw loop, and where it spends less. Profiling slows the process (about 3x):
  only the profiles of those runs are reported, not their numbers.
- These machines are noisy and LocalStack shares the cores with the consumer and the
  proxy: read the ratios first, absolute numbers second.
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load(data: dict[str, Any]) -> tuple[list[Result], list[Capacity]]:
    return [Result(**r) for r in data.get("results", [])], [Capacity(**c) for c in data.get("capacity", [])]


def chart(results: list[Result], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the bench dependency group: `uv run --group bench`
        print(f"matplotlib is not installed: {path} not written")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.ratio_with_startup is not None or r.cpu_ratio is not None][::-1]
    if not shown:
        return
    names = [r.scenario for r in shown]
    y = list(range(len(shown)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.42 * len(shown) + 1.8), sharey=True)
    h = 0.38
    incl = [r.ratio_with_startup or 0 for r in shown]
    excl = [r.ratio or 0 for r in shown]
    left.barh([v + h / 2 for v in y], excl, height=h, color="#9bbce8", label="start-up excluded")
    left.barh([v - h / 2 for v in y], incl, height=h, color="#3b7dd8", label="start-up included")
    for v, a, b in zip(y, excl, incl, strict=True):
        left.text(a + 0.01, v + h / 2, f"{a:.2f}", va="center", fontsize=7)
        left.text(b + 0.01, v - h / 2, f"{b:.2f}", va="center", fontsize=7)
    left.axvline(0.9, color="#c33", linestyle="--", linewidth=1, label="0.9x")
    left.set_yticks(y, names, fontsize=8)
    left.set_xlabel("throughput / the raw loop's (same repetition)")
    left.legend(loc="lower right", fontsize=7)
    cpu = [(r.cpu_ratio_adj if r.cpu_ratio_adj is not None else r.cpu_ratio) or 0 for r in shown]
    right.barh(y, cpu, color=["#888" if r.key.startswith("raw") else "#d8873b" for r in shown])
    for v, c in zip(y, cpu, strict=True):
        right.text(c + 0.01, v, f"{c:.2f}", va="center", fontsize=7)
    right.axvline(1.15, color="#c33", linestyle="--", linewidth=1, label="1.15x")
    right.set_xlabel("CPU per message / the raw loop's (adjusted to the machine)")
    right.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _repeated_keys(data: dict[str, Any]) -> set[str]:
    """The keys of the run's repeated scenarios (the ones a ratio is taken per repetition)."""
    from benchmarks.harness import repeated

    return {sc.key for sc in repeated(int(data.get("args", {}).get("raw_concurrency", 16)))}


def server_gc(data: dict[str, Any]) -> str:
    """What the run did about the server's garbage collection, and what was left of it."""
    if "server_gc" not in data:
        return "The server's garbage collection: not recorded (a run from before 2026-11-24 06:00)."
    gc = data["server_gc"]
    if not gc:
        return "The server's garbage collection was left as it was (a server given by `--endpoint`)."
    left = (
        f"{gc['pauses']} collection(s) still paused it for 50 ms or more, the longest {gc['longest_ms']} ms"
        if gc["pauses"]
        else "no collection paused it for 50 ms or more"
    )
    return (
        f"LocalStack's heap was frozen every {gc['frozen_every_s']:g} s (its full collections "
        f"otherwise pause it for up to 1.5 s as the heap grows); {left}."
    )


def server_metrics(data: dict[str, Any]) -> str:
    """Whether the started LocalStack published its per-call SQS CloudWatch metrics."""
    if data.get("server_sqs_metrics") is False:
        return (
            " Its SQS CloudWatch metrics were off (`SQS_DISABLE_CLOUDWATCH_METRICS`: for every "
            "send, receive and delete LocalStack otherwise sends PutMetricData to itself, about a "
            "sixth of its time, into a table that grows through the run)."
        )
    if "server_sqs_metrics" not in data:
        return " Its SQS CloudWatch metrics: not recorded (a run from before 2026-11-24 10:00: they were on)."
    return ""


def cpu_spread(data: dict[str, Any]) -> str:
    """How much one configuration's CPU per message varied over this run's repetitions,
    plain and adjusted to the machine (coefficient of variation, the range over the
    configurations): the evidence for judging the CPU target on the adjusted ratio."""
    from benchmarks.aggregate import Run

    keys = _repeated_keys(data)
    by_key: dict[str, list[Run]] = {}
    for r in data.get("runs", []):
        if r["key"] in keys:  # the repeated scenarios (start-up pairs move too little to read)
            by_key.setdefault(r["key"], []).append(Run(**r))
    plain, adjusted = [], []
    for runs in by_key.values():
        cpu = [r.cpu_ms for r in runs]
        adj = [r.cpu_adjusted for r in runs]
        if len(runs) < 3 or any(a is None for a in adj) or not all(cpu):
            continue
        plain.append(statistics.pstdev(cpu) / statistics.mean(cpu))
        kept = [a for a in adj if a is not None]
        adjusted.append(statistics.pstdev(kept) / statistics.mean(kept))
    if not plain:
        return ""
    return (
        f"\nOver this run's repetitions, one configuration's CPU per message varied by "
        f"{min(plain):.1%}-{max(plain):.1%} plain and {min(adjusted):.1%}-{max(adjusted):.1%} adjusted "
        f"to the machine (coefficient of variation, {len(plain)} configurations).\n"
    )


def _where_table(results: list[Result]) -> str:
    lines = [
        "| scenario | machine busy | server's core | consumer CPU ms/msg | server CPU ms/msg "
        "| proxy CPU ms/msg | start-up CPU s |",
        "|---|---|---|---|---|---|---|",
    ]

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in results:
        w = r.extra.get("window")
        if not w:
            continue
        busy = "-" if w.get("host_busy") is None else f"{w['host_busy']:.0%}"
        core = "-" if w.get("server_core") is None else f"{w['server_core']:.0%}"
        start = "-" if r.startup_cpu is None else f"{r.startup_cpu:.2f}"
        lines.append(
            f"| {r.scenario} | {busy} | {core} | {ms(w.get('consumer_ms'))} | {ms(w.get('server_ms'))} | "
            f"{ms(w.get('proxy_ms'))} | {start} |"
        )
    return "\n".join(lines)


MAKE_BENCH = "python -m benchmarks --profile missed --docs --json benchmarks/results.json"
"""What ``make bench`` runs (the Makefile's bench target)."""


def command_line(data: dict[str, Any]) -> str:
    command = str(data.get("command") or MAKE_BENCH)
    if command != MAKE_BENCH:
        return command
    python = data.get("bench_python")
    return f"make bench BENCH_PYTHON=/path/to/{python}  # {command}" if python else f"make bench  # {command}"


def write_docs(data: dict[str, Any], docs: Path | None = None) -> Path:
    docs = docs or ROOT / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    results, capacity = load(data)
    args: dict[str, Any] = data.get("args", {})
    chart(results, docs / "benchmarks.png")
    targets = evaluate(results, capacity)
    missed = [t for t in targets if t.ok is False]
    profiles: dict[str, str] = data.get("profiles", {})
    explained = []
    for t in missed:
        text = f"### {t.name}\n\n{t.result}."
        if t.explanation:
            text += f" {t.explanation}"
        if t.profile and t.profile in profiles:
            text += f"\n\nProfile of `{t.profile}`:\n\n```\n{profiles[t.profile]}\n```"
        elif t.profile:
            text += f"\n\n(No profile of `{t.profile}` in this run: `--profile missed` adds one.)"
        explained.append(text)
    started = float(data.get("started", time.time()))
    spread = cpu_spread(data)
    text = f"""# Benchmarks

Latest run: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))}, on {os.cpu_count()} cores
({_cpu_model()}), Python {data.get("python") or platform.python_version()}, against LocalStack {data.get("server", "?")}
on the same machine, through a counting proxy. N = {args.get("n")} messages per run,
{args.get("reps")} interleaved repetitions; the whole run took {data.get("minutes", "?")} minutes.
{server_gc(data)}{server_metrics(data)}
Default settings at run time: {", ".join(f"{k} {v}" for k, v in data.get("defaults", {}).items())}.

    {command_line(data)}

## Ratios to the raw loop (same run)

![throughput and CPU per message relative to the raw loop](benchmarks.png)

```
{render(results)}

{LEGEND}
```
{spread}

## Targets

{render_targets(targets, markdown=True)}

{chr(10).join(explained) if explained else "Every target met."}

## Where the CPU went

{_where_table(results)}

## Heartbeat capacity

{"```" + chr(10) + render_capacity(capacity) + chr(10) + chr(10) + CAPACITY_LEGEND + chr(10) + "```" if capacity else "Not run."}

{commands_section()}
{NOTES}"""
    out = docs / "benchmarks.md"
    out.write_text(text)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    p.add_argument("json", help="a run's --json output")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="directory to write to (default docs/)")
    p.add_argument(
        "--reaggregate",
        action="store_true",
        help="recompute the repeated scenarios' rows from the run's measured runs (after a change "
        "to benchmarks/aggregate.py) and write them back to the JSON",
    )
    a = p.parse_args()
    data = json.loads(Path(a.json).read_text())
    if a.reaggregate:
        data["results"] = reaggregated(data)
        Path(a.json).write_text(json.dumps(data, indent=2))
    print(write_docs(data, Path(a.docs)))


def reaggregated(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's results with the repeated scenarios' rows aggregated again from its runs
    (the other rows, start-up pairs, latency, scale-out, as they were)."""
    from dataclasses import asdict

    from benchmarks.aggregate import Run, aggregate
    from benchmarks.harness import TUNED

    keys = _repeated_keys(data)
    runs = [Run(**r) for r in data.get("runs", []) if r["key"] in keys]
    fresh = {r.key: asdict(r) for r in aggregate(runs, TUNED)}
    return [fresh.get(r.get("key", ""), r) for r in data.get("results", [])]


if __name__ == "__main__":
    main()
