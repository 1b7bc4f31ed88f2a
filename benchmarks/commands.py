"""How long the ``worker`` command takes before it does anything, against the cost of
importing aiobotocore alone (``python -c "import aiobotocore.session"``), the floor of any
command that talks to AWS.

    python -m benchmarks.commands [--runs 15] [--endpoint URL] [--json FILE]

Each command runs ``--runs`` times, interleaved with the others (so drift on a shared
machine hits all alike), bytecode compiled first as in the image; the median wall time is
reported with its ratio to the reference. ``worker send`` sends one message to a queue at
``--endpoint`` (a LocalStack; created if missing); without an endpoint it is left out.
The targets (issue 33): ``--version`` and ``--help`` at most 1.0x the reference, ``send``
at most 1.5x.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from benchmarks.result import ROOT, replace_section

TARGETS = {"worker --version": 1.0, "worker --help": 1.0, "worker send": 1.5}


def _commands(endpoint: str | None, queue: str) -> dict[str, list[str]]:
    worker = shutil.which("worker", path=str(Path(sys.executable).parent)) or "worker"
    commands = {
        "python -c 'import aiobotocore.session'": [sys.executable, "-c", "import aiobotocore.session"],
        "worker --version": [worker, "--version"],
        "worker --help": [worker, "--help"],
    }
    if endpoint:
        commands["worker send"] = [
            worker,
            "send",
            queue,
            "--type",
            "bench.ping",
            "--body",
            '{"n": 1}',
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
        ]
    return commands


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def _queue(endpoint: str, name: str, env: dict[str, str]) -> None:
    import boto3  # type: ignore[import-untyped]

    boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).create_queue(QueueName=name)


RESULTS = ROOT / "benchmarks" / "commands-results.json"
LAZY = (
    "What is lazy: the commands' signatures come from `worker.cli.options` (Typer and the "
    "standard library only), and a command imports what it works with (aiobotocore, the "
    "settings models, rich, aioboto3, tracing, the other commands) when it runs; `worker send` "
    "skips Typer's pydantic conversion of plain option values (`worker.cli.options.PlainValue`) "
    "and the settings models (`worker.aws_target`), and every command freezes its objects at "
    "exit (`worker.cli.entry`). `tests/cli/test_startup.py` fails when a command imports "
    "what it should not."
)


def section(path: Path = RESULTS) -> str:
    """docs/benchmarks.md's "Command start-up" section from a results file (the benchmark
    report keeps it when it rewrites the page)."""
    if not path.exists():
        return "## Command start-up\n\nNot run: `python -m benchmarks.commands --docs`.\n"
    data = json.loads(path.read_text())
    rows = []
    for row in data["rows"]:
        target = row["target"]
        verdict = (
            ""
            if target is None
            else f"<= {target:g}x: " + ("met" if row["ratio"] <= target else "**missed**")
        )
        rows.append(
            f"| `{row['command']}` | {row['ratio']:.2f}x | {verdict} | {row['median_s'] * 1000:.0f} ms |"
        )
    return (
        "## Command start-up\n\n"
        "How long a command takes, process start to exit, against importing aiobotocore alone "
        '(`python -c "import aiobotocore.session"`, the floor of any command that calls AWS): '
        "`--version` and `--help` at most 1.0x, `worker send` (one message to a LocalStack queue) "
        f"at most 1.5x. Medians of {data['runs']} interleaved runs, bytecode compiled, 2 cores, "
        f"Python {data['python']} (`benchmarks/commands-results.json`):\n\n"
        "| command | ratio | target | median |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n    python -m benchmarks.commands --runs 15 --endpoint http://127.0.0.1:4566 --docs\n\n"
        + LAZY
        + "\n"
    )


def write_section(doc: Path = ROOT / "docs" / "benchmarks.md") -> None:
    """Replace the page's "Command start-up" section (``replace_section``)."""
    replace_section(doc, "Command start-up", section(), before="How it is measured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--endpoint", default=os.environ.get("SQS_WORKER_TEST_ENDPOINT"))
    parser.add_argument("--queue", default="bench-commands")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--docs", action="store_true", help="write the results and docs/benchmarks.md's section"
    )
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    }
    for path in (ROOT / "worker", Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(str(path), quiet=2, workers=0)
    if args.endpoint:
        _queue(args.endpoint, args.queue, env)
    commands = _commands(args.endpoint, args.queue)
    for argv_ in commands.values():  # warm the page cache
        _time(argv_, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv_ in commands.items():
            times[name].append(_time(argv_, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians[next(iter(commands))]
    rows = []
    for name, median in medians.items():
        ratio = median / reference
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if ratio <= target else f"over {target:g}x")
        rows.append(
            {"command": name, "median_s": round(median, 4), "ratio": round(ratio, 3), "target": target}
        )
        print(f"{name:<42} {median * 1000:7.0f} ms  {ratio:5.2f}x  {verdict}")
    out: Path | None = args.json or (RESULTS if args.docs else None)
    if out is not None:
        result = {"python": sys.version.split()[0], "runs": args.runs, "rows": rows}
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        write_section()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
