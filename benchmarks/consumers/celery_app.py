"""Celery on SQS (kombu's SQS transport, pycurl), as the comparison runs it. Runs in its own
venv (``.cache/compare/celery``, see ``benchmarks/external.py``): the standard library and Celery
only, nothing of the project.

    python celery_app.py produce --queue NAME --url URL --task noop --n 5000 > bodies.jsonl
    python celery_app.py worker --broker sqs://bench:bench@127.0.0.1:PORT --queue NAME --url URL

``produce`` writes, one JSON line per message, the SendMessage arguments Celery itself would
send for ``send_task("bench.noop", args=(i,))`` (kombu's own envelope, base64 and all),
captured without a network call: the benchmark loads them in batches, so only consumption
is measured. ``worker`` is ``celery worker`` with the settings in ``SETTINGS`` (what the
comparison page lists). Each task records its ``seq`` when it returns, and the first task
(time.monotonic(), time.process_time()) when it starts; both are written to $BENCH_RECORD
when the worker exits, as ``benchmarks/handlers.py`` does for the worker.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from typing import Any

from celery import Celery  # type: ignore[import-not-found]  # the Celery venv's, not the project's

SETTINGS: dict[str, Any] = {
    "pool": "threads",
    "concurrency": 32,
    "loglevel": "INFO",
    "task_acks_late": True,
    "worker_prefetch_multiplier": 4,
    "wait_time_seconds": 20,
    "polling_interval": 1,
    "visibility_timeout": 30,
}
"""Defaults of the comparison (``--concurrency`` etc. override them). ``threads``: one
process, so its CPU reads like every other consumer's; 32: the worker's thread pool for
plain handlers. ``task_acks_late``: the message is deleted after the task returns, the
delivery guarantee of the worker and the raw loop (Celery's default deletes it first)."""

seen: list[int] = []
first: list[float] = []


def noop(seq: int) -> None:
    if not first:
        first.extend((time.monotonic(), time.process_time()))
    seen.append(seq)


def io(seq: int) -> None:
    """The 50 ms I/O handler of a sync framework: time.sleep in a pool thread."""
    if not first:
        first.extend((time.monotonic(), time.process_time()))
    time.sleep(0.05)
    seen.append(seq)


def make_app(broker: str, queue: str, url: str, settings: dict[str, Any]) -> Any:
    app = Celery("bench_celery", broker=broker)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "is_secure": False,
            "predefined_queues": {queue: {"url": url}},
            "wait_time_seconds": settings["wait_time_seconds"],
            "polling_interval": settings["polling_interval"],
            "visibility_timeout": settings["visibility_timeout"],
        },
        task_default_queue=queue,
        task_acks_late=settings["task_acks_late"],
        worker_prefetch_multiplier=settings["worker_prefetch_multiplier"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    app.task(name="bench.noop")(noop)
    app.task(name="bench.io")(io)
    return app


def produce(app: Any, queue: str, task: str, n: int) -> None:
    """Celery's SendMessage arguments for n tasks, captured instead of sent."""
    from kombu.transport.SQS import Channel  # type: ignore[import-not-found]

    captured: list[dict[str, Any]] = []

    class Capture:
        def send_message(self, **kwargs: Any) -> dict[str, Any]:
            captured.append({k: v for k, v in kwargs.items() if k != "QueueUrl"})
            return {}

        def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:  # queue_declare's size
            return {"Attributes": {"ApproximateNumberOfMessages": "0"}}

    Channel.sqs = lambda self, queue=None: Capture()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(f"bench.{task}", args=(i,), queue=queue, producer=producer)
    out = sys.stdout
    for entry in captured:
        out.write(json.dumps(entry) + "\n")
    out.flush()


def _dump() -> None:
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"seen": [str(s) for s in seen], "first": first}, f)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Celery on SQS for the comparison")
    p.add_argument("mode", choices=["produce", "worker", "settings"])
    p.add_argument("--broker", default="sqs://bench:bench@127.0.0.1:4566")
    p.add_argument("--queue", default="bench")
    p.add_argument("--url", default="http://127.0.0.1:4566/000000000000/bench")
    p.add_argument("--task", choices=["noop", "io"], default="noop")
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=SETTINGS["concurrency"])
    p.add_argument("--pool", default=SETTINGS["pool"])
    p.add_argument("--loglevel", default=SETTINGS["loglevel"])
    a = p.parse_args(argv)
    settings = {**SETTINGS, "concurrency": a.concurrency, "pool": a.pool, "loglevel": a.loglevel}
    if a.mode == "settings":  # what this run would use, with the versions
        from importlib.metadata import version

        import pycurl  # type: ignore[import-untyped]

        versions = {name: version(name) for name in ("celery", "kombu", "pycurl")}
        versions["libcurl"] = str(pycurl.version_info()[1])
        print(json.dumps({"settings": settings, "versions": versions}))
        return
    app = make_app(a.broker, a.queue, a.url, settings)
    if a.mode == "produce":
        produce(app, a.queue, a.task, a.n)
        return
    atexit.register(_dump)
    app.worker_main(
        [
            "worker",
            "--pool",
            settings["pool"],
            "--concurrency",
            str(settings["concurrency"]),
            "--queues",
            a.queue,
            "--loglevel",
            settings["loglevel"],
        ]
    )


if __name__ == "__main__":
    main()
