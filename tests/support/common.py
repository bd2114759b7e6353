"""Helpers for client-level tests: args, workers driven by events, readers of rows."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._job import JobRow


@dataclass
class Noop(rivertrio.JobArgs, kind="noop"):
    n: int = 0


@dataclass
class Task(rivertrio.JobArgs, kind="task"):
    """A job whose behaviour the test's worker function decides."""

    n: int = 0
    name: str = ""


def config(schema: str, *, max_workers: int = 10, **fields: Any) -> rivertrio.Config:
    """A config on `schema` with one `default` queue; `workers` defaults to a no-op worker."""
    if "workers" not in fields:
        workers = rivertrio.Workers()

        @workers.register(Noop)
        async def noop(job: rivertrio.Job[Noop]) -> None:
            pass

        fields["workers"] = workers
    fields.setdefault("queues", {"default": rivertrio.QueueConfig(max_workers=max_workers)})
    return rivertrio.Config(schema=schema, **fields)


def task_workers(fn: Callable[[rivertrio.Job[Task]], Awaitable[None]]) -> rivertrio.Workers:
    """Workers with `fn` for Task and a no-op for Noop."""
    workers = rivertrio.Workers()
    workers.register(Task)(fn)

    @workers.register(Noop)
    async def noop(job: rivertrio.Job[Noop]) -> None:
        pass

    return workers


async def row(driver: Driver, job_id: int) -> JobRow:
    """The job's row as stored now."""
    rec = await driver.fetchrow("SELECT * FROM /*schema*/river_job WHERE id = $1", job_id)
    assert rec is not None, f"job {job_id} is gone"
    return JobRow.from_record(rec)


async def states(driver: Driver) -> dict[str, int]:
    """How many jobs are in each state."""
    recs = await driver.fetch(
        "SELECT state::text, count(*) FROM /*schema*/river_job GROUP BY state"
    )
    return {r["state"]: r["count"] for r in recs}


async def next_event(
    events: trio.MemoryReceiveChannel[rivertrio.Event], within: float = 10
) -> rivertrio.Event:
    """The next event, or fail after `within` seconds."""
    with trio.fail_after(within):
        return await events.receive()


async def events_until(
    events: trio.MemoryReceiveChannel[rivertrio.Event],
    count: int,
    within: float = 20,
) -> list[rivertrio.Event]:
    """Collect `count` events, or fail after `within` seconds."""
    got: list[rivertrio.Event] = []
    with trio.fail_after(within):
        while len(got) < count:
            got.append(await events.receive())
    return got


@asynccontextmanager
async def running(cfg: rivertrio.Config, database_url: str) -> AsyncIterator[rivertrio.Client]:
    """`open_client` with a hang guard around the whole block."""
    with trio.fail_after(60):
        async with rivertrio.open_client(cfg, database_url=database_url) as client:
            yield client


def replace(cfg: rivertrio.Config, **changes: Any) -> rivertrio.Config:
    """A copy of a config with some fields changed."""
    return dataclasses.replace(cfg, **changes)


def nested(depth: int) -> list[Any]:
    """A list nested `depth` levels deep (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value
