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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
import trio
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

from .._args import InsertOpts, Job, JobArgs
from .._client import open_client
from .._config import Config, QueueConfig
from .._driver import Driver, describe_url, open_driver, quote_ident
from .._driver._completer import complete_jobs
from .._driver._producer import fetch_jobs
from .._events import EventKind
from .._flow import FlowControl
from .._migrate import migrate
from .._supervisor import Supervisor, stop_requests
from .._validate import queue_name_problem
from .._worker import Workers
from ..embedded import DATABASE_URL_ENV, resolve_database_url
from ._common import CliError, database_url_option, run_trio, schema_option
from ._tuning import tune_worker_process

__all__ = ["BenchResult", "bench", "bench_child", "percentile"]

DEFAULT_SCHEMA = "rivertrio_bench"
DEFAULT_QUEUE = "bench"
_INSERT_BATCH = 10_000
_DONE_POLL = 0.01
_PROGRESS_POLL = 0.5
_LATENCY_WARMUP = 20
_INSERT_WARMUP = 50
_ADVANCE_EVERY = 100  # inserts between progress updates: a display update costs CPU too
_CHILD_START_TIMEOUT = 60.0


@dataclass
class NoopArgs(JobArgs, kind="bench_noop"):
    """A job that does nothing: the burn-down measures the queue, not the work."""


@dataclass
class LatencyArgs(JobArgs, kind="bench_latency"):
    """Carries its insert time (``time.monotonic()``) so the worker can measure its start."""

    t: float


@dataclass
class BenchResult:
    """One measurement; `as_json` is one line of ``--json`` output."""

    mode: str
    n: int
    seconds: float
    peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        """Jobs per second over the measured time."""
        return self.n / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object: mode, n, seconds, jobs_per_s, peak_rss_mb, extras."""
        return {
            "mode": self.mode,
            "n": self.n,
            "seconds": round(self.seconds, 4),
            "jobs_per_s": round(self.jobs_per_s, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            **self.extra,
        }


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`, nearest-rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _noop_workers() -> Workers:
    workers = Workers()

    @workers.register(NoopArgs)
    async def noop(job: Job[NoopArgs]) -> None:
        pass

    return workers


# --- the database side ------------------------------------------------------


async def _prepare(url: str, schema: str, reset: bool) -> None:
    async with open_driver(url, max_size=1) as admin:
        await admin.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await migrate(url, schema=schema)
    if reset:
        async with open_driver(url, schema=schema, max_size=1) as admin:
            await admin.execute("TRUNCATE /*schema*/river_job, /*schema*/river_queue")


async def _clear_queue(driver: Driver, queue: str) -> None:
    # Only this benchmark's queue: nothing else in the schema is touched.
    await driver.execute("DELETE FROM /*schema*/river_job WHERE queue = $1", queue)
    await driver.execute("VACUUM (ANALYZE) /*schema*/river_job")


async def _analyze(driver: Driver) -> None:
    # Fresh statistics after a bulk insert: with the stale ones (an empty table)
    # the planner may join the fetch's locked ids to river_job by scanning the
    # whole primary key once per locked row (seconds per fetch of 1000).
    await driver.execute("ANALYZE /*schema*/river_job")


async def _remaining(driver: Driver, queue: str) -> int:
    return int(
        await driver.fetchval(
            "SELECT count(*) FROM /*schema*/river_job "
            "WHERE queue = $1 AND state IN ('available', 'running', 'pending')",
            queue,
        )
    )


async def _any_remaining(driver: Driver, queue: str) -> bool:
    return bool(
        await driver.fetchval(
            "SELECT EXISTS (SELECT 1 FROM /*schema*/river_job "
            "WHERE state IN ('available', 'running', 'pending') AND queue = $1)",
            queue,
        )
    )


def _flow(queue: str, flow_limit: int | None) -> dict[str, FlowControl]:
    """``--flow-limit``: the queue's flow rules (held jobs, the flow fetch), or none."""
    return {} if flow_limit is None else {queue: FlowControl(concurrency=flow_limit)}


async def _insert_jobs(
    url: str,
    schema: str,
    queue: str,
    n: int,
    advance: Callable[[int], None],
    flow_limit: int | None = None,
) -> BenchResult:
    opts = InsertOpts(queue=queue)
    started = time.monotonic()
    config = Config(schema=schema, flow=_flow(queue, flow_limit))
    async with open_client(config, database_url=url) as client:
        done = 0
        while done < n:
            batch = min(_INSERT_BATCH, n - done)
            done += await client.insert_many_fast([(NoopArgs(), opts)] * batch)
            advance(batch)
    return BenchResult("insert_fast", n, time.monotonic() - started, peak_rss_mb())


async def _fetch_and_complete(
    conn: Any, schema: str | None, queue: str, limit: int, client_id: str
) -> int:
    """Asyncio side: one fetch of up to `limit` jobs, then one complete of them."""
    rows = await fetch_jobs(conn, schema, queue, limit, client_id)
    if not rows:
        return 0
    ids = [r["id"] for r in rows]
    k = len(ids)
    await complete_jobs(conn, schema, ids, ["completed"] * k, [None] * k, [None] * k, [None] * k)
    return k


async def _ceiling(
    driver: Driver, queue: str, n: int, batch: int, advance: Callable[[int], None]
) -> BenchResult:
    done = 0
    async with driver.connection() as conn:
        started = time.monotonic()
        while True:
            k = await conn.run(
                _fetch_and_complete, driver.configured_schema, queue, batch, "bench_ceiling"
            )
            if not k:
                break
            done += k
            advance(k)
        seconds = time.monotonic() - started
    if done != n:
        raise CliError(f"ceiling: worked {done} jobs, expected {n}")
    return BenchResult("ceiling", n, seconds, peak_rss_mb(), {"batch": batch})


# --- worker processes -------------------------------------------------------


class _Lines:
    """Reads a child process's stdout line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()


@dataclass
class _Child:
    process: trio.Process
    lines: _Lines


@asynccontextmanager
async def _children(
    url: str, schema: str, queue: str, workers: int, processes: int, flow_limit: int | None
) -> AsyncIterator[tuple[Supervisor, list[_Child]]]:
    """Start worker processes and wait until each is ready (clients not started yet).

    They run under a `Supervisor`, as ``rivertrio worker --processes`` runs its
    processes; none is restarted (a bench child that dies fails the bench).
    """
    command = [
        sys.executable,
        "-m",
        "rivertrio",
        "bench-child",
        "--schema",
        schema,
        "--queue",
        queue,
        "--workers",
        str(workers),
        *(() if flow_limit is None else ("--flow-limit", str(flow_limit))),
    ]
    # The URL travels in the environment: a password on a command line is
    # visible to every user of the host.
    supervisor = Supervisor(
        command,
        processes=processes,
        env={**os.environ, DATABASE_URL_ENV: url},
        restart=False,
        pipes=True,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        children = []
        for process in supervisor.children:
            assert process.stdout is not None
            children.append(_Child(process, _Lines(process.stdout)))
        with trio.fail_after(_CHILD_START_TIMEOUT):
            for child in children:
                try:
                    line = await child.lines.readline()
                except EOFError:
                    line = ""
                if line != "ready":
                    code = await child.process.wait()
                    raise CliError(f"a bench worker process failed to start (exit status {code})")
        yield supervisor, children
        nursery.cancel_scope.cancel()


async def _burndown(
    url: str,
    schema: str,
    queue: str,
    n: int,
    workers: int,
    processes: int,
    advance: Callable[[int], None],
    flow_limit: int | None = None,
) -> BenchResult:
    async with (
        open_driver(url, schema=schema, max_size=1) as watcher,
        _children(url, schema, queue, workers, processes, flow_limit) as (supervisor, children),
    ):
        started = time.monotonic()
        for child in children:
            assert child.process.stdin is not None
            await child.process.stdin.send_all(b"go\n")
        next_count = started + _PROGRESS_POLL
        last_remaining = n
        while await _any_remaining(watcher, queue):
            if time.monotonic() >= next_count:
                remaining = await _remaining(watcher, queue)
                advance(last_remaining - remaining)
                last_remaining = remaining
                next_count = time.monotonic() + _PROGRESS_POLL
            await trio.sleep(_DONE_POLL)
        seconds = time.monotonic() - started
        advance(last_remaining)
        supervisor.stop()  # a soft stop: each child reports, then exits
        rss = 0.0
        for child in children:
            report = json.loads(await child.lines.readline())
            rss = max(rss, float(report["peak_rss_mb"]))
            if await child.process.wait() != 0:
                raise CliError(f"a bench worker process exited with {child.process.returncode}")
    extra: dict[str, Any] = {"workers": workers, "processes": processes}
    if flow_limit is not None:
        extra["flow_limit"] = flow_limit
    mode = "burndown" if flow_limit is None else "burndown_flow"
    return BenchResult(mode, n, seconds, rss, extra)


#: Set (to "1") by ``bench --otel`` for its worker processes.
_OTEL_ENV = "RIVERTRIO_BENCH_OTEL"


def _bench_middleware() -> list[Any]:
    """With ``--otel``: the OpenTelemetry middleware on the SDK, spans batched to an
    exporter that drops them and metrics aggregated in memory: all the cost but the wire."""
    if os.environ.get(_OTEL_ENV) != "1":
        return []
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from ..otel import OpenTelemetryMiddleware

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return [OpenTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)]


async def _child_main(
    url: str, schema: str, queue: str, workers: int, flow_limit: int | None
) -> None:
    config = Config(
        schema=schema,
        queues={queue: QueueConfig(max_workers=workers)},
        workers=_noop_workers(),
        middleware=_bench_middleware(),
        flow=_flow(queue, flow_limit),
    )
    # As `rivertrio worker` sets its process up.
    tune_worker_process()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with stop_requests() as requests:
        if (await trio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            return
        async with open_client(config, database_url=url):
            await requests.receive()  # a soft stop on leaving the block
    sys.stdout.write(json.dumps({"peak_rss_mb": peak_rss_mb()}) + "\n")
    sys.stdout.flush()


@click.command("bench-child", hidden=True)
@click.option("--database-url", envvar=DATABASE_URL_ENV, required=True)
@click.option("--schema", required=True)
@click.option("--queue", required=True)
@click.option("--workers", type=int, required=True)
@click.option("--flow-limit", type=int, default=None)
def bench_child(
    database_url: str, schema: str, queue: str, workers: int, flow_limit: int | None
) -> None:
    """A burn-down worker process: "ready", then works from "go" on stdin until SIGTERM."""
    run_trio(_child_main, database_url, schema, queue, workers, flow_limit)


# --- latency ----------------------------------------------------------------


async def _latency(
    url: str,
    schema: str,
    queue: str,
    rate: float,
    duration: float,
    workers: int,
    fetch_cooldown: float,
    advance: Callable[[int], None],
) -> BenchResult:
    starts: dict[int, float] = {}
    completions: dict[int, float] = {}
    total = max(1, round(rate * duration))
    measured: set[int] = set()
    all_done = trio.Event()
    wanted = total + _LATENCY_WARMUP
    latency_workers = Workers()

    @latency_workers.register(LatencyArgs)
    async def record_start(job: Job[LatencyArgs]) -> None:
        starts[job.id] = time.monotonic() - job.args.t

    worker_config = Config(
        schema=schema,
        queues={queue: QueueConfig(max_workers=workers)},
        workers=latency_workers,
        fetch_cooldown=fetch_cooldown,
        fetch_poll_interval=max(1.0, fetch_cooldown),
    )
    # A second, insert-only client: its inserts reach the worker through
    # LISTEN/NOTIFY, as they would from another process.
    insert_config = Config(schema=schema, fetch_cooldown=fetch_cooldown)
    opts = InsertOpts(queue=queue)
    async with (
        open_client(worker_config, database_url=url) as worker_client,
        open_client(insert_config, database_url=url) as inserter,
        worker_client.subscribe(EventKind.JOB_COMPLETED, buffer=10_000) as events,
        trio.open_nursery() as nursery,
    ):

        async def collect() -> None:
            async for event in events:
                assert event.job is not None
                t = json.loads(event.job.encoded_args)["t"]
                completions[event.job.id] = time.monotonic() - t
                if len(completions) >= wanted:
                    all_done.set()

        nursery.start_soon(collect)
        for _ in range(_LATENCY_WARMUP):
            await inserter.insert(LatencyArgs(t=time.monotonic()), opts)

        async def send() -> None:
            result = await inserter.insert(LatencyArgs(t=time.monotonic()), opts)
            measured.add(result.job.id)
            advance(1)

        started = time.monotonic()
        t0 = trio.current_time()
        # Open loop: each insert starts on time, whether or not the ones before
        # it have returned (one after the other, the rate could never exceed one
        # per insert round trip). Concurrent inserts share statements.
        async with trio.open_nursery() as senders:
            for i in range(total):
                await trio.sleep_until(t0 + i / rate)
                senders.start_soon(send)
        seconds = time.monotonic() - started
        with trio.move_on_after(max(30.0, duration)):
            await all_done.wait()
        nursery.cancel_scope.cancel()
    start_ms = [starts[i] * 1000 for i in measured if i in starts]
    done_ms = [completions[i] * 1000 for i in measured if i in completions]
    extra: dict[str, Any] = {
        "rate": rate,
        "fetch_cooldown": fetch_cooldown,
        "workers": workers,
        "missing": total - len(done_ms),
    }
    for name, values in (("start", start_ms), ("complete", done_ms)):
        for q in (50, 95, 99):
            extra[f"{name}_p{q}_ms"] = round(percentile(values, q), 3)
        extra[f"{name}_max_ms"] = round(max(values, default=math.nan), 3)
    return BenchResult("latency", total, seconds, peak_rss_mb(), extra)


# --- insert cost ------------------------------------------------------------


async def _insert_cost(
    url: str,
    schema: str,
    queue: str,
    n: int,
    concurrency: int,
    window: float | None,
    advance: Callable[[int], None],
) -> list[BenchResult]:
    """`n` single inserts one after the other, then `n` from `concurrency` tasks at once.

    Each result gives inserts/s, and the microseconds of this process's CPU
    (`time.process_time`: user and system) and of wall time per insert.
    """
    config = Config(schema=schema)
    if window is not None:
        config = dataclasses.replace(config, insert_coalesce_window=window)
    opts = InsertOpts(queue=queue)
    results: list[BenchResult] = []
    async with open_client(config, database_url=url) as client:
        for _ in range(_INSERT_WARMUP):
            await client.insert(NoopArgs(), opts)

        async def inserts(count: int) -> None:
            for i in range(count):
                await client.insert(NoopArgs(), opts)
                if i % _ADVANCE_EVERY == _ADVANCE_EVERY - 1:
                    advance(_ADVANCE_EVERY)
            advance(count % _ADVANCE_EVERY)

        for tasks in (1, concurrency):
            shares = [n // tasks + (1 if k < n % tasks else 0) for k in range(tasks)]
            wall, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as nursery:
                for share in shares:
                    nursery.start_soon(inserts, share)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            extra = {
                "concurrency": tasks,
                "coalesce_window": config.insert_coalesce_window,
                "cpu_us_per_insert": round(cpu / n * 1e6, 1),
                "wall_us_per_insert": round(wall / n * 1e6, 1),
            }
            results.append(BenchResult("insert", n, wall, peak_rss_mb(), extra))
    return results


# --- the command ------------------------------------------------------------


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
    await _prepare(url, schema, reset)
    results: list[BenchResult] = []

    def report(result: BenchResult) -> None:
        results.append(result)
        emit(result)

    async def fill_queue(
        driver: Driver, description: str, flow_limit: int | None = None
    ) -> BenchResult:
        """Empty the queue, insert `num_jobs` no-op jobs and refresh the statistics."""
        await _clear_queue(driver, queue)
        with _phase(progress, description, num_jobs) as advance:
            inserted = await _insert_jobs(url, schema, queue, num_jobs, advance, flow_limit)
        await _analyze(driver)
        return inserted

    async with open_driver(url, schema=schema, max_size=1) as driver:
        if insert:
            await _clear_queue(driver, queue)
            with _phase(progress, "insert", 2 * num_jobs) as advance:
                for result in await _insert_cost(
                    url, schema, queue, num_jobs, concurrency, coalesce_window, advance
                ):
                    report(result)
            await _clear_queue(driver, queue)
            return results
        if ceiling:
            await fill_queue(driver, "insert (ceiling)")
            with _phase(progress, "ceiling", num_jobs) as advance:
                report(await _ceiling(driver, queue, num_jobs, workers, advance))
        if not latency:
            report(await fill_queue(driver, "insert"))
            with _phase(progress, "burn-down", num_jobs) as advance:
                result = await _burndown(url, schema, queue, num_jobs, workers, processes, advance)
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
                    result = await _burndown(
                        url, schema, queue, num_jobs, workers, processes, advance, flow_limit
                    )
                result.extra["ratio_to_plain"] = round(result.jobs_per_s / plain.jobs_per_s, 3)
                report(result)
        else:
            await _clear_queue(driver, queue)
            total = max(1, round(rate * duration))
            with _phase(progress, f"latency at {rate:g} jobs/s", total) as advance:
                report(
                    await _latency(
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
        os.environ[_OTEL_ENV] = "1"
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
