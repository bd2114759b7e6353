"""``rivertrio queues list|pause|resume``: see and control queues from a shell."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._params import Queue
from ._common import admin_client, database_url_option, format_time, run_trio, schema_option

__all__ = ["queues"]

_name = click.argument("name", metavar="NAME")


@click.group()
def queues() -> None:
    """List, pause and resume queues."""


@queues.command(name="list")
@database_url_option
@schema_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per queue.")
def list_(database_url: str | None, schema: str | None, as_json: bool) -> None:
    """List the queues that clients have worked, with job counts by state and metadata,
    and the current leader (which client runs maintenance, since when)."""

    async def run() -> tuple[list[Queue], dict[str, dict[str, int]], Any]:
        async with admin_client(database_url, schema) as client:
            rows = await client.queue_list()
            recs = await client.driver.fetch(
                "SELECT queue, state::text AS state, count(*) AS n "
                "FROM /*schema*/river_job GROUP BY queue, state"
            )
            leader = await client.driver.fetchrow(
                "SELECT leader_id, elected_at, expires_at FROM /*schema*/river_leader"
            )
        counts: dict[str, dict[str, int]] = {}
        for r in recs:
            counts.setdefault(r["queue"], {})[r["state"]] = r["n"]
        return rows, counts, leader

    rows, counts, leader = run_trio(run)
    if as_json:
        term = (
            None
            if leader is None
            else {
                "id": leader["leader_id"],
                "elected_at": leader["elected_at"].isoformat(),
                "expires_at": leader["expires_at"].isoformat(),
            }
        )
        for q in rows:
            click.echo(
                json.dumps(
                    {
                        "name": q.name,
                        "paused": q.paused,
                        "paused_at": q.paused_at.isoformat() if q.paused_at else None,
                        "created_at": q.created_at.isoformat(),
                        "updated_at": q.updated_at.isoformat(),
                        "metadata": q.metadata,
                        "jobs": counts.get(q.name, {}),
                        "leader": term,
                    }
                )
            )
        return
    console = Console()
    if leader is None:
        console.print("leader: none (no client leads now)")
    else:
        console.print(
            f"leader: {leader['leader_id']}, elected {format_time(leader['elected_at'])}, "
            f"term expires {format_time(leader['expires_at'], short=True)}",
            markup=False,
        )
    if not rows:
        console.print("no queues yet (a queue appears once a client works it)")
        return
    table = Table(box=None, header_style="bold")
    columns = ("name", "status", "available", "running", "scheduled", "retryable", "updated")
    for name in columns:
        table.add_column(name, justify="right" if name in _COUNTED else "left")
    table.add_column("metadata", overflow="fold")
    for q in rows:
        jobs = counts.get(q.name, {})
        table.add_row(
            q.name,
            "paused" if q.paused else "active",
            *(str(jobs.get(s, 0)) for s in _COUNTED),
            format_time(q.updated_at, short=True),
            # Text, not markup: metadata is the user's, brackets and all.
            Text(json.dumps(q.metadata, separators=(",", ":"))) if q.metadata else "-",
        )
    console.print(table)


_COUNTED = ("available", "running", "scheduled", "retryable")


def _set_paused(database_url: str | None, schema: str | None, name: str, paused: bool) -> None:
    async def run() -> None:
        async with admin_client(database_url, schema) as client:
            if paused:
                await client.queue_pause(name)
            else:
                await client.queue_resume(name)

    run_trio(run)
    what = "every queue" if name == "*" else f"queue {name}"
    click.echo(f"{what}: {'paused' if paused else 'resumed'}")


@queues.command()
@_name
@database_url_option
@schema_option()
def pause(name: str, database_url: str | None, schema: str | None) -> None:
    """Pause a queue ("*" = every queue): no client fetches its jobs until resumed."""
    _set_paused(database_url, schema, name, paused=True)


@queues.command()
@_name
@database_url_option
@schema_option()
def resume(name: str, database_url: str | None, schema: str | None) -> None:
    """Resume a paused queue ("*" = every queue)."""
    _set_paused(database_url, schema, name, paused=False)
