"""``rivertrio jobs list|get|cancel|retry|delete``: inspect and manage jobs from a shell."""

from __future__ import annotations

import json
from typing import Any, Literal

import click
from rich.console import Console
from rich.table import Table

from .._job import JobRow, JobState
from .._params import JobListCursor, JobListParams
from ._common import admin_client, database_url_option, format_time, run_trio, schema_option

__all__ = ["job_json", "jobs"]

_STATES = tuple(s.value for s in JobState)
_job_id = click.argument("job_id", metavar="ID", type=click.IntRange(min=1))


def job_json(job: JobRow) -> dict[str, Any]:
    """A job as a JSON object: every column, args decoded, times in ISO 8601."""

    def when(value: Any) -> Any:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "state": str(job.state),
        "kind": job.kind,
        "queue": job.queue,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "args": json.loads(job.encoded_args),
        "created_at": when(job.created_at),
        "scheduled_at": when(job.scheduled_at),
        "attempted_at": when(job.attempted_at),
        "finalized_at": when(job.finalized_at),
        "attempted_by": job.attempted_by,
        "tags": job.tags,
        "metadata": job.metadata,
        "errors": [
            {"at": when(e.at), "attempt": e.attempt, "error": e.error, "trace": e.trace}
            for e in job.errors
        ],
    }


@click.group()
def jobs() -> None:
    """List, inspect, cancel, retry and delete jobs."""


@jobs.command(name="list")
@database_url_option
@schema_option()
@click.option("--state", "states", multiple=True, type=click.Choice(_STATES), help="Repeatable.")
@click.option("--kind", "kinds", multiple=True, help="Job kind; repeatable.")
@click.option("--queue", "queues", multiple=True, help="Queue name; repeatable.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Rows to show."
)
@click.option(
    "--after",
    "after",
    type=click.IntRange(min=1),
    default=None,
    metavar="ID",
    help="Show the jobs after this id (the next page).",
)
@click.option(
    "--order",
    type=click.Choice(["asc", "desc"]),
    default="desc",
    show_default=True,
    help="By id: newest first (desc) or oldest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per job.")
def list_(
    database_url: str | None,
    schema: str | None,
    states: tuple[str, ...],
    kinds: tuple[str, ...],
    queues: tuple[str, ...],
    limit: int,
    after: int | None,
    order: Literal["asc", "desc"],
    as_json: bool,
) -> None:
    """List jobs, newest first, with filters."""
    params = JobListParams(
        states=states or None,
        kinds=kinds or None,
        queues=queues or None,
        order=order,
        limit=limit,
        after=JobListCursor(order_by="id", id=after) if after is not None else None,
    )

    async def run() -> list[JobRow]:
        async with admin_client(database_url, schema) as client:
            return (await client.job_list(params)).jobs

    rows = run_trio(run)
    if as_json:
        for row in rows:
            click.echo(json.dumps(job_json(row)))
        return
    console = Console()
    if not rows:
        console.print("no jobs match")
        return
    header = ("id", "state", "kind", "queue", "attempt", "scheduled")
    cells = [
        (
            str(row.id),
            str(row.state),
            row.kind,
            row.queue,
            f"{row.attempt}/{row.max_attempts}",
            format_time(row.scheduled_at, short=True),
        )
        for row in rows
    ]
    # Every column keeps its width; the args are cut to what is left of the line.
    used = sum(max(len(h), *(len(c[i]) for c in cells)) + 2 for i, h in enumerate(header))
    room = max(16, console.width - used - 3)
    table = Table(box=None, header_style="bold")
    for name in header:
        table.add_column(name, justify="right" if name in ("id", "attempt") else "left")
    table.add_column("args", no_wrap=True)
    for row, fixed in zip(rows, cells, strict=True):
        text = row.encoded_args
        table.add_row(*fixed, text if len(text) <= room else text[: room - 1] + "…")
    console.print(table)
    if len(rows) == limit:
        console.print(f"more: --after {rows[-1].id}", style="dim")


def _print_job(job: JobRow) -> None:
    console = Console()
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in (
        ("id", str(job.id)),
        ("state", str(job.state)),
        ("kind", job.kind),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("args", job.encoded_args),
        ("created", format_time(job.created_at)),
        ("scheduled", format_time(job.scheduled_at)),
        ("attempted", format_time(job.attempted_at)),
        ("finalized", format_time(job.finalized_at)),
        ("attempted by", ", ".join(job.attempted_by) or "-"),
        ("tags", ", ".join(job.tags) or "-"),
        ("metadata", json.dumps(job.metadata)),
    ):
        table.add_row(name, value)
    progress = job.progress
    if progress is not None:
        at = f" (at {format_time(progress.at)})" if progress.at is not None else ""
        table.add_row("progress", f"{progress.value:g} {progress.message}".rstrip() + at)
    if "output" in job.metadata:
        table.add_row("output", json.dumps(job.output))
    console.print(table, highlight=False)
    for error in job.errors:
        console.print(
            f"[bold]attempt {error.attempt}[/] failed {format_time(error.at)}: {error.error}",
            highlight=False,
        )


@jobs.command()
@_job_id
@database_url_option
@schema_option()
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
def get(job_id: int, database_url: str | None, schema: str | None, as_json: bool) -> None:
    """Show one job, with its errors."""

    async def run() -> JobRow:
        async with admin_client(database_url, schema) as client:
            return await client.job_get(job_id)

    job = run_trio(run)
    if as_json:
        click.echo(json.dumps(job_json(job)))
    else:
        _print_job(job)


@jobs.command()
@_job_id
@database_url_option
@schema_option()
def cancel(job_id: int, database_url: str | None, schema: str | None) -> None:
    """Cancel a job; a running one is cancelled by the client running it."""

    async def run() -> JobRow:
        async with admin_client(database_url, schema) as client:
            return await client.job_cancel(job_id)

    job = run_trio(run)
    if job.state is JobState.RUNNING:
        click.echo(f"job {job.id}: cancel requested; its client cancels it now (still running)")
    else:
        click.echo(f"job {job.id}: {job.state}")


@jobs.command()
@_job_id
@database_url_option
@schema_option()
def retry(job_id: int, database_url: str | None, schema: str | None) -> None:
    """Make a job available to run again now (a running job is left alone)."""

    async def run() -> JobRow:
        async with admin_client(database_url, schema) as client:
            return await client.job_retry(job_id)

    job = run_trio(run)
    click.echo(f"job {job.id}: {job.state}")


@jobs.command()
@_job_id
@database_url_option
@schema_option()
def delete(job_id: int, database_url: str | None, schema: str | None) -> None:
    """Delete a job that is not running."""

    async def run() -> JobRow:
        async with admin_client(database_url, schema) as client:
            return await client.job_delete(job_id)

    job = run_trio(run)
    click.echo(f"job {job.id}: deleted (was {job.state})")
