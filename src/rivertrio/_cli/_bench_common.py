"""What ``rivertrio bench``'s modes share: the result, the no-op job, and the queue's fill."""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._args import InsertOpts, JobArgs
from .._client import open_client
from .._config import Config
from .._driver import Driver, open_driver, quote_ident
from .._flow import FlowControl
from .._migrate import migrate

__all__ = [
    "BenchResult",
    "NoopArgs",
    "analyze",
    "clear_queue",
    "flow_rules",
    "insert_jobs",
    "peak_rss_mb",
    "percentile",
    "prepare",
]

_INSERT_BATCH = 10_000


@dataclass
class NoopArgs(JobArgs, kind="bench_noop"):
    """A job that does nothing: the burn-down measures the queue, not the work."""


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


async def prepare(url: str, schema: str, reset: bool) -> None:
    """Create and migrate the benchmark's schema if missing; with `reset`, empty it."""
    async with open_driver(url, max_size=1) as admin:
        await admin.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await migrate(url, schema=schema)
    if reset:
        async with open_driver(url, schema=schema, max_size=1) as admin:
            await admin.execute("TRUNCATE /*schema*/river_job, /*schema*/river_queue")


async def clear_queue(driver: Driver, queue: str) -> None:
    """Delete the benchmark queue's jobs."""
    # Only this benchmark's queue: nothing else in the schema is touched.
    await driver.execute("DELETE FROM /*schema*/river_job WHERE queue = $1", queue)
    await driver.execute("VACUUM (ANALYZE) /*schema*/river_job")


async def analyze(driver: Driver) -> None:
    """Refresh the job table's statistics."""
    # Fresh statistics after a bulk insert: with the stale ones (an empty table)
    # the planner may join the fetch's locked ids to river_job by scanning the
    # whole primary key once per locked row (seconds per fetch of 1000).
    await driver.execute("ANALYZE /*schema*/river_job")


def flow_rules(queue: str, flow_limit: int | None) -> dict[str, FlowControl]:
    """``--flow-limit``: the queue's flow rules (held jobs, the flow fetch), or none."""
    return {} if flow_limit is None else {queue: FlowControl(concurrency=flow_limit)}


async def insert_jobs(
    url: str,
    schema: str,
    queue: str,
    n: int,
    advance: Callable[[int], None],
    flow_limit: int | None = None,
) -> BenchResult:
    """Insert `n` no-op jobs in batches (COPY), calling `advance` after each batch."""
    opts = InsertOpts(queue=queue)
    started = time.monotonic()
    config = Config(schema=schema, flow=flow_rules(queue, flow_limit))
    async with open_client(config, database_url=url) as client:
        done = 0
        while done < n:
            batch = min(_INSERT_BATCH, n - done)
            done += await client.insert_many_fast([(NoopArgs(), opts)] * batch)
            advance(batch)
    return BenchResult("insert_fast", n, time.monotonic() - started, peak_rss_mb())
