"""`job_complete_tx`: a worker completes its job in the transaction of its own writes.

The completer then finds the row finished: it reports the job completed, once,
and changes nothing, whatever the worker did after committing (returned,
raised, was hard-stopped). The SIGKILL case is in
tests/scenarios/test_complete_tx_crash.py.
"""

from __future__ import annotations

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from support.common import Task, config, events_until, next_event, row, running, task_workers

pytestmark = pytest.mark.timeout(60)


async def ledger(driver: Driver) -> list[int]:
    await driver.execute(
        "CREATE TABLE IF NOT EXISTS /*schema*/ledger (job_id bigint NOT NULL, note text)"
    )
    return [r["job_id"] for r in await driver.fetch("SELECT job_id FROM /*schema*/ledger")]


def worker(after_commit: str, committed: trio.Event | None = None) -> rivertrio.Workers:
    async def work(job: rivertrio.Job[Task]) -> None:
        client = rivertrio.current_client()
        rivertrio.record_output({"ledger": "written"})
        async with client.transaction() as tx:
            await tx.execute(
                "INSERT INTO /*schema*/ledger (job_id, note) VALUES ($1, $2)", job.id, job.args.name
            )
            done = await rivertrio.job_complete_tx(tx, job)
            assert done.state is rivertrio.JobState.COMPLETED and done.args == job.args
            if after_commit == "roll back":
                raise ValueError("rolled back with the ledger row")
        if committed is not None:
            committed.set()
        if after_commit == "raise":
            raise ValueError("raised after the commit")
        if after_commit == "hang":
            await trio.sleep_forever()

    return task_workers(work)


@pytest.mark.parametrize("after_commit", ["return", "raise"])
async def test_the_committed_completion_stands_and_is_reported_once(
    database_url: str, migrated_schema: str, driver: Driver, after_commit: str
) -> None:
    await ledger(driver)
    cfg = config(migrated_schema, workers=worker(after_commit))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(*rivertrio.EventKind) as events,
    ):
        res = await client.insert(Task(name="pay"))
        event = await next_event(events)
        counters = client._tree.completer.counters
    assert event.kind is rivertrio.EventKind.JOB_COMPLETED
    assert event.job is not None and event.job.id == res.job.id
    assert counters.rows_finished_elsewhere == 1 and counters.rows_persisted == 0
    stored = await row(driver, res.job.id)
    assert stored.state is rivertrio.JobState.COMPLETED
    assert stored.attempt == 1 and stored.errors == []
    assert stored.output == {"ledger": "written"}  # recorded before the call: stored with it
    assert await ledger(driver) == [res.job.id]


async def test_a_hard_stop_after_the_commit_leaves_the_job_completed(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await ledger(driver)
    committed = trio.Event()
    cfg = config(migrated_schema, workers=worker("hang", committed))
    got: list[rivertrio.Event] = []
    async with (
        running(cfg, database_url) as client,
        client.subscribe(*rivertrio.EventKind) as events,
    ):
        res = await client.insert(Task(name="pay"))
        with trio.fail_after(10):
            await committed.wait()
        # The worker is still running when the client stops hard: its outcome
        # is an interruption, which would put the job back to available.
        await client.stop_and_cancel()
        got.extend([event async for event in events])  # ends when the client has stopped
    assert [(e.kind, e.job.id if e.job else None) for e in got] == [
        (rivertrio.EventKind.JOB_COMPLETED, res.job.id)
    ]
    stored = await row(driver, res.job.id)
    assert stored.state is rivertrio.JobState.COMPLETED and stored.attempt == 1
    assert await ledger(driver) == [res.job.id]


async def test_a_rolled_back_completion_leaves_the_job_to_its_outcome(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await ledger(driver)
    cfg = config(migrated_schema, workers=worker("roll back"))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_FAILED) as events,
    ):
        await client.insert(Task(name="pay"), rivertrio.InsertOpts(max_attempts=1))
        (event,) = await events_until(events, 1)
    assert event.job is not None and event.job.state is rivertrio.JobState.DISCARDED
    assert await ledger(driver) == []


async def test_a_job_no_longer_running_its_attempt_is_refused(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await ledger(driver)
    refused: list[BaseException] = []

    async def work(job: rivertrio.Job[Task]) -> None:
        client = rivertrio.current_client()
        # Someone else finished it meanwhile (here: by hand).
        await driver.execute(
            "UPDATE /*schema*/river_job SET state = 'cancelled', finalized_at = now()"
            " WHERE id = $1",
            job.id,
        )
        try:
            async with client.transaction() as tx:
                await tx.execute("INSERT INTO /*schema*/ledger (job_id) VALUES ($1)", job.id)
                await rivertrio.job_complete_tx(tx, job)
        except rivertrio.JobNotRunningError as exc:
            refused.append(exc)

    cfg = config(migrated_schema, workers=task_workers(work))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_CANCELLED) as events,
    ):
        res = await client.insert(Task())
        await events_until(events, 1)
    (exc,) = refused
    assert f"job {res.job.id} was not completed: it is cancelled at attempt 1" in str(exc)
    assert await ledger(driver) == []  # the caller's transaction rolled back with it
    assert (await row(driver, res.job.id)).state is rivertrio.JobState.CANCELLED


async def test_only_a_running_job_is_accepted(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    cfg = rivertrio.Config(schema=migrated_schema)
    async with running(cfg, database_url) as client:
        res = await client.insert(Task())
        async with client.transaction() as tx:
            with pytest.raises(rivertrio.InvalidInputError, match="is available, not running"):
                await rivertrio.job_complete_tx(tx, res.job)
            with pytest.raises(rivertrio.InvalidInputError, match="takes the job being worked"):
                await rivertrio.job_complete_tx(tx, res.job.id)  # type: ignore[call-overload]
