"""docs/comparison-numbers.md from a comparison run (``benchmarks/compare.py``): the fragment the
comparison page includes or links. Ratios to the raw loop first, then absolute numbers, then
what ran where and with which settings.

    python -m benchmarks.compare_report benchmarks/compare-results.json    # the fragment again
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.result import ROOT

__all__ = ["render_markdown", "write_docs"]

HOW = """\
## How it is measured

- One run, one LocalStack on the same machine, one counting proxy (`benchmarks/proxy.py`) in
  front of it; every consumer is its own process and talks to SQS through the proxy.
- Each run gets a fresh queue loaded with N messages before the consumer starts: only
  consumption is measured. Celery's messages are Celery's own task messages (what
  `send_task` sends, captured and loaded in batches).
- **Throughput** is N over the first message handled (recorded by the consumer's own
  handler) to the delete that completes N (recorded by the proxy); **with start-up**, over
  process start to that delete. **First message** is process start to the first message
  handled.
- **CPU per message** is the consumer process's CPU (user + system, all threads, /proc)
  between the first message and the last delete, over N; **start-up CPU** is what it spent
  before its first message.
- **Requests per message** are every SQS request the proxy saw during the run (start-up and
  stop included), over N.
- **Lost** are messages the consumer's handler never completed, **dup** messages it
  completed twice (each handler records what it completed: message ids, or Celery's task
  argument); **left** is what was still in the queue after the run.
- Each repetition runs, per handler, the raw loop first, then every other consumer. A ratio
  is taken to the raw loop of the same repetition and handler, then the median over the
  repetitions is reported; absolute numbers are medians too. LocalStack, the proxy and the
  consumer share the machine's cores: read the ratios first."""


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rows(data: dict[str, Any], handler: str) -> list[dict[str, Any]]:
    return [r for r in data["results"] if r["extra"].get("handler") == handler]


def _label(data: dict[str, Any], row: dict[str, Any]) -> str:
    consumer = data["consumers"].get(row["extra"].get("consumer"), {})
    return str(consumer.get("label", row["scenario"]))


def render_markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    node = next(
        (c["versions"].get("node") for c in data["consumers"].values() if "node" in c["versions"]), None
    )
    out = [
        "# Side-by-side numbers",
        "",
        "<!-- Written by `make compare` (python -m benchmarks.compare --docs); not edited by hand. -->",
        "",
        f"Run: {data['date']}, on {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}, Python {m['python']}" + (f", Node.js {node}" if node else "") + f", against "
        f"{data['server']} on the same machine, through a counting proxy. N = {data['n']} messages per "
        f"run, {data['reps']} interleaved repetition(s); the run took {data['minutes']} minutes "
        f"(load average at the end: {', '.join(str(x) for x in m['load_average'])}).",
        "",
        f"    make compare  # {data['command']}",
        "",
        "## Ratios to the raw loop (same run, same handler)",
        "",
        "Each consumer's throughput and CPU per message over the raw aiobotocore loop's with the "
        "same handler, in the same repetition (median over repetitions). Above 1 is faster "
        "(throughput) or costlier (CPU).",
    ]
    handlers = {"noop": "No-op handler", "io": "50 ms I/O handler"}
    for handler in data["handlers"]:
        out += [
            "",
            f"### {handlers.get(handler, handler)}",
            "",
            "| consumer | throughput | with start-up | CPU per message | first message | vs raw |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in _rows(data, handler):
            out.append(
                f"| {_label(data, r)} | {_f(r['ratio'], '.2f')}x | {_f(r['ratio_with_startup'], '.2f')}x "
                f"| {_f(r['cpu_ratio'], '.2f')}x | {_f(r['first_message'], '.2f')} s "
                f"| {_f(r['first_vs_raw'], '+.2f')} s |"
            )
    out += [
        "",
        "## Absolute numbers",
        "",
        "| consumer | handler | msg/s | with start-up | CPU ms/msg | start-up CPU s | requests/msg "
        "| peak RSS MB | machine busy | dup | lost | left |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for handler in data["handlers"]:
        for r in _rows(data, handler):
            busy = (r["extra"].get("window") or {}).get("host_busy")
            out.append(
                f"| {_label(data, r)} | {handler} | {r['rate']:.0f} | {_f(r['rate_with_startup'], '.0f')} "
                f"| {r['cpu_ms_per_message']:.3f} | {_f(r['startup_cpu'], '.2f')} "
                f"| {r['requests_per_message']:.3f} | {r['peak_rss_mb']:.0f} "
                f"| {_f(None if busy is None else busy * 100, '.0f')}% | {r['duplicates']} "
                f"| {r['losses']} | {r['extra'].get('left_in_queue', '-')} |"
            )
    out += ["", "## What ran, with which settings", ""]
    for c in data["consumers"].values():
        versions = ", ".join(f"{k} {v}" for k, v in c["versions"].items())
        out += [f"### {c['label']} ({versions})", ""]
        for handler in data["handlers"]:
            out.append(f"- {handlers.get(handler, handler)}: {c['handlers'].get(handler, '?')}")
        for k, v in c["settings"].items():
            shown = json.dumps(v) if isinstance(v, dict | list | bool) else str(v)
            out.append(f"- `{k}`: {shown}")
        out.append("")
    out += ["## Not run", ""]
    for name, why in {**data.get("skipped", {}), **data.get("not_run", {})}.items():
        out.append(f"- {name}: {why.splitlines()[0]}")
    out += ["", HOW, ""]
    return "\n".join(out)


def write_docs(data: dict[str, Any], directory: Path | None = None) -> Path:
    folder = directory or ROOT / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "comparison-numbers.md"
    path.write_text(render_markdown(data))
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="docs/comparison-numbers.md from a comparison run's JSON")
    p.add_argument("json", nargs="?", default=str(ROOT / "benchmarks" / "compare-results.json"))
    p.add_argument("--docs-dir")
    a = p.parse_args()
    print(
        f"wrote {write_docs(json.loads(Path(a.json).read_text()), Path(a.docs_dir) if a.docs_dir else None)}"
    )
