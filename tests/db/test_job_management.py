"""Cancel, retry, delete, get and list jobs, and cross-process cancel."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import EventKind, InsertOpts, JobState
from rivertrio._driver import Driver, Tx
from rivertrio._params import JobDeleteManyParams, JobListCursor, JobListParams
from support.common import Blocker, Noop, Task, config, next_event, row, running, task_workers

pytestmark = pytest.mark.timeout(60)


def insert_only(schema: str, **fields: Any) -> rivertrio.Config:
    return rivertrio.Config(schema=schema, **fields)


async def force(driver: Driver, job_id: int, sql_set: str, *args: Any) -> rivertrio.JobRow:
    """Put a job in a given shape with SQL (test setup); returns the row."""
    await driver.execute(f"UPDATE /*schema*/river_job SET {sql_set} WHERE id = $1", job_id, *args)
    return await row(driver, job_id)


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def rolled_back(client: rivertrio.Client, body: Callable[[Tx], Awaitable[None]]) -> None:
    """Run `body` in a transaction, then roll it back by raising `Rollback`."""
    async with client.transaction() as tx:
        await body(tx)
        raise Rollback


RUNNING = "state = 'running', attempt = attempt + 1, attempted_at = now()"
COMPLETED = "state = 'completed', attempt = 1, attempted_at = now(), finalized_at = now()"


# -- 65 --


async def test_cancelling_a_running_job(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    worker = Blocker()
    cfg = config(migrated_schema, workers=task_workers(worker.work))
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        await worker.wait_started()
        before = datetime.now(UTC)
        marked = await client.job_cancel(res.job.id)
        # The row stays running: the producer running it decides its end.
        assert marked.state == JobState.RUNNING
        assert marked.finalized_at is None
        at = datetime.fromisoformat(marked.metadata["cancel_attempted_at"])
        assert abs((at - before).total_seconds()) < 60
        event = await next_event(events)
    assert worker.cancelled
    assert event.kind == EventKind.JOB_CANCELLED
    assert event.job is not None and event.job.id == res.job.id
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.CANCELLED
    assert stored.finalized_at is not None
    assert stored.metadata["cancel_attempted_at"] == marked.metadata["cancel_attempted_at"]


async def test_a_job_cancelled_from_another_client_is_cancelled_where_it_runs(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    worker = Blocker()
    cfg = config(migrated_schema, workers=task_workers(worker.work))
    async with (
        running(cfg, database_url) as client,
        # Its own driver (pool and connections): only the notification links the two.
        running(insert_only(migrated_schema), database_url) as other,
        client.subscribe(*EventKind) as events,
    ):
        res = await client.insert(Task())
        await worker.wait_started()
        # Well within the 5 s queue refresh: the notification is what cancels it.
        with trio.fail_after(4):
            assert (await other.job_cancel(res.job.id)).state == JobState.RUNNING
            event = await next_event(events)
    assert worker.cancelled
    assert event.kind == EventKind.JOB_CANCELLED
    assert (await row(driver, res.job.id)).state == JobState.CANCELLED


_CANCEL_SCRIPT = """
import sys, trio, rivertrio

async def main(url, schema, job_id):
    cfg = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(cfg, database_url=url) as client:
        row = await client.job_cancel(job_id)
    print(row.state)

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


async def test_a_job_cancelled_from_another_process_is_cancelled_where_it_runs(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    worker = Blocker()
    cfg = config(migrated_schema, workers=task_workers(worker.work))
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        await worker.wait_started()
        with trio.fail_after(30):
            done = await trio.run_process(
                [
                    sys.executable,
                    "-c",
                    _CANCEL_SCRIPT,
                    database_url,
                    migrated_schema,
                    str(res.job.id),
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
        assert done.stdout.decode().strip() == "running", done.stderr.decode()
        event = await next_event(events)
    assert worker.cancelled
    assert event.kind == EventKind.JOB_CANCELLED
    assert (await row(driver, res.job.id)).state == JobState.CANCELLED


# -- 66 --


@pytest.mark.parametrize("state", ["available", "scheduled", "retryable", "pending"])
async def test_cancelling_a_job_that_is_not_running_cancels_it_at_once(
    database_url: str, migrated_schema: str, driver: Driver, state: str
) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    opts = {
        "available": InsertOpts(),
        "scheduled": InsertOpts(scheduled_at=future),
        "retryable": InsertOpts(scheduled_at=future),
        "pending": InsertOpts(pending=True),
    }[state]
    async with running(insert_only(migrated_schema), database_url) as client:
        res = await client.insert(Noop(), opts)
        if state == "retryable":
            await force(driver, res.job.id, "state = 'retryable'")
        assert (await row(driver, res.job.id)).state == JobState(state)
        cancelled = await client.job_cancel(res.job.id)
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.finalized_at is not None
    assert "cancel_attempted_at" in cancelled.metadata
    assert await row(driver, res.job.id) == cancelled


async def test_cancelling_unknown_or_finished_jobs(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        with pytest.raises(rivertrio.NotFoundError, match="job 123456789 not found"):
            await client.job_cancel(123456789)
        for bad in (0, -1, "5", True, 1.0):
            with pytest.raises(rivertrio.InvalidInputError, match="job id"):
                await client.job_cancel(bad)  # type: ignore[arg-type]
        res = await client.insert(Noop())
        done = await force(driver, res.job.id, COMPLETED)
        assert await client.job_cancel(res.job.id) == done  # unchanged
        assert await row(driver, res.job.id) == done


async def test_job_cancel_tx_is_undone_by_a_rollback(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        res = await client.insert(Noop())

        async def cancel(tx: Tx) -> None:
            assert (await client.job_cancel_tx(tx, res.job.id)).state == JobState.CANCELLED

        with pytest.raises(Rollback):
            await rolled_back(client, cancel)
        assert await row(driver, res.job.id) == res.job
        async with client.transaction() as tx:
            await client.job_cancel_tx(tx, res.job.id)
        assert (await row(driver, res.job.id)).state == JobState.CANCELLED


# -- 67 --


@pytest.mark.parametrize(
    ("ending", "final", "event_kind"),
    [
        ("fail", JobState.CANCELLED, EventKind.JOB_CANCELLED),  # would be retryable
        ("fail_soon", JobState.CANCELLED, EventKind.JOB_CANCELLED),  # would be available
        ("snooze", JobState.CANCELLED, EventKind.JOB_CANCELLED),  # would be scheduled
        ("return", JobState.COMPLETED, EventKind.JOB_COMPLETED),
    ],
)
async def test_a_running_job_marked_for_cancellation_ends_cancelled_unless_it_completes(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    ending: str,
    final: JobState,
    event_kind: EventKind,
) -> None:
    started, release = trio.Event(), trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        started.set()
        # Deaf to the cancellation, so the job ends its own way.
        with trio.CancelScope(shield=True):
            await release.wait()
        if ending.startswith("fail"):
            raise ValueError("failed after the cancel request")
        if ending == "snooze":
            raise rivertrio.JobSnooze(60)

    delay = 1.0 if ending == "fail_soon" else 100.0
    cfg = config(migrated_schema, workers=task_workers(work), retry_policy=lambda job: delay)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        assert (await client.job_cancel(res.job.id)).state == JobState.RUNNING
        release.set()
        event = await next_event(events)
    assert event.kind == event_kind
    stored = await row(driver, res.job.id)
    assert stored.state == final
    assert stored.finalized_at is not None
    assert event.job == stored
    if ending == "snooze":
        assert "snoozes" not in stored.metadata
    if ending.startswith("fail"):
        assert "failed after the cancel request" in stored.errors[-1].error


# -- 68 --


async def test_job_retry(database_url: str, migrated_schema: str, driver: Driver) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    async with running(insert_only(migrated_schema), database_url) as client:
        with pytest.raises(rivertrio.NotFoundError):
            await client.job_retry(987654321)

        # Running: unchanged.
        res = await client.insert(Noop())
        busy = await force(driver, res.job.id, RUNNING)
        assert await client.job_retry(res.job.id) == busy
        assert await row(driver, res.job.id) == busy

        # Finished: available now, not finalized, attempts left as they were.
        res = await client.insert(Noop())
        await force(driver, res.job.id, COMPLETED)
        db_before = await driver.fetchval("SELECT now()")
        again = await client.job_retry(res.job.id)
        assert again.state == JobState.AVAILABLE
        assert again.finalized_at is None
        assert again.scheduled_at >= db_before
        assert again.max_attempts == 25
        assert again.attempt == 1
        assert await row(driver, res.job.id) == again

        # Exhausted attempts: one more.
        res = await client.insert(Noop(), InsertOpts(max_attempts=3))
        await force(driver, res.job.id, "state = 'discarded', attempt = 3, finalized_at = now()")
        again = await client.job_retry(res.job.id)
        assert (again.state, again.attempt, again.max_attempts) == (JobState.AVAILABLE, 3, 4)

        # Cancelled by job_cancel: the mark is cleared, so the new run is not cancelled.
        res = await client.insert(Noop(), InsertOpts(metadata={"keep": 1}))
        assert "cancel_attempted_at" in (await client.job_cancel(res.job.id)).metadata
        again = await client.job_retry(res.job.id)
        assert again.state == JobState.AVAILABLE
        assert again.metadata == {"keep": 1}

        # Scheduled for later: available now.
        res = await client.insert(Noop(), InsertOpts(scheduled_at=future))
        again = await client.job_retry(res.job.id)
        assert again.state == JobState.AVAILABLE and again.scheduled_at < future

        # Already available and due: left alone (its place in line too).
        res = await client.insert(Noop())
        assert await client.job_retry(res.job.id) == res.job

        # The tx form, rolled back.
        res = await client.insert(Noop())
        done = await force(driver, res.job.id, COMPLETED)

        async def retry(tx: Tx) -> None:
            assert (await client.job_retry_tx(tx, res.job.id)).state == JobState.AVAILABLE

        with pytest.raises(Rollback):
            await rolled_back(client, retry)
        assert await row(driver, res.job.id) == done


async def test_a_retried_job_is_worked_again_at_once(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    cfg = config(migrated_schema, fetch_poll_interval=30.0)
    async with (
        running(cfg, database_url) as client,
        running(insert_only(migrated_schema), database_url) as other,
        client.subscribe(EventKind.JOB_COMPLETED) as events,
    ):
        res = await client.insert(Noop())
        await next_event(events)
        for retrier in (client, other):  # a local wake-up, then a notification
            await retrier.job_retry(res.job.id)
            event = await next_event(events, within=5)  # well before the 30 s poll
            assert event.job is not None and event.job.id == res.job.id
    stored = await row(driver, res.job.id)
    assert (stored.state, stored.attempt) == (JobState.COMPLETED, 3)


# -- 69 --


async def test_job_delete(database_url: str, migrated_schema: str, driver: Driver) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        res = await client.insert(Noop())
        assert await client.job_get(res.job.id) == res.job
        deleted = await client.job_delete(res.job.id)
        assert deleted == res.job
        with pytest.raises(rivertrio.NotFoundError, match=f"job {res.job.id} not found"):
            await client.job_get(res.job.id)
        with pytest.raises(rivertrio.NotFoundError):
            await client.job_delete(res.job.id)

        res = await client.insert(Noop())
        busy = await force(driver, res.job.id, RUNNING)
        with pytest.raises(rivertrio.JobRunningError, match="running"):
            await client.job_delete(res.job.id)
        assert await row(driver, res.job.id) == busy

        res = await client.insert(Noop())

        async def delete(tx: Tx) -> None:
            assert (await client.job_delete_tx(tx, res.job.id)).id == res.job.id
            with pytest.raises(rivertrio.NotFoundError):
                await client.job_get_tx(tx, res.job.id)

        with pytest.raises(Rollback):
            await rolled_back(client, delete)
        assert await client.job_get(res.job.id) == res.job


# -- 70 --


async def test_job_delete_many(database_url: str, migrated_schema: str, driver: Driver) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        noops = [r.job for r in await client.insert_many([Noop(n=i) for i in range(4)])]
        tasks = [r.job for r in await client.insert_many([Task(n=i) for i in range(3)])]
        busy = await force(driver, tasks[0].id, RUNNING)
        total = len(noops) + len(tasks)

        with pytest.raises(rivertrio.InvalidInputError, match="unsafe_all=True"):
            await client.job_delete_many(JobDeleteManyParams())
        with pytest.raises(rivertrio.InvalidInputError, match="unsafe_all=True"):
            await client.job_delete_many(JobDeleteManyParams(kinds=[]))  # empty: no filter
        with pytest.raises(rivertrio.InvalidInputError, match="JobDeleteManyParams"):
            await client.job_delete_many(JobListParams())  # type: ignore[arg-type]
        assert await driver.fetchval("SELECT count(*) FROM /*schema*/river_job") == total

        # A filter: the running one is never deleted.
        deleted = await client.job_delete_many(JobDeleteManyParams(kinds=["task"]))
        assert [j.id for j in deleted] == [t.id for t in tasks[1:]]
        assert await row(driver, busy.id) == busy

        # A limit: the lowest ids first.
        deleted = await client.job_delete_many(JobDeleteManyParams(kinds=["noop"], limit=1))
        assert [j.id for j in deleted] == [noops[0].id]

        # Everything, explicitly: still not the running one.
        deleted = await client.job_delete_many(JobDeleteManyParams(unsafe_all=True))
        assert [j.id for j in deleted] == [j.id for j in noops[1:]]
        assert deleted[0] == noops[1]
        remaining = await driver.fetch("SELECT id FROM /*schema*/river_job")
        assert [r["id"] for r in remaining] == [busy.id]

        # Even asked for by id and state.
        deleted = await client.job_delete_many(
            JobDeleteManyParams(ids=[busy.id], states=["running"])
        )
        assert deleted == []
        async with client.transaction() as tx:
            assert await client.job_delete_many_tx(tx, JobDeleteManyParams(ids=[busy.id])) == []


# -- 71 --


async def _dataset(client: rivertrio.Client, driver: Driver) -> list[rivertrio.JobRow]:
    """Jobs of varied kinds, queues, priorities, tags, metadata, states and times."""
    future = datetime.now(UTC) + timedelta(hours=1)
    params: list[Any] = []
    for i in range(24):
        opts = InsertOpts(
            queue=["default", "alpha", "beta"][i % 3],
            priority=1 + i % 4,
            tags=[["red"], ["red", "blue"], ["green"], []][i % 4],
            metadata={"tenant": i % 2, "n": i},
            scheduled_at=future if i % 5 == 0 else None,
            pending=i % 7 == 0,
        )
        params.append(((Noop(n=i) if i % 2 else Task(n=i)), opts))
    # One statement: every row shares created_at, so ties are broken by id.
    jobs = [r.job for r in await client.insert_many(params)]
    # Some rows attempted and finalized, with ties and nulls in those times.
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'completed', attempt = 1, "
        "attempted_at = '2026-01-01T00:00:00Z'::timestamptz + (id % 3) * interval '1 s', "
        "finalized_at = '2026-01-02T00:00:00Z'::timestamptz + (id % 2) * interval '1 s' "
        "WHERE id = ANY($1::bigint[])",
        [j.id for j in jobs[3::3]],
    )
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'running', attempt = 1, "
        "attempted_at = '2026-01-01T00:00:00Z'::timestamptz "
        "WHERE id = ANY($1::bigint[])",
        [jobs[1].id, jobs[2].id],
    )
    return [await row(driver, j.id) for j in jobs]


async def test_job_list_filters(database_url: str, migrated_schema: str, driver: Driver) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        jobs = await _dataset(client, driver)

        async def listed(**filters: Any) -> list[int]:
            result = await client.job_list(JobListParams(limit=1000, **filters))
            return [j.id for j in result.jobs]

        def expected(pred: Any) -> list[int]:
            return [j.id for j in jobs if pred(j)]

        assert await listed() == [j.id for j in jobs]
        some = [jobs[0].id, jobs[5].id, jobs[23].id]
        assert await listed(ids=some) == some
        assert await listed(kinds=["task"]) == expected(lambda j: j.kind == "task")
        assert await listed(queues=["alpha", "beta"]) == expected(lambda j: j.queue != "default")
        for state in JobState:
            assert await listed(states=[state]) == expected(lambda j, s=state: j.state == s)
        assert await listed(states=["pending", JobState.RUNNING]) == expected(
            lambda j: j.state in (JobState.PENDING, JobState.RUNNING)
        )
        assert await listed(priorities=[2, 4]) == expected(lambda j: j.priority in (2, 4))
        assert await listed(tags=["red", "green"]) == expected(
            lambda j: bool({"red", "green"} & set(j.tags))
        )
        assert await listed(tags=["red", "blue"], tags_match="all") == expected(
            lambda j: {"red", "blue"} <= set(j.tags)
        )
        assert await listed(metadata={"tenant": 1}) == expected(lambda j: j.metadata["tenant"] == 1)
        assert await listed(metadata={"tenant": 0, "n": 4}) == [jobs[4].id]
        # Filters combine with AND.
        assert await listed(kinds=["noop"], queues=["alpha"], priorities=[2]) == expected(
            lambda j: j.kind == "noop" and j.queue == "alpha" and j.priority == 2
        )
        assert await listed(kinds=["nothing-of-the-sort"]) == []
        async with client.transaction() as tx:
            result = await client.job_list_tx(tx, JobListParams(ids=some))
            assert [j.id for j in result.jobs] == some


def _sort_key(order_by: str) -> Any:
    def key(job: rivertrio.JobRow) -> Any:
        if order_by == "id":
            return (job.id,)
        value = getattr(job, order_by)
        return (value is None, value or datetime.min.replace(tzinfo=UTC), job.id)

    return key


@pytest.mark.parametrize(
    "order_by", ["id", "created_at", "scheduled_at", "attempted_at", "finalized_at"]
)
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_job_list_keyset_pagination_lists_every_row_once(
    database_url: str, migrated_schema: str, driver: Driver, order_by: Any, order: Any
) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        jobs = await _dataset(client, driver)
        want = sorted(jobs, key=_sort_key(order_by), reverse=order == "desc")
        for page_size in (1, 4, 7, 24, 100):
            got: list[rivertrio.JobRow] = []
            after: JobListCursor | None = None
            while True:
                page = await client.job_list(
                    JobListParams(order_by=order_by, order=order, after=after, limit=page_size)
                )
                got.extend(page.jobs)
                if len(page.jobs) < page_size:
                    break
                assert page.last_cursor is not None
                # Through the string form, as a command line or web page would carry it.
                after = JobListCursor.decode(page.last_cursor.encode())
                assert after == page.last_cursor
            assert [j.id for j in got] == [j.id for j in want], page_size
        # With filters, the same; next_page keeps them.
        params = JobListParams(order_by=order_by, order=order, kinds=["noop"], limit=5)
        page = await client.job_list(params)
        got = []
        while page.jobs:
            got.extend(page.jobs)
            page = await client.job_list(params.next_page(page))
        assert [j.id for j in got] == [j.id for j in want if j.kind == "noop"]
        with pytest.raises(rivertrio.InvalidInputError, match="empty"):
            params.next_page(page)


async def test_job_list_pages_see_rows_inserted_meanwhile_once(
    database_url: str, migrated_schema: str
) -> None:
    async with running(insert_only(migrated_schema), database_url) as client:
        ids = [r.job.id for r in await client.insert_many([Noop(n=i) for i in range(10)])]
        seen: list[int] = []
        after = None
        while True:
            page = await client.job_list(JobListParams(after=after, limit=3))
            seen.extend(j.id for j in page.jobs)
            if not page.jobs:
                break
            after = page.last_cursor
            if len(ids) < 16:
                ids.append((await client.insert(Noop())).job.id)
        assert seen == ids
        empty = await client.job_list(JobListParams(after=after))
        assert empty.jobs == [] and empty.last_cursor is None


async def test_job_list_rejects_bad_params(database_url: str, migrated_schema: str) -> None:
    cursor = JobListCursor(order_by="id", id=5)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"states": ["finished"]}, "'finished' is not a job state"),
        ({"kinds": "noop"}, "kinds must be a list"),
        ({"priorities": [5]}, r"priorities\[0\] must be an int from 1 to 4; got 5"),
        ({"ids": [1, 0]}, r"ids\[1\] must be an int from 1 to 2\*\*63 - 1; got 0"),
        ({"tags_match": "some"}, "tags_match"),
        ({"metadata": {"x": float("nan")}}, "metadata"),
        ({"order_by": "kind"}, "order_by"),
        ({"order": "up"}, "order"),
        ({"after": cursor, "order_by": "created_at"}, "order_by='id'"),
        ({"after": "abc"}, "JobListCursor"),
    ]
    for fields, message in bad:
        with pytest.raises(rivertrio.InvalidInputError, match=message):
            JobListParams(**fields)
    with pytest.raises(rivertrio.InvalidInputError, match="not a job list cursor"):
        JobListCursor.decode("definitely not")
    with pytest.raises(rivertrio.InvalidInputError, match="limit"):
        JobDeleteManyParams(limit=0)
    with pytest.raises(rivertrio.InvalidInputError, match="unsafe_all"):
        JobDeleteManyParams(unsafe_all="yes")  # type: ignore[arg-type]
    async with running(insert_only(migrated_schema), database_url) as client:
        with pytest.raises(rivertrio.InvalidInputError, match="JobListParams"):
            await client.job_list({"kinds": ["noop"]})  # type: ignore[arg-type]
