"""``rivertrio queues list|pause|resume``: see and control queues from a shell."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

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
    """List the queues that clients have worked, with job counts by state."""

    async def run() -> tuple[list[Queue], dict[str, dict[str, int]]]:
        async with admin_client(database_url, schema) as client:
            rows = await client.queue_list()
            recs = await client.driver.fetch(
                "SELECT queue, state::text AS state, count(*) AS n "
                "FROM /*schema*/river_job GROUP BY queue, state"
            )
        counts: dict[str, dict[str, int]] = {}
        for r in recs:
            counts.setdefault(r["queue"], {})[r["state"]] = r["n"]
        return rows, counts

    rows, counts = run_trio(run)
    if as_json:
        for q in rows:
            click.echo(
                json.dumps(
                    {
                        "name": q.name,
                        "paused": q.paused,
                        "paused_at": q.paused_at.isoformat() if q.paused_at else None,
                        "created_at": q.created_at.isoformat(),
                        "updated_at": q.updated_at.isoformat(),
                        "jobs": counts.get(q.name, {}),
                    }
                )
            )
        return
    console = Console()
    if not rows:
        console.print("no queues yet (a queue appears once a client works it)")
        return
    table = Table(box=None, header_style="bold")
    for name in ("name", "status", "available", "running", "scheduled", "retryable", "updated"):
        table.add_column(name, justify="left" if name in ("name", "status", "updated") else "right")
    for q in rows:
        jobs = counts.get(q.name, {})
        table.add_row(
            q.name,
            "paused" if q.paused else "active",
            *(str(jobs.get(s, 0)) for s in ("available", "running", "scheduled", "retryable")),
            format_time(q.updated_at, short=True),
        )
    console.print(table)


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
