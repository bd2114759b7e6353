"""Flow control tests: an independent record of job starts and ends, and what it must show.

Workers write a row to ``flow_log`` when they start and when they end, with the
database's ``clock_timestamp()``: a record kept apart from the job rows the
flow fetch reads and writes. A run's logged interval lies inside the time its
job row was ``running`` (the start is written after the fetch committed, the
end before the outcome is persisted), so no more runs may overlap in the log
than the limits let be running.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import trio

import rivertrio
from rivertrio._driver import Driver, Queryable
from rivertrio._job import JobRow

__all__ = [
    "FLOW_LOG_DDL",
    "Run",
    "counting_events",
    "log_event",
    "max_overlap",
    "most_starts_in_a_window",
    "read_runs",
]

FLOW_LOG_DDL = """
CREATE TABLE IF NOT EXISTS /*schema*/flow_log (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempted_at timestamptz
)
"""


async def log_event(conn: Queryable, job: JobRow, event: str) -> None:
    """Record that `job`'s current attempt started or ended (`event`: "start" or "end").

    A start also records the attempt's ``attempted_at`` as the worker got it (when
    its fetch started it, by which rate limits count).
    """
    await conn.execute(
        "INSERT INTO /*schema*/flow_log (job_id, attempt, event, attempted_at) "
        "VALUES ($1, $2, $3, $4)",
        job.id,
        job.attempt,
        event,
        job.attempted_at if event == "start" else None,
    )


@dataclass(frozen=True)
class Run:
    """One attempt of one job, as the log has it."""

    job_id: int
    attempt: int
    start: datetime
    end: datetime | None
    """None: it never logged its end (its process died, or it is still running)."""
    attempted_at: datetime
    """When the fetch started the attempt (the job row's ``attempted_at``)."""


async def read_runs(driver: Driver) -> list[Run]:
    """Every logged attempt, by start time."""
    recs = await driver.fetch(
        "SELECT job_id, attempt, event, at, attempted_at FROM /*schema*/flow_log "
        "ORDER BY at, event DESC"
    )
    starts: dict[tuple[int, int], datetime] = {}
    attempted: dict[tuple[int, int], datetime] = {}
    ends: dict[tuple[int, int], datetime] = {}
    for rec in recs:
        key = (rec["job_id"], rec["attempt"])
        target = starts if rec["event"] == "start" else ends
        assert key not in target, f"job {key[0]} attempt {key[1]} logged {rec['event']} twice"
        target[key] = rec["at"]
        if rec["event"] == "start":
            attempted[key] = rec["attempted_at"]
    assert set(ends) <= set(starts), "an end without its start"
    runs = [
        Run(job, attempt, at, ends.get((job, attempt)), attempted[job, attempt])
        for (job, attempt), at in starts.items()
    ]
    return sorted(runs, key=lambda r: (r.start, r.job_id))


def max_overlap(
    runs: Iterable[Run],
    key: Callable[[Run], Hashable] = lambda run: None,
    *,
    until: datetime | None = None,
) -> dict[Hashable, int]:
    """The most runs of each key (default: all runs) that overlapped at any instant.

    A run with no end counts as running until `until` (which must then be given).
    Ends sort before starts at the same instant: back to back is no overlap.
    """
    points: list[tuple[datetime, int, Hashable]] = []
    for run in runs:
        end = run.end if run.end is not None else until
        assert end is not None, f"job {run.job_id} attempt {run.attempt} never ended"
        points.append((run.start, 1, key(run)))
        points.append((end, -1, key(run)))
    points.sort(key=lambda p: (p[0], p[1]))
    current: dict[Hashable, int] = defaultdict(int)
    most: dict[Hashable, int] = defaultdict(int)
    for _, step, k in points:
        current[k] += step
        most[k] = max(most[k], current[k])
    return dict(most)


def most_starts_in_a_window(
    runs: Iterable[Run], period: float, key: Callable[[Run], Hashable] = lambda run: None
) -> dict[Hashable, int]:
    """The most attempts of each key started (``attempted_at``) within any `period` seconds.

    The window is half open, as the limit counts it: a start exactly `period`
    after another is in the next window.
    """
    stamps: dict[Hashable, list[datetime]] = defaultdict(list)
    for run in runs:
        stamps[key(run)].append(run.attempted_at)
    most: dict[Hashable, int] = {}
    for k, times in stamps.items():
        times.sort()
        first = 0
        best = 0
        for last, at in enumerate(times):
            while (at - times[first]).total_seconds() >= period:
                first += 1
            best = max(best, last - first + 1)
        most[k] = best
    return most


@asynccontextmanager
async def counting_events(
    clients: Sequence[rivertrio.Client], kinds: Sequence[rivertrio.EventKind], count: int
) -> AsyncIterator[trio.Event]:
    """An event set once the `clients` together emitted `count` events of `kinds`.

    Subscribes before the block runs, so that the block may insert the jobs.
    """
    reached = trio.Event()
    seen = 0

    async def listen(client: rivertrio.Client, task_status: trio.TaskStatus[None]) -> None:
        nonlocal seen
        async with client.subscribe(*kinds) as events:
            task_status.started()
            async for _ in events:
                seen += 1
                if seen >= count:
                    reached.set()

    async with trio.open_nursery() as nursery:
        for client in clients:
            await nursery.start(listen, client)
        yield reached
        nursery.cancel_scope.cancel()
