"""``worker stats`` and ``worker iam-policy``: what the queues of a topology hold, and the
least-privilege IAM policies for them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.options import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOPOLOGY,
    EndpointOption,
    JsonOption,
    RegionOption,
    TimeoutOption,
    TopologyOption,
)
from worker.ops.prices import FIFO_PRICE_PER_MILLION, PRICE_PER_MILLION, PRICES_AS_OF

if TYPE_CHECKING:
    from rich.table import Table

    from worker.ops.queue_stats import QueueRow
    from worker.ops.request_cost import QueueCost, Rates

DEFAULT_SAMPLE = 5.0
"""Seconds between the two reads of the workers' metrics for a single ``stats``."""


MetricsUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metrics-url",
        help="A worker's /metrics (repeat for every replica; summed): adds requests per message, "
        "requests/s and the monthly request cost per queue.",
        rich_help_panel="Request cost",
    ),
]


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _stats_table(rows: list[QueueRow], costs: bool) -> Table:
    """The rows as a table; with a region column when they are in more than one region."""
    from worker.cli.output import table

    regions = len({r.region for r in rows}) > 1
    columns = ["queue", *(["region"] if regions else []), "visible", "in flight", "delayed", "DLQ", "oldest"]
    measured = ["req/msg", "req/s", "$/month"] if costs else []
    return table(
        [*columns, *measured, "dead-letter queue"],
        [
            (
                r.name,
                *([r.region] if regions else []),
                r.visible,
                r.in_flight,
                r.delayed,
                r.dlq_depth,
                None if r.oldest_age is None else f"{r.oldest_age:.0f}s",
                *(
                    (
                        None if r.requests_per_message is None else f"{r.requests_per_message:.2f}",
                        None if r.requests_per_second is None else f"{r.requests_per_second:.2f}",
                        None if r.monthly_cost is None else _money(r.monthly_cost),
                    )
                    if costs
                    else ()
                ),
                r.dlq,
            )
            for r in rows
        ],
        right=["visible", "in flight", "delayed", "DLQ", "oldest", *measured],
    )


def _cost_note(rates: Rates, workers: int, price: float, fifo_price: float) -> str:
    how = (
        "average since each worker started"
        if rates.basis == "since_start"
        else f"over the last {rates.seconds or 0:.1f}s"
    )
    return (
        f"req/msg: SQS requests per message received since each worker started; req/s, $/month: {how}, "
        f"{workers} worker{'s' if workers != 1 else ''}; ${price:.2f} per million requests (FIFO ${fifo_price:.2f}), "
        f"US East list price of {PRICES_AS_OF}; not counted: the free tier, 64 KiB payload chunks beyond the first"
    )


def _with_costs(
    rows: list[QueueRow], costs: dict[str, QueueCost], rates: Rates, names: dict[str, str]
) -> list[QueueRow]:
    """``rows`` with the costs of their queues: a metric's queue label is the queue's key
    in the worker configuration, its name by ``names`` (else the key itself)."""
    by_name = {names.get(label, label): cost for label, cost in costs.items()}
    out: list[QueueRow] = []
    for row in rows:
        cost = by_name.get(row.name)
        if cost is None:
            out.append(row)
            continue
        out.append(
            dataclasses.replace(
                row,
                requests=round(cost.requests),
                received=round(cost.received),
                requests_per_message=cost.requests_per_message,
                requests_per_second=cost.requests_per_second,
                monthly_cost=cost.monthly_cost,
                price_per_million=cost.price_per_million,
                rate_basis=rates.basis,
                rate_seconds=rates.seconds,
            )
        )
    return out


def stats(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between refreshes with --watch.")] = 2.0,
    json_: JsonOption = False,
    metrics_url: MetricsUrlOption = None,
    sample: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between the two reads of the workers' metrics that requests/s is taken from "
            "(with --watch: the first refresh; then the time between refreshes). 0: the average since "
            "each worker started.",
            rich_help_panel="Request cost",
        ),
    ] = DEFAULT_SAMPLE,
    price: Annotated[
        float,
        typer.Option(
            "--price-per-million",
            min=0,
            envvar="WORKER_PRICE_PER_MILLION",
            show_envvar=True,
            help=f"US dollars per million requests to a standard queue (SQS list price, US East, {PRICES_AS_OF}).",
            rich_help_panel="Request cost",
        ),
    ] = PRICE_PER_MILLION,
    fifo_price: Annotated[
        float,
        typer.Option(
            "--fifo-price-per-million",
            min=0,
            envvar="WORKER_FIFO_PRICE_PER_MILLION",
            show_envvar=True,
            help="The same for FIFO queues.",
            rich_help_panel="Request cost",
        ),
    ] = FIFO_PRICE_PER_MILLION,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            envvar="WORKER_CONFIG",
            show_envvar=True,
            help="With --metrics-url: the workers' configuration, whose queue keys the metrics name "
            "(default: each key is its queue's name).",
            rich_help_panel="Request cost",
        ),
    ] = None,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Per queue of the topology: visible, in flight, delayed, DLQ depth, oldest age.

    The age of the oldest message comes from CloudWatch (on AWS only). With --metrics-url, also
    the SQS requests per message the workers measured and the monthly request cost at the
    current rate. With --json --watch, one JSON line per refresh.
    """
    import asyncio

    import aiohttp
    from rich.console import ConsoleRenderable, Group
    from rich.live import Live
    from rich.text import Text

    from worker.cli.common import Connection, jsonable, regional_clients, run_async
    from worker.cli.output import err, info, out, print_json, warn
    from worker.ops.queue_stats import OldestAge, queue_stats
    from worker.ops.request_cost import CostMeter
    from worker.ops.request_cost import metrics_url as metrics_url_of
    from worker.ops.topology import load_topology
    from worker.settings import load_settings

    spec = load_topology(topology)
    conn = Connection(region or spec.region, endpoint_url, timeout)  # the file's region: its default
    urls = [metrics_url_of(u) for u in metrics_url or []]
    names: dict[str, str] = {}
    if config and urls:
        settings = load_settings(config)
        names = {key: q.queue_name(key) for key, q in settings.queues.items()}
    meter = CostMeter(urls, timeout) if urls else None

    def price_of(label: str) -> float:
        return fifo_price if names.get(label, label).endswith(".fifo") else price

    async def go() -> None:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(regional_clients(conn))
            sqs = await client("sqs")
            cloudwatch = await client("cloudwatch")
            session = None
            if meter is not None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                if sample > 0:
                    await meter.start(session)
                    if err().is_terminal and not json_:
                        info(f"reading the workers' metrics twice, {sample:g}s apart, for requests/s ...")
                    await asyncio.sleep(sample)
            on_aws = not conn.target().resolved_endpoint("cloudwatch")
            oldest = OldestAge(cloudwatch.client if on_aws else None, client)
            here = conn.target().resolved_region()
            live: Live | None = None
            told = False
            try:
                while True:
                    rows = await queue_stats(sqs, spec, oldest, client, here)
                    note = None
                    if meter is not None and session is not None:
                        costs, rates = await meter.report(session, price_of)
                        rows = _with_costs(rows, costs, rates, names)
                        note = _cost_note(rates, len(meter.urls), price, fifo_price)
                        unmatched = sorted({names.get(q, q) for q in costs} - {r.name for r in rows})
                        if unmatched and not told:
                            told = True  # once, not on every refresh
                            hint = (
                                "" if config else " (-c: the worker configuration, whose queue keys they are)"
                            )
                            warn(
                                f"the workers' metrics name queues that have no row here: {', '.join(unmatched)}{hint}"
                            )
                    shown = _stats_table(rows, meter is not None)
                    view: ConsoleRenderable = shown if note is None else Group(shown, Text(note))
                    if json_ and watch:
                        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                        print_json({"at": at, "queues": jsonable(rows)}, line=True)
                    elif json_:
                        print_json(jsonable(rows))
                    elif watch:
                        if live is None:
                            live = Live(view, console=out(), auto_refresh=False)
                            live.start()
                        live.update(view, refresh=True)
                    else:
                        out().print(view)
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
    from worker.cli.common import Connection, regional_clients, run_async
    from worker.cli.output import print_json
    from worker.ops.iam import iam_policies
    from worker.ops.topology import load_topology
    from worker.settings import load_settings

    spec = load_topology(topology)
    worker = load_settings(config) if config else None
    default = spec.region or (worker.aws.resolved_region() if worker is not None else None)
    conn = Connection(region or default, endpoint_url, timeout)

    async def go() -> dict[str, object]:
        async with regional_clients(conn) as client:
            return await iam_policies(
                await client("sqs"),
                await client("sns"),
                spec,
                worker,
                account_id,
                conn.target().resolved_region(),
                regional=client,
            )

    print_json(run_async(go, conn))
