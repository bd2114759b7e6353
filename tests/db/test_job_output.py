"""What a worker stores with its job, in a running client: output, logs, progress; and
`job_update`, which merges metadata from outside."""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

import rivertrio
from rivertrio._driver import Driver
from rivertrio._joblog import METADATA_LOG
from support.cli import invoke
from support.common import Noop, Task, config, events_until, row, running, task_workers

pytestmark = pytest.mark.timeout(60)


async def test_output_round_trips_through_the_row(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        rivertrio.record_output({"n": job.args.n, "name": job.args.name})
        if job.args.name == "fail":
            raise ValueError("after recording")

    cfg = config(migrated_schema, workers=task_workers(work))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(
            rivertrio.EventKind.JOB_COMPLETED, rivertrio.EventKind.JOB_FAILED
        ) as events,
    ):
        ok = await client.insert(Task(n=1, name="ok"))
        failed = await client.insert(Task(n=2, name="fail"), rivertrio.InsertOpts(max_attempts=1))
        got = {e.job.id: e for e in await events_until(events, 2) if e.job is not None}
    # Stored with the outcome, whatever it is (as River does), and read back.
    event_row = got[ok.job.id].job
    assert event_row is not None and event_row.output == {"n": 1, "name": "ok"}
    assert (await row(driver, ok.job.id)).output == {"n": 1, "name": "ok"}
    stored = await row(driver, failed.job.id)
    assert stored.state is rivertrio.JobState.DISCARDED
    assert stored.output == {"n": 2, "name": "fail"}
    assert stored.metadata["output"] == stored.output  # River's key


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def update_then_roll_back(
    client: rivertrio.Client, job_id: int, seen: list[rivertrio.JobRow]
) -> None:
    async with client.transaction() as tx:
        seen.append(await client.job_update_tx(tx, job_id, metadata={"a": 9}))
        raise Rollback


async def test_job_update_merges_metadata(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    cfg = rivertrio.Config(schema=migrated_schema)
    async with running(cfg, database_url) as client:
        res = await client.insert(Noop(), rivertrio.InsertOpts(metadata={"a": 1, "b": 2}))
        updated = await client.job_update(res.job.id, metadata={"b": 3, "c": {"d": 4}})
        assert updated.metadata == {"a": 1, "b": 3, "c": {"d": 4}}
        assert (await row(driver, res.job.id)).metadata == updated.metadata

        # The _tx form: seen inside the transaction, gone with its rollback.
        seen: list[rivertrio.JobRow] = []
        with pytest.raises(Rollback):
            await update_then_roll_back(client, res.job.id, seen)
        assert seen[0].metadata["a"] == 9
        assert (await row(driver, res.job.id)).metadata["a"] == 1

        with pytest.raises(rivertrio.NotFoundError, match="job 999999 not found"):
            await client.job_update(999999, metadata={"a": 1})
        with pytest.raises(rivertrio.InvalidInputError, match="job_update: metadata"):
            await client.job_update(res.job.id, metadata={"x": float("nan")})


async def test_logs_are_collected_per_attempt(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    logger = logging.getLogger("test_job_output.worker")
    logger.setLevel(logging.INFO)

    async def work(job: rivertrio.Job[Task]) -> None:
        logger.info("attempt %d of job %d", job.attempt, job.id)
        if job.attempt == 1:
            raise ValueError("first attempt fails")

    mw = rivertrio.JobLogMiddleware(formatter=logging.Formatter("%(message)s"))
    cfg = config(
        migrated_schema,
        workers=task_workers(work),
        middleware=[mw],
        retry_policy=lambda job: 0.0,
    )
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        res = await client.insert(Task())
        await events_until(events, 1)
    stored = await row(driver, res.job.id)
    assert stored.metadata[METADATA_LOG] == [
        {"attempt": 1, "log": f"attempt 1 of job {res.job.id}\n"},
        {"attempt": 2, "log": f"attempt 2 of job {res.job.id}\n"},
    ]


@pytest.fixture
def running_clock(mock_clock: MockClock) -> MockClock:
    """Trio's mock clock, running at real speed until a test freezes or jumps it."""
    mock_clock.rate = 1.0
    return mock_clock


async def test_progress_is_written_at_most_once_a_second_and_the_last_with_the_outcome(
    running_clock: MockClock, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    steps = [trio.Event() for _ in range(3)]
    reached = [trio.Event() for _ in range(3)]

    async def work(job: rivertrio.Job[Task]) -> None:
        await steps[0].wait()
        await rivertrio.report_progress(0.1, "starting")  # the first: written at once
        await rivertrio.report_progress(0.2)
        await rivertrio.report_progress(0.3, "within the second")  # kept, not written
        reached[0].set()
        await steps[1].wait()
        await rivertrio.report_progress(0.4, "a second later")  # written
        await rivertrio.report_progress(0.5, "the last")  # kept, then stored with the outcome
        reached[1].set()
        await steps[2].wait()

    async def progress(job_id: int) -> tuple[float, str] | None:
        p = (await row(driver, job_id)).progress
        return None if p is None else (p.value, p.message)

    cfg = config(migrated_schema, workers=task_workers(work))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        res = await client.insert(Task())
        # Time stands still while the job reports: only the clock's jumps move it.
        running_clock.rate = 0
        steps[0].set()
        await reached[0].wait()
        assert await progress(res.job.id) == (0.1, "starting")
        running_clock.jump(1.0)
        steps[1].set()
        await reached[1].wait()
        assert await progress(res.job.id) == (0.4, "a second later")
        running_clock.rate = 1.0
        steps[2].set()
        await events_until(events, 1)
    stored = (await row(driver, res.job.id)).progress
    assert stored is not None and (stored.value, stored.message) == (0.5, "the last")
    assert stored.at is not None


async def test_jobs_get_shows_progress_and_output(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        await rivertrio.report_progress(75, "resized 3 of 4")
        rivertrio.record_output({"pages": 4})

    cfg = config(migrated_schema, workers=task_workers(work))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        res = await client.insert(Task())
        await events_until(events, 1)
    shown = await invoke(
        "jobs", "get", str(res.job.id), "--database-url", database_url, "--schema", migrated_schema
    )
    assert shown.exit_code == 0, shown.output
    lines = {line.split(None, 1)[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert "75 resized 3 of 4 (at " in lines["progress"]
    assert lines["output"].split(None, 1)[1].strip() == '{"pages": 4}'
