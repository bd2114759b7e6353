"""``rivertrio demo``: a realistic mix of jobs worked live, then a summary.

It runs on the embedded Postgres unless a URL is given, in a schema of its own
(``rivertrio_demo``) that is dropped and recreated on every run, so reruns start
clean and nothing else in the database is touched.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import click
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .._args import InsertOpts, InsertParams, Job, JobArgs
from .._client import Client, open_client
from .._config import Config, QueueConfig
from .._driver import Driver, describe_url, open_driver, quote_ident
from .._events import Event, EventKind
from .._exceptions import JobSnooze
from .._job import JobRow
from .._migrate import migrate
from .._worker import Workers
from ..embedded import resolve_database_url
from ._common import database_url_option, fail, run_trio, schema_option

__all__ = ["DemoResult", "demo", "run_demo"]

DEFAULT_SCHEMA = "rivertrio_demo"
_MIN_JOBS = 20
_REFRESH = 0.25


# --- the jobs ---------------------------------------------------------------


@dataclass
class SendEmail(JobArgs, kind="send_email"):
    """Send one transactional email; the mail server sometimes asks to try later."""

    to: str
    template: str


@dataclass
class ResizeImage(JobArgs, kind="resize_image"):
    """Make a thumbnail of an uploaded image."""

    image_id: int
    width: int


@dataclass
class SyncInventory(JobArgs, kind="sync_inventory"):
    """Pull stock levels from a warehouse whose API is still warming up (snoozes once)."""

    warehouse: str


@dataclass
class ChargeCard(JobArgs, kind="charge_card"):
    """Charge an order; a declined card fails every attempt and ends discarded."""

    order_id: int
    card: str


@dataclass
class GenerateReport(JobArgs, kind="generate_report"):
    """A report scheduled to run a few seconds after it is inserted."""

    name: str


@dataclass
class ExportArchive(JobArgs, kind="export_archive"):
    """A long export that the operator cancels while it runs."""

    account_id: int


KINDS = (
    SendEmail.kind,
    ResizeImage.kind,
    SyncInventory.kind,
    ChargeCard.kind,
    GenerateReport.kind,
    ExportArchive.kind,
)

_DECLINED_CARD = "4000-0000-0000-0002"
_REPORT_DELAY = 3.0
_EXPORT_RUNS_FOR = 1.5


@dataclass
class _State:
    """What the workers and the demo share within one run."""

    export_started: trio.Event = field(default_factory=trio.Event)


def _demo_retry_policy(job: JobRow) -> float:
    # Short on purpose, so retries happen while you watch: 0.25 s, 0.5 s, 0.75 s...
    return 0.25 * (len(job.errors) + 1)


def _workers(state: _State) -> Workers:
    workers = Workers()

    @workers.register(SendEmail)
    async def send_email(job: Job[SendEmail]) -> None:
        await trio.sleep(random.uniform(0.005, 0.03))
        # About one email in ten is refused on its first attempt, as SMTP servers do.
        if job.attempt == 1 and random.Random(job.id).random() < 0.1:
            raise ConnectionError(f"421 {job.args.to.split('@')[1]}: try again later")

    @workers.register(ResizeImage)
    async def resize_image(job: Job[ResizeImage]) -> None:
        await trio.sleep(random.uniform(0.01, 0.06))

    @workers.register(SyncInventory)
    async def sync_inventory(job: Job[SyncInventory]) -> None:
        if job.metadata.get("snoozes", 0) == 0:
            raise JobSnooze(1.0)
        await trio.sleep(0.05)

    @workers.register(ChargeCard)
    async def charge_card(job: Job[ChargeCard]) -> None:
        await trio.sleep(0.01)
        if job.args.card == _DECLINED_CARD:
            raise ValueError(f"order {job.args.order_id}: card declined")

    @workers.register(GenerateReport)
    async def generate_report(job: Job[GenerateReport]) -> None:
        await trio.sleep(0.3)

    @workers.register(ExportArchive)
    async def export_archive(job: Job[ExportArchive]) -> None:
        state.export_started.set()
        # Far longer than the demo: the demo cancels it (job_cancel) while it runs,
        # which arrives here as trio.Cancelled.
        await trio.sleep(600)

    return workers


def demo_config(schema: str, state: _State) -> Config:
    """The demo's client config: short intervals so that it is lively."""
    return Config(
        schema=schema,
        queues={
            "default": QueueConfig(max_workers=50),
            "media": QueueConfig(max_workers=30),
            "reports": QueueConfig(max_workers=2),
        },
        workers=_workers(state),
        fetch_cooldown=0.02,
        fetch_poll_interval=0.1,
        retry_policy=_demo_retry_policy,
        job_timeout=30.0,
        rescue_stuck_jobs_after=60.0,
    )


def _mix(total: int, rng: random.Random) -> list[InsertParams]:
    """The bulk of the demo's jobs: emails, images, inventory syncs, card charges."""
    params: list[InsertParams] = []
    syncs = max(2, total // 100)
    charges = max(2, total // 200)
    images = (total - syncs - charges) * 2 // 5
    emails = total - syncs - charges - images
    templates = ("welcome", "receipt", "password_reset", "weekly_digest")
    domains = ("example.com", "example.org", "example.net")
    for i in range(emails):
        args = SendEmail(to=f"user{i}@{rng.choice(domains)}", template=rng.choice(templates))
        params.append((args, InsertOpts(tags=[args.template])))
    media = InsertOpts(queue="media")
    params.extend(
        (ResizeImage(image_id=i, width=rng.choice((128, 256))), media) for i in range(images)
    )
    params.extend(SyncInventory(warehouse=f"wh-{i}") for i in range(syncs))
    for i in range(charges):
        card = _DECLINED_CARD if i % 2 == 0 else "4242-4242-4242-4242"
        params.append((ChargeCard(order_id=1000 + i, card=card), InsertOpts(max_attempts=3)))
    rng.shuffle(params)
    return params


# --- bookkeeping -------------------------------------------------------------


@dataclass
class DemoResult:
    """What one demo run did, for the summary (and the tests)."""

    total: int
    seconds: float
    by_kind_state: dict[str, Counter[str]]
    events: dict[str, Counter[EventKind]]
    run_seconds: dict[str, float]
    left_running: int
    unfinished: int


@dataclass
class _Progress:
    total: int
    states: Counter[str] = field(default_factory=Counter)
    events: dict[str, Counter[EventKind]] = field(default_factory=lambda: defaultdict(Counter))
    run_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    finished_times: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def record(self, event: Event) -> None:
        if event.job is None:
            return
        self.events[event.job.kind][event.kind] += 1
        if event.stats is not None:
            self.run_seconds[event.job.kind] += event.stats.run_duration
        if event.kind in (EventKind.JOB_COMPLETED, EventKind.JOB_CANCELLED) or (
            event.kind is EventKind.JOB_FAILED and event.job.state == "discarded"
        ):
            self.finished_times.append(time.monotonic())

    def rate(self, window: float = 1.0) -> float:
        now = time.monotonic()
        recent = 0
        for t in reversed(self.finished_times):
            if now - t > window:
                break
            recent += 1
        return recent / window

    @property
    def finalized(self) -> int:
        return sum(self.states[s] for s in ("completed", "cancelled", "discarded"))


_STATE_ORDER = (
    "available",
    "scheduled",
    "running",
    "retryable",
    "completed",
    "cancelled",
    "discarded",
)
_STATE_STYLE = {
    "available": "cyan",
    "scheduled": "magenta",
    "running": "yellow",
    "retryable": "red",
    "completed": "green",
    "cancelled": "bright_black",
    "discarded": "red",
}


def _live_view(progress: _Progress) -> Group:
    elapsed = time.monotonic() - progress.started
    table = Table(
        title=f"rivertrio demo: {progress.total:,} jobs",
        title_justify="left",
        box=None,
        header_style="bold",
    )
    for state in _STATE_ORDER:
        table.add_column(state, justify="right", style=_STATE_STYLE[state])
    table.add_row(*(f"{progress.states.get(s, 0):,}" for s in _STATE_ORDER))
    done = progress.finalized
    retries = sum(c[EventKind.JOB_FAILED] for c in progress.events.values())
    snoozes = sum(c[EventKind.JOB_SNOOZED] for c in progress.events.values())
    line = Text(
        f"{done:,}/{progress.total:,} finished  |  {progress.rate():,.0f} jobs/s  |  "
        f"{retries} failed attempts  |  {snoozes} snoozes  |  {elapsed:.1f} s"
    )
    return Group(table, line)


async def _count_states(
    where: Driver | str, schema: str | None = None
) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Jobs by state, and by kind and state: on a driver, or on a URL and schema."""
    if isinstance(where, str):
        async with open_driver(where, schema=schema, max_size=1) as driver:
            return await _count_states(driver)
    rows = await where.fetch(
        "SELECT kind, state::text AS state, count(*) AS n FROM /*schema*/river_job "
        "GROUP BY kind, state"
    )
    states: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        states[r["state"]] += r["n"]
        by_kind[r["kind"]][r["state"]] += r["n"]
    return states, by_kind


async def _cancel_export(client: Client, state: _State, export_id: int) -> None:
    await state.export_started.wait()
    await trio.sleep(_EXPORT_RUNS_FOR)  # let it be seen running first
    await client.job_cancel(export_id)


async def _recreate_schema(url: str, schema: str) -> None:
    async with open_driver(url) as admin:
        await admin.execute(
            f"SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE; "
            f"CREATE SCHEMA {quote_ident(schema)}"
        )
    await migrate(url, schema=schema)


async def run_demo(
    database_url: str | None,
    *,
    schema: str = DEFAULT_SCHEMA,
    jobs: int = 3000,
    give_up_after: float = 50.0,
    console: Console | None = None,
    seed: int | None = None,
) -> DemoResult:
    """Run the demo: recreate `schema`, insert `jobs` jobs, work them live, summarise.

    A checkpoint. The client is stopped (softly, or hard after `give_up_after` seconds) before
    this returns, and the result says whether anything was left unfinished.
    """
    console = console or Console()
    rng = random.Random(seed)
    url = await resolve_database_url(database_url)
    where = describe_url(url)
    source = "the embedded Postgres" if not database_url else where
    console.print(
        f"[bold]rivertrio demo[/] on {source}, schema [bold]{schema}[/] (recreated)",
        soft_wrap=True,
    )
    await _recreate_schema(url, schema)

    state = _State()
    config = demo_config(schema, state)
    bulk = _mix(jobs - 4, rng)
    progress = _Progress(total=jobs)
    started = time.monotonic()
    finished = False
    async with open_client(config, database_url=url) as client:
        async with (
            client.subscribe(
                *(k for k in EventKind if k.name.startswith("JOB_")), buffer=10_000
            ) as events,
            trio.open_nursery() as nursery,
        ):

            async def consume() -> None:
                async for event in events:
                    progress.record(event)

            nursery.start_soon(consume)
            now = datetime.now(UTC)
            for name in ("daily_sales", "churn", "inventory_value"):
                await client.insert(
                    GenerateReport(name=name),
                    InsertOpts(
                        queue="reports", scheduled_at=now + timedelta(seconds=_REPORT_DELAY)
                    ),
                )
            export = await client.insert(ExportArchive(account_id=42), InsertOpts(queue="reports"))
            nursery.start_soon(_cancel_export, client, state, export.job.id)
            for i in range(0, len(bulk), 1000):
                await client.insert_many(bulk[i : i + 1000])

            with Live(_live_view(progress), console=console, refresh_per_second=8) as live:
                deadline = started + give_up_after
                while time.monotonic() < deadline:
                    progress.states, _ = await _count_states(client.driver)
                    live.update(_live_view(progress))
                    if progress.finalized >= jobs:
                        finished = True
                        break
                    await trio.sleep(_REFRESH)
            if not console.is_terminal:
                console.print()  # Live leaves its last frame unterminated off a terminal
            nursery.cancel_scope.cancel()
        if not finished:
            console.print(f"[red]the demo did not finish within {give_up_after:.0f} s; stopping[/]")
            await client.stop_and_cancel()
        seconds = time.monotonic() - started
    # Counted once the client has stopped, so "left running" means what it says.
    states, by_kind = await _count_states(url, schema)
    result = DemoResult(
        total=jobs,
        seconds=seconds,
        by_kind_state=by_kind,
        events=dict(progress.events),
        run_seconds=dict(progress.run_seconds),
        left_running=states.get("running", 0),
        unfinished=jobs - sum(states[s] for s in ("completed", "cancelled", "discarded")),
    )
    _print_summary(console, result, schema)
    return result


def _print_summary(console: Console, result: DemoResult, schema: str) -> None:
    table = Table(
        title="summary", title_justify="left", box=None, pad_edge=False, header_style="bold"
    )
    for name in ("kind", "jobs", "completed", "cancelled", "discarded", "failed", "snoozes"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    table.add_column("avg ms", justify="right")
    totals: Counter[str] = Counter()
    for kind in KINDS:
        states = result.by_kind_state.get(kind, Counter())
        events = result.events.get(kind, Counter())
        n = sum(states.values())
        attempts = sum(events.values())
        avg = result.run_seconds.get(kind, 0.0) / attempts if attempts else math.nan
        row = {
            "jobs": n,
            "completed": states["completed"],
            "cancelled": states["cancelled"],
            "discarded": states["discarded"],
            "failed": events[EventKind.JOB_FAILED],
            "snoozes": events[EventKind.JOB_SNOOZED],
        }
        totals.update(row)
        table.add_row(
            kind, *(f"{v:,}" for v in row.values()), "-" if math.isnan(avg) else f"{avg * 1000:.0f}"
        )
    table.add_row("total", *(f"{v:,}" for v in totals.values()), "", style="bold")
    console.print(table)
    rate = result.total / result.seconds if result.seconds > 0 else 0.0
    console.print(
        f"{result.total:,} jobs in {result.seconds:.1f} s ({rate:,.0f} jobs/s); "
        f"left running: {result.left_running}; unfinished: {result.unfinished}",
        soft_wrap=True,
    )
    if result.unfinished == 0 and result.left_running == 0:
        console.print(
            "Every job reached a final state and the client stopped cleanly. "
            f"Next: `rivertrio jobs list --schema {schema}`, or the docs' getting started.",
            soft_wrap=True,
        )


@click.command()
@database_url_option
@schema_option(default=DEFAULT_SCHEMA, help="Schema the demo recreates and uses (dropped first!).")
@click.option(
    "--jobs",
    "num_jobs",
    type=click.IntRange(min=_MIN_JOBS, max=1_000_000),
    default=3000,
    show_default=True,
    help="How many jobs to insert.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=50.0,
    show_default=True,
    help="Seconds after which the demo gives up and stops the client hard.",
)
@click.option("--seed", type=int, default=None, help="Seed of the job mix, for repeatable runs.")
def demo(
    database_url: str | None, schema: str, num_jobs: int, timeout: float, seed: int | None
) -> None:
    """Run a live demo: a realistic mix of jobs, worked while you watch.

    Starts the embedded Postgres (unless --database-url or $RIVERTRIO_DATABASE_URL
    names a server), recreates the schema `rivertrio_demo`, migrates it, and
    inserts emails (some refused and retried), image resizes, inventory syncs
    that snooze once, card charges that are declined until discarded, reports
    scheduled a few seconds ahead and a long export cancelled while it runs.
    Shows counts by state and jobs/s live, then a summary. Under a minute.
    """
    result = run_trio(
        run_demo, database_url, schema=schema, jobs=num_jobs, give_up_after=timeout, seed=seed
    )
    if result.unfinished or result.left_running:
        fail(
            f"the demo did not finish: {result.unfinished} jobs unfinished, "
            f"{result.left_running} left running"
        )
