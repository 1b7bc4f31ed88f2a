"""``worker stats`` and ``worker iam-policy``: what the queues of a topology hold, and the
least-privilege IAM policies for them."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

import typer
from rich.live import Live

from worker.cli.common import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOPOLOGY,
    Connection,
    EndpointOption,
    JsonOption,
    RegionOption,
    TimeoutOption,
    TopologyOption,
    jsonable,
    run_async,
)
from worker.cli.output import out, print_json, table
from worker.ops.iam import iam_policies
from worker.ops.queue_stats import OldestAge, QueueRow, queue_stats
from worker.ops.topology import load_topology
from worker.settings import load_settings


def _stats_table(rows: list[QueueRow]) -> object:
    return table(
        ["queue", "visible", "in flight", "delayed", "DLQ", "oldest", "dead-letter queue"],
        [
            (
                r.name,
                r.visible,
                r.in_flight,
                r.delayed,
                r.dlq_depth,
                None if r.oldest_age is None else f"{r.oldest_age:.0f}s",
                r.dlq,
            )
            for r in rows
        ],
        right=["visible", "in flight", "delayed", "DLQ", "oldest"],
    )


def stats(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes with --watch.")] = 2.0,
    json_: JsonOption = False,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Per queue of the topology: visible, in flight, delayed, DLQ depth, oldest age.

    The age of the oldest message comes from CloudWatch (on AWS only). With --json --watch, one JSON line per refresh.
    """
    spec = load_topology(topology)
    conn = Connection(region, endpoint_url, timeout)

    async def go() -> None:
        async with conn.client("sqs") as sqs, conn.client("cloudwatch") as cloudwatch:
            on_aws = not conn.settings().resolved_endpoint("cloudwatch")
            oldest = OldestAge(cloudwatch.client if on_aws else None)
            live: Live | None = None
            try:
                while True:
                    rows = await queue_stats(sqs, spec, oldest)
                    if json_ and watch:
                        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                        print_json({"at": at, "queues": jsonable(rows)}, line=True)
                    elif json_:
                        print_json(jsonable(rows))
                    elif watch:
                        if live is None:
                            live = Live(_stats_table(rows), console=out(), auto_refresh=False)  # type: ignore[arg-type]
                            live.start()
                        live.update(_stats_table(rows), refresh=True)  # type: ignore[arg-type]
                    else:
                        out().print(_stats_table(rows))
                    if not watch:
                        return
                    await asyncio.sleep(interval)
            finally:
                if live is not None:
                    live.stop()

    run_async(go, conn)


def iam_policy(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="The worker configuration whose queues the worker policy covers (default: every source queue).",
        ),
    ] = None,
    account_id: Annotated[
        str | None,
        typer.Option(help="Build ARNs offline for this account (with --region) instead of asking AWS."),
    ] = None,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Print the least-privilege IAM policies of the worker and of the producer (JSON)."""
    spec = load_topology(topology)
    worker = load_settings(config) if config else None
    conn = Connection(region, endpoint_url, timeout)

    async def go() -> dict[str, object]:
        async with conn.client("sqs") as sqs, conn.client("sns") as sns:
            return await iam_policies(sqs, sns, spec, worker, account_id, conn.settings().resolved_region())

    print_json(run_async(go, conn))
