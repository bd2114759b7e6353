"""``rivertrio bench``: throughput (burn-down), the database's ceiling, and latency.

Everything happens in a schema of the benchmark's own (``rivertrio_bench``,
created and migrated if missing) and on a queue of its own (``bench``). Only that
queue's rows are deleted between runs; ``--reset`` empties the whole schema.

- burn-down: N no-op jobs are inserted (COPY), then worked by P worker
  processes with ``--workers`` slots each (run by a supervisor, as
  ``rivertrio worker --processes`` runs them); the time from starting the
  clients to the last outcome being persisted gives jobs/s.
- ceiling (``--ceiling``): the same fetch and complete statements the client
  uses, run back to back on one connection with no per-job Python work, over
  the same N jobs: how fast the database itself goes.
- latency (``--latency``): jobs inserted at a fixed rate by one client and
  worked by another (woken through LISTEN/NOTIFY, as across processes); reports
  insert-to-start and insert-to-persisted-completion percentiles. The inserts
  start on time whatever the ones before them are doing (open loop).
- insert cost (``--insert``): N single ``client.insert()`` calls one after the
  other, then N from ``--concurrency`` tasks at once; inserts/s, and this
  process's CPU time per insert (`time.process_time`; exact with ``--json``,
  where no progress display runs).

Each mode has a module of its own (``_bench_burndown``, ``_bench_ceiling``,
``_bench_latency``, ``_bench_insert``); here are the options, the order the
phases run in, and the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .._driver import Driver, describe_url, open_driver
from .._validate import queue_name_problem
from ..embedded import resolve_database_url
from ._bench_burndown import OTEL_ENV, bench_child, burndown
from ._bench_ceiling import measure_ceiling
from ._bench_common import BenchResult, analyze, clear_queue, insert_jobs, percentile, prepare
from ._bench_insert import insert_cost
from ._bench_latency import measure_latency
from ._common import database_url_option, run_trio, schema_option

__all__ = ["BenchResult", "bench", "bench_child", "percentile"]

DEFAULT_SCHEMA = "rivertrio_bench"
DEFAULT_QUEUE = "bench"


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} jobs/s", style="cyan")


@contextmanager
def _phase(
    progress: Progress | None, description: str, total: int
) -> Iterator[Callable[[int], None]]:
    if progress is None:
        yield lambda k: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda k: progress.advance(task, k)
    finally:
        progress.stop_task(task)


async def run_bench(
    database_url: str | None,
    *,
    schema: str,
    queue: str,
    num_jobs: int,
    workers: int,
    processes: int,
    latency: bool,
    rate: float,
    duration: float,
    fetch_cooldown: float,
    ceiling: bool,
    reset: bool,
    emit: Callable[[BenchResult], None],
    progress: Progress | None,
    insert: bool = False,
    concurrency: int = 20,
    coalesce_window: float | None = None,
    flow_limit: int | None = None,
) -> list[BenchResult]:
    """Run the benchmark's phases in order, calling `emit` with each result. A checkpoint."""
    url = await resolve_database_url(database_url)
    await prepare(url, schema, reset)
    results: list[BenchResult] = []

    def report(result: BenchResult) -> None:
        results.append(result)
        emit(result)

    async def fill_queue(
        driver: Driver, description: str, flow_limit: int | None = None
    ) -> BenchResult:
        """Empty the queue, insert `num_jobs` no-op jobs and refresh the statistics."""
        await clear_queue(driver, queue)
        with _phase(progress, description, num_jobs) as advance:
            inserted = await insert_jobs(url, schema, queue, num_jobs, advance, flow_limit)
        await analyze(driver)
        return inserted

    async with open_driver(url, schema=schema, max_size=1) as driver:
        if insert:
            await clear_queue(driver, queue)
            with _phase(progress, "insert", 2 * num_jobs) as advance:
                for result in await insert_cost(
                    url, schema, queue, num_jobs, concurrency, coalesce_window, advance
                ):
                    report(result)
            await clear_queue(driver, queue)
            return results
        if ceiling:
            await fill_queue(driver, "insert (ceiling)")
            with _phase(progress, "ceiling", num_jobs) as advance:
                report(await measure_ceiling(driver, queue, num_jobs, workers, advance))
        if not latency:
            report(await fill_queue(driver, "insert"))
            with _phase(progress, "burn-down", num_jobs) as advance:
                result = await burndown(url, schema, queue, num_jobs, workers, processes, advance)
            ceilings = [r for r in results if r.mode == "ceiling"]
            if ceilings:
                result.extra["ratio_to_ceiling"] = round(
                    result.jobs_per_s / ceilings[0].jobs_per_s, 3
                )
            report(result)
            if flow_limit is not None:
                # The same burn-down with the queue under flow control (held jobs,
                # the flow fetch): its cost, from the same run.
                plain = result
                report(await fill_queue(driver, "insert (flow)", flow_limit))
                with _phase(progress, "burn-down (flow)", num_jobs) as advance:
                    result = await burndown(
                        url, schema, queue, num_jobs, workers, processes, advance, flow_limit
                    )
                result.extra["ratio_to_plain"] = round(result.jobs_per_s / plain.jobs_per_s, 3)
                report(result)
        else:
            await clear_queue(driver, queue)
            total = max(1, round(rate * duration))
            with _phase(progress, f"latency at {rate:g} jobs/s", total) as advance:
                report(
                    await measure_latency(
                        url, schema, queue, rate, duration, workers, fetch_cooldown, advance
                    )
                )
    return results


def _table(results: list[BenchResult], where: str) -> Table:
    table = Table(title=f"rivertrio bench on {where}", title_justify="left")
    for name in ("mode", "jobs", "seconds", "jobs/s", "peak RSS", "notes"):
        table.add_column(name, justify="left" if name in ("mode", "notes") else "right")
    for r in results:
        notes = ", ".join(
            f"{k}={v}" for k, v in r.extra.items() if not k.startswith(("start_", "complete_"))
        )
        table.add_row(
            r.mode,
            f"{r.n:,}",
            f"{r.seconds:.2f}",
            f"{r.jobs_per_s:,.0f}",
            f"{r.peak_rss_mb:.0f} MB",
            notes,
        )
    return table


def _latency_table(result: BenchResult) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    for name in ("", "p50", "p95", "p99", "max"):
        table.add_column(name, justify="right")
    for name, label in (("start", "insert to start"), ("complete", "insert to completed")):
        table.add_row(
            label, *(f"{result.extra[f'{name}_{q}_ms']:.2f}" for q in ("p50", "p95", "p99", "max"))
        )
    return table


@click.command()
@database_url_option
@schema_option(default=DEFAULT_SCHEMA, help="The benchmark's own schema (created if missing).")
@click.option(
    "--queue",
    default=DEFAULT_QUEUE,
    show_default=True,
    help="The benchmark's own queue; its jobs are deleted before each phase.",
)
@click.option(
    "--num-jobs",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Burn-down (and ceiling): how many no-op jobs.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="max_workers of each worker client (also the ceiling's batch size).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Burn-down: how many worker processes share the jobs.",
)
@click.option("--ceiling", is_flag=True, help="Also measure the database's own ceiling.")
@click.option("--latency", is_flag=True, help="Measure latency instead of burn-down throughput.")
@click.option(
    "--insert",
    is_flag=True,
    help="Measure the cost of single inserts instead: --num-jobs in a row, then as many "
    "from --concurrency tasks.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="Insert: how many tasks insert at once.",
)
@click.option(
    "--coalesce-window",
    type=click.FloatRange(min=0, max=1),
    default=None,
    help="Insert: the client's insert_coalesce_window in seconds (default: the Config's).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=100_000),
    default=200.0,
    show_default=True,
    help="Latency: jobs inserted per second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1, max=3600),
    default=10.0,
    show_default=True,
    help="Latency: seconds of inserting.",
)
@click.option(
    "--fetch-cooldown",
    type=click.FloatRange(min=0.001),
    default=0.001,
    show_default=True,
    help="Latency: the clients' fetch_cooldown (it also spaces insert notifications).",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Burn-down: the workers run the OpenTelemetry middleware (needs opentelemetry-sdk).",
)
@click.option(
    "--flow-limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Burn-down: run it again with the queue under flow control, at most N jobs "
    "running across every process (--workers x --processes lets all run), and compare.",
)
@click.option("--reset", is_flag=True, help="Empty the benchmark schema (every queue) first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result.")
def bench(database_url: str | None, as_json: bool, otel: bool, **options: Any) -> None:
    """Benchmark throughput (burn-down) or latency against any Postgres.

    Burn-down (the default): --num-jobs no-op jobs are inserted, then worked by
    --processes worker processes with --workers slots each; reports jobs/s.
    With --ceiling, the same fetch and complete statements are first run back
    to back on one connection with no per-job Python work: the database's own
    ceiling, to compare with. --latency inserts --rate jobs/s for --duration
    seconds from one client into another, idle one, and reports p50/p95/p99
    insert-to-start and insert-to-completion (persisted) times. --insert
    times --num-jobs single inserts in a row, then as many from --concurrency
    tasks: inserts/s and client CPU microseconds per insert (with --json, no
    progress display adds to the CPU).

    Uses its own schema (rivertrio_bench) and queue (bench); deletes nothing
    else unless --reset.
    """
    if otel:
        # Read by the worker processes, which inherit the environment.
        os.environ[OTEL_ENV] = "1"
    # The other options are `run_bench`'s keyword arguments, by the same names.
    problem = queue_name_problem(options["queue"])
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--queue")
    if options["insert"] and (options["latency"] or options["ceiling"]):
        raise click.UsageError("--insert measures inserts alone: drop --latency and --ceiling")
    if as_json:

        def emit(result: BenchResult) -> None:
            click.echo(json.dumps(result.as_json()))

        run_trio(run_bench, database_url, **options, emit=emit, progress=None)
        return

    console = Console()
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with progress:
        results = run_trio(
            run_bench, database_url, **options, emit=lambda result: None, progress=progress
        )
    where = describe_url(database_url) if database_url else "the embedded Postgres"
    console.print(_table(results, where))
    for result in results:
        if result.mode == "latency":
            console.print(_latency_table(result))
    console.print(f"peak RSS is per process; {os.cpu_count()} CPUs")
