"""Operator commands: provision, send, publish, dlq show / redrive, stats, iam-policy.

Each command parses its arguments, then runs one coroutine against SQS/SNS; errors are a
single ``worker: error: ...`` line and a non-zero exit (2: bad input, 1: AWS refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from worker.aws import AwsClient, aws_client
from worker.ops import dlq as dlq_ops
from worker.ops.iam import iam_policies
from worker.ops.provision import Provisioner, render_plan
from worker.ops.queue_stats import OldestAge, cloudwatch_context, queue_stats, render_stats
from worker.ops.topology import load_topology
from worker.producer import OutgoingMessage, Producer, ProducerError
from worker.settings import AwsSettings, ConfigError, load_settings

DEFAULT_TOPOLOGY = os.environ.get("WORKER_TOPOLOGY", "config/topology.yaml")


class InputError(Exception):
    """Bad command-line input (exit 2)."""


def _aws(args: argparse.Namespace) -> AwsSettings:
    return AwsSettings(region=args.region, endpoint_url=args.endpoint_url)


@contextlib.asynccontextmanager
async def _clients(args: argparse.Namespace) -> AsyncIterator[tuple[AwsClient, AwsClient]]:
    aws = _aws(args)
    async with aws_client("sqs", aws) as sqs, aws_client("sns", aws) as sns:
        yield sqs, sns


class Progress:
    """A one-line progress bar on a TTY; a line every 10% otherwise."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        total = max(total, 1)
        pct = min(100, done * 100 // total)
        if self.tty:
            bar = "#" * (pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {done}/{total}")
            if done >= total:
                self.stream.write("\n")
        elif pct // 10 != self._last // 10 or done >= total:
            self.stream.write(f"{self.label}: {done}/{total}\n")
        self._last = pct
        self.stream.flush()


# -- provision -----------------------------------------------------------------------------
async def provision(args: argparse.Namespace) -> int:
    topology = load_topology(args.config)
    async with _clients(args) as (sqs, sns):
        p = Provisioner(topology, sqs, sns)
        changes = await p.plan()
        prune = await p.plan_prune() if args.prune else []
        print(render_plan(changes + prune))
        pending = [c for c in changes + prune if c.action != "unchanged"]
        if not pending:
            print(f"No changes: AWS matches {args.config}.")
            return 0
        if args.dry_run:
            print("Dry run: nothing changed.")
            return 0
        await p.apply(changes)
        if prune:
            await p.apply_prune(prune)
        print(f"Applied {len(pending)} change(s).")
    return 0


# -- send / publish ------------------------------------------------------------------------
def _parse_attrs(pairs: list[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--attr {pair!r}: expected NAME=VALUE")
        attrs[key] = value
    return attrs


def _body(text: str, raw: bool, where: str) -> Any:
    if raw:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{where}: body is not valid JSON ({exc}); pass --raw to send text as is") from None


def _messages(args: argparse.Namespace) -> list[OutgoingMessage]:
    common: dict[str, Any] = {
        "message_type": args.type,
        "attributes": _parse_attrs(args.attr or []),
        "group_id": args.group_id,
        "dedup_id": args.dedup_id,
    }
    if getattr(args, "delay", None) is not None:
        common["delay"] = args.delay
    if getattr(args, "subject", None):
        common["subject"] = args.subject
    if getattr(args, "structure_json", False):
        common["structure_json"] = True
    if args.body is not None and args.file is not None:
        raise InputError("give --body or --file, not both")
    if args.file is None:
        if args.body is None:
            raise InputError(
                "nothing to send: give --body JSON (or @file) or --file FILE.jsonl (- for stdin)"
            )
        text = args.body
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--body {args.body}: {exc.strerror}") from None
        return [OutgoingMessage(_body(text, args.raw, "--body"), **common)]
    if args.dedup_id:
        raise InputError("--dedup-id applies to one message; with --file each message gets its own")
    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"--file {args.file}: {exc.strerror}") from None
    with stream:
        lines = [(n, line.rstrip("\n")) for n, line in enumerate(stream, 1) if line.strip()]
    return [OutgoingMessage(_body(line, args.raw, f"{args.file}:{n}"), **common) for n, line in lines]


async def _send_or_publish(args: argparse.Namespace, publishing: bool) -> int:
    messages = _messages(args)
    async with _clients(args) as (sqs, sns):
        producer = Producer(sqs, sns)
        progress = Progress("publishing" if publishing else "sending") if len(messages) > 1 else None
        if publishing:
            result = await producer.publish_many(args.target, messages, progress)
        else:
            result = await producer.send_many(args.target, messages, progress)
    for f in result.failed:
        print(f"failed: message {f.index}: {f.code}: {f.message}", file=sys.stderr)
    verb = "published" if publishing else "sent"
    if len(messages) == 1 and not result.failed:
        print(f"{verb} {result.sent[0]}")
    else:
        print(f"{verb} {len(result.sent)}, failed {len(result.failed)}")
    return 1 if result.failed else 0


async def send(args: argparse.Namespace) -> int:
    return await _send_or_publish(args, publishing=False)


async def publish(args: argparse.Namespace) -> int:
    return await _send_or_publish(args, publishing=True)


# -- dlq -----------------------------------------------------------------------------------
def _ts(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


async def dlq_show(args: argparse.Namespace) -> int:
    async with _clients(args) as (sqs, _):
        pair = await dlq_ops.resolve(sqs, args.queue)
        messages = await dlq_ops.peek(sqs, pair.dlq_url, limit=args.limit)
    if args.json:
        print(json.dumps([m.__dict__ for m in messages], indent=2))
        return 0
    print(f"{pair.dlq_url}: {len(messages)} message(s)")
    if messages:
        print(f"{'message id':<38}{'type':<20}{'receives':>9}  {'first received':<20}{'size':>7}  body")
        for m in messages:
            print(
                f"{m.message_id:<38}{(m.type or '-'):<20}{m.receive_count:>9}  "
                f"{_ts(m.first_received_ms):<20}{m.size:>7}  {m.excerpt}"
            )
    return 0


async def dlq_redrive(args: argparse.Namespace) -> int:
    async with _clients(args) as (sqs, _):
        pair = await dlq_ops.resolve(sqs, args.queue)
        result = await dlq_ops.redrive(
            sqs,
            pair,
            message_type=args.type,
            limit=args.limit,
            progress=Progress("redriving"),
            use_move_task=not args.manual,
        )
    print(
        f"moved {result.moved}, failed {result.failed}, left in DLQ {result.skipped} "
        f"({result.method}) -> {pair.source_url}"
    )
    return 1 if result.failed else 0


# -- stats / iam ---------------------------------------------------------------------------
async def stats(args: argparse.Namespace) -> int:
    topology = load_topology(args.config)
    async with _clients(args) as (sqs, _), cloudwatch_context(_aws(args)) as cloudwatch:
        oldest = OldestAge(cloudwatch if not _aws(args).resolved_endpoint() else None)
        while True:
            rows = await queue_stats(sqs, topology, oldest)
            if args.json:
                print(json.dumps([r.__dict__ for r in rows], indent=2))
            else:
                if args.watch:
                    print("\033[2J\033[H", end="")
                print(render_stats(rows))
            if not args.watch:
                return 0
            await asyncio.sleep(args.watch)


async def iam_policy(args: argparse.Namespace) -> int:
    topology = load_topology(args.config)
    worker = load_settings(args.worker_config) if args.worker_config else None
    async with _clients(args) as (sqs, sns):
        policies = await iam_policies(
            sqs, sns, topology, worker, args.account_id, _aws(args).resolved_region()
        )
    print(json.dumps(policies, indent=2))
    return 0


# -- wiring --------------------------------------------------------------------------------
def _aws_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="SQS/SNS endpoint (LocalStack); default: AWS_ENDPOINT_URL or AWS")
    p.add_argument("--region", help="AWS region; default: AWS_REGION / AWS_DEFAULT_REGION")


def _topology_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", default=DEFAULT_TOPOLOGY, help=f"topology file (default: {DEFAULT_TOPOLOGY})"
    )


def _message_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", help="message type (the 'type' attribute the worker dispatches on)")
    p.add_argument("--body", help="JSON body, or @FILE to read it from a file")
    p.add_argument("--file", help="JSON-lines file, one body per line ('-' for stdin); sent in batches of 10")
    p.add_argument(
        "--attr", action="append", metavar="NAME=VALUE", help="a string message attribute (repeatable)"
    )
    p.add_argument("--group-id", help="message group id (FIFO)")
    p.add_argument("--dedup-id", help="deduplication id (FIFO, one message)")
    p.add_argument("--raw", action="store_true", help="send bodies as text, without checking they are JSON")
    _aws_options(p)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("provision", help="make AWS match the topology file (queues, topics, subscriptions)")
    _topology_option(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument(
        "--prune", action="store_true", help="also delete managed resources the file no longer lists"
    )
    _aws_options(p)
    p.set_defaults(coro=provision)

    p = sub.add_parser("send", help="send one message, or many from a JSON-lines file, to a queue")
    p.add_argument("target", metavar="QUEUE", help="queue name or URL")
    _message_options(p)
    p.add_argument("--delay", type=int, help="delivery delay in seconds (standard queues)")
    p.set_defaults(coro=send)

    p = sub.add_parser("publish", help="publish one message, or many from a JSON-lines file, to a topic")
    p.add_argument("target", metavar="TOPIC", help="topic name or ARN")
    _message_options(p)
    p.add_argument("--subject", help="SNS subject")
    p.add_argument(
        "--structure-json", action="store_true", help='body is {"default": ..., "<protocol>": ...}'
    )
    p.set_defaults(coro=publish)

    dlq = sub.add_parser("dlq", help="inspect and redrive dead-letter queues")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("show", help="list a DLQ's messages without consuming them")
    p.add_argument("queue", metavar="QUEUE", help="the source queue or its DLQ")
    p.add_argument("--limit", type=int, default=100, help="show at most N messages (default 100)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    _aws_options(p)
    p.set_defaults(coro=dlq_show)
    p = dsub.add_parser("redrive", help="move DLQ messages back to their source queue")
    p.add_argument("queue", metavar="QUEUE", help="the source queue or its DLQ")
    p.add_argument("--type", help="only messages of this type")
    p.add_argument("--limit", type=int, help="at most N messages")
    p.add_argument(
        "--manual", action="store_true", help="move messages one batch at a time, not StartMessageMoveTask"
    )
    _aws_options(p)
    p.set_defaults(coro=dlq_redrive)

    p = sub.add_parser("stats", help="per queue of the topology: visible, in flight, delayed, DLQ depth")
    _topology_option(p)
    p.add_argument("--watch", type=float, nargs="?", const=2.0, help="refresh every N seconds (default 2)")
    p.add_argument("--json", action="store_true")
    _aws_options(p)
    p.set_defaults(coro=stats)

    p = sub.add_parser(
        "iam-policy", help="print the least-privilege IAM policies of the worker and the producer"
    )
    _topology_option(p)
    p.add_argument(
        "--worker-config",
        help="worker YAML whose queues the worker policy covers (default: all source queues)",
    )
    p.add_argument(
        "--account-id", help="build ARNs offline for this account (with --region) instead of asking AWS"
    )
    _aws_options(p)
    p.set_defaults(coro=iam_policy)


def run_command(args: argparse.Namespace) -> int:
    coro_fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.coro
    try:
        return asyncio.run(coro_fn(args))
    except (ConfigError, InputError, ProducerError) as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return 2
    except (dlq_ops.DlqError, ValueError, KeyError) as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return 1
    except NoRegionError:
        print("worker: error: no AWS region: pass --region or set AWS_REGION", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        print(f"worker: error: AWS: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into head & co.
        sys.stderr.close()
        return 0
