"""``worker dlq show`` and ``worker dlq redrive``: look at a dead-letter queue without
consuming it, and move its messages back to their source queue."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.options import (
    DEFAULT_TIMEOUT,
    HELP_SETTINGS,
    EndpointOption,
    JsonOption,
    RegionOption,
    TimeoutOption,
)
from worker.errors import EXIT_FAILED

if TYPE_CHECKING:
    from worker.cli.common import Connection
    from worker.ops import dlq as dlq_ops

app = typer.Typer(
    name="dlq",
    help="Inspect dead-letter queues and move their messages back.",
    no_args_is_help=True,
    **HELP_SETTINGS,
)

QueueArgument = Annotated[
    str, typer.Argument(metavar="QUEUE", help="The source queue or its DLQ (name or URL).")
]
QueueTopologyOption = Annotated[
    str | None,
    typer.Option(
        "--topology",
        "-t",
        help="A topology file: a queue of it is looked for in the region the file gives it (not --region's).",
    ),
]


def connection(
    queue: str, region: str | None, endpoint_url: str | None, timeout: float, topology: str | None
) -> Connection:
    """Where the queue lives, as ``stats`` and ``iam-policy`` find it: the region of its URL;
    else, for a queue of the topology, the region the file gives it (its own ``region:``, else
    the file's), whatever ``--region`` says; else ``--region``, else the file's region, else
    the session's."""
    from worker.cli.common import Connection
    from worker.cli.output import info
    from worker.ops.topology import load_topology
    from worker.settings import url_region

    found = url_region(queue)
    if found is None and topology is not None:
        spec = load_topology(topology)
        if queue in spec.queues:
            found = spec.region_of("queue", queue)
            if found is not None and region is not None and region != found:
                info(f"queue {queue!r} is in {found}, as {topology} says (not --region {region})")
        region = region or spec.region
    return Connection(found or region, endpoint_url, timeout)


def _ts(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


@app.command()
def show(
    queue: QueueArgument,
    limit: Annotated[int, typer.Option(min=1, help="Show at most N messages.")] = 100,
    json_: JsonOption = False,
    topology: QueueTopologyOption = None,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """List a DLQ's messages without consuming them (each look counts as a receive)."""
    from worker.cli.common import jsonable, run_async
    from worker.cli.output import out, print_json, table
    from worker.ops import dlq as dlq_ops

    conn = connection(queue, region, endpoint_url, timeout, topology)

    async def go() -> tuple[dlq_ops.DlqPair, list[dlq_ops.DeadMessage]]:
        async with conn.client("sqs") as sqs:
            pair = await dlq_ops.resolve(sqs, queue)
            return pair, await dlq_ops.peek(sqs, pair.dlq_url, limit=limit)

    pair, messages = run_async(go, conn, queue=queue)
    if json_:
        print_json(jsonable(messages))
        return
    console = out()
    console.print(f"{pair.dlq_url}: {len(messages)} message(s)")
    if messages:
        rows = [
            (
                m.message_id,
                m.type,
                m.receive_count,
                _ts(m.original_sent_ms),
                _ts(m.dead_lettered_ms),
                m.size,
                m.reason or "-",
                m.excerpt,
            )
            for m in messages
        ]
        # "sent": when a message SQS's redrive moved was sent to its source queue (SQS keeps
        # SentTimestamp; it records no dead-letter time). "dead-lettered": when the worker
        # moved a copy (the copy's SentTimestamp). Each is "-" where it is not known.
        console.print(
            table(
                ["message id", "type", "receives", "sent", "dead-lettered", "size", "reason", "body"],
                rows,
                right=["receives", "size"],
            )
        )


@app.command()
def redrive(
    queue: QueueArgument,
    type_: Annotated[str | None, typer.Option("--type", help="Only messages of this type.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N messages.")] = None,
    manual: Annotated[
        bool, typer.Option("--manual", help="Move batch by batch instead of with SQS's StartMessageMoveTask.")
    ] = False,
    topology: QueueTopologyOption = None,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Move DLQ messages back to their source queue, each at most once, up to the depth the
    DLQ had when the command started."""
    from worker.cli.common import run_async
    from worker.cli.output import progress
    from worker.ops import dlq as dlq_ops

    conn = connection(queue, region, endpoint_url, timeout, topology)

    async def go() -> tuple[dlq_ops.DlqPair, dlq_ops.RedriveResult]:
        async with conn.client("sqs") as sqs:
            pair = await dlq_ops.resolve(sqs, queue)
            with progress("redriving") as update:
                result = await dlq_ops.redrive(
                    sqs, pair, message_type=type_, limit=limit, progress=update, use_move_task=not manual
                )
            return pair, result

    pair, result = run_async(go, conn, queue=queue)
    for failure in result.failures:
        sys.stderr.write(f"failed: {failure}\n")
    returned = f", {result.returned} came back during the run (left for the next)" if result.returned else ""
    typer.echo(
        f"moved {result.moved} of {result.total}, skipped {result.skipped}, failed {result.failed}{returned}; "
        f"left in DLQ {result.left} ({result.method}) -> {pair.source_url}"
    )
    if result.failed:
        raise typer.Exit(EXIT_FAILED)
