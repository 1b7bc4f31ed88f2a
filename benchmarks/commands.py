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

ROOT = Path(__file__).resolve().parents[1]
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


def _queue(endpoint: str, name: str) -> None:
    import boto3  # type: ignore[import-untyped]

    boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1").create_queue(QueueName=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--endpoint", default=os.environ.get("SQS_WORKER_TEST_ENDPOINT"))
    parser.add_argument("--queue", default="bench-commands")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    }
    for path in (ROOT / "worker", Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(str(path), quiet=2, workers=0)
    if args.endpoint:
        _queue(args.endpoint, args.queue)
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
    if args.json:
        result = {"python": sys.version.split()[0], "runs": args.runs, "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
