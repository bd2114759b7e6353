"""Helpers for client-level tests: args, workers driven by events, readers of rows."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

import rivertrio
from rivertrio._driver import Driver, Listener
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


class Blocker:
    """A worker of Task jobs that block until cancelled, and records that one was."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = False

    async def work(self, job: rivertrio.Job[Task]) -> None:
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise

    def workers(self) -> rivertrio.Workers:
        """`task_workers` with this worker's `work`."""
        return task_workers(self.work)

    async def wait_started(self) -> None:
        """Wait (at most 10 s) until a job has started."""
        with trio.fail_after(10):
            await self.started.wait()


def running_row(**fields: Any) -> JobRow:
    """A job row as a fetch hands it to a worker (its first attempt, kind ``k``, no
    errors), with `fields` changed; for tests that need no database."""
    now = datetime.now(UTC)
    row = JobRow(
        id=1,
        state=rivertrio.JobState.RUNNING,
        attempt=1,
        max_attempts=25,
        attempted_at=now,
        attempted_by=["me"],
        created_at=now,
        finalized_at=None,
        scheduled_at=now,
        priority=1,
        queue="default",
        kind="k",
        tags=[],
        metadata={},
        errors=[],
        encoded_args="{}",
        unique_key=None,
        unique_states=None,
    )
    return dataclasses.replace(row, **fields)


async def open_listener(driver: Driver, channel: str) -> Listener:
    """A connection listening on `channel` (``river_insert``, say); close it with ``aclose``."""
    listener = await driver.open_listener()
    await listener.listen(channel)
    return listener


async def next_payload(listener: Listener) -> dict[str, Any]:
    """The JSON payload of the next notification (waiting at most 10 s)."""
    with trio.fail_after(10):
        note = await listener.receive.receive()
    payload: dict[str, Any] = json.loads(note.payload)
    return payload


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
