"""``worker provision``: make AWS match the topology file, showing the plan first."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.options import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOPOLOGY,
    EndpointOption,
    RegionOption,
    TimeoutOption,
    TopologyOption,
)
from worker.errors import UnsafeError

if TYPE_CHECKING:
    from worker.cli.common import Connection
    from worker.ops.provision import Provisioner
    from worker.ops.topology import Topology


@contextlib.asynccontextmanager
async def provisioner(spec: Topology, conn: Connection) -> AsyncIterator[Provisioner]:
    """A Provisioner with the session region's SQS, SNS and CloudWatch clients (S3 when the
    topology declares buckets, DynamoDB when it declares tables), opening clients for the
    other regions the file names on first use."""
    from worker.cli.common import regional_clients
    from worker.ops.provision import Provisioner

    async with regional_clients(conn) as client:
        yield Provisioner(
            spec,
            await client("sqs"),
            await client("sns"),
            await client("s3") if spec.buckets else None,
            await client("dynamodb") if spec.tables else None,
            await client("cloudwatch"),
            regional=client,
        )


def provision(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also delete what this topology's name: created earlier and the file no longer lists.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting (--prune).")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Let --prune delete queues that still hold messages.")
    ] = False,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Make AWS match the topology file: queues, DLQs, topics, subscriptions, buckets and
    their notifications, tables, CloudWatch alarms, in every region it names (plan first)."""
    from worker.cli.common import Connection, run_async
    from worker.cli.output import info
    from worker.ops.provision import render_plan
    from worker.ops.topology import load_topology

    spec = load_topology(topology)
    conn = Connection(region or spec.region, endpoint_url, timeout)  # the file's region: its default

    async def go() -> int:
        # One read of AWS: the plan shown is the plan applied (the question, if any, is
        # asked in between; nothing else runs on the loop meanwhile).
        async with provisioner(spec, conn) as p:
            changes = await p.plan()
            deletions = await p.plan_prune() if prune else []
            if prune:
                info(f"prune scope: resources tagged with topology name {spec.name!r} (name: in {topology})")
            else:
                info(f"topology {spec.name!r} ({topology}): what it creates is tagged with this name")
            typer.echo(render_plan(changes + deletions))
            pending = [c for c in changes + deletions if c.action not in ("unchanged", "foreign")]
            if not pending:
                foreign = sum(1 for c in changes if c.action == "foreign")
                typer.echo(
                    f"No changes to make; {foreign} resource(s) of another topology left as they are (marked '!')."
                    if foreign
                    else f"No changes: AWS matches {topology}."
                )
                return 0
            if dry_run:
                typer.echo("Dry run: nothing changed.")
                return 0
            if deletions and not yes:
                if not sys.stdin.isatty():
                    raise UnsafeError(
                        f"--prune would delete {len(deletions)} resource(s); pass --yes to confirm"
                    )
                if not typer.confirm(
                    f"Delete {len(deletions)} resource(s) listed above with '-'?", default=False
                ):
                    raise UnsafeError("not confirmed: nothing changed")
            await p.apply(changes)
            if deletions:
                for name in await p.apply_prune(deletions, force=force):
                    info(f"removed the redrive policy of {name} (it pointed at a deleted queue)")
            return len(pending)

    applied = run_async(go, conn)
    if applied:
        typer.echo(f"Applied {applied} change(s).")
