"""Client start and shutdown.

A start against an unreachable database, soft stop (prompt, waiting for jobs,
bounded by a deadline), hard stop and ``soft_stop_timeout``, interrupted jobs
going back to ``available``, cancelling the scope around the client, restart,
and what a running job can reach (its client, the caller's context variables).
"""

from __future__ import annotations

import contextvars

import pytest
import trio

import rivertrio
from rivertrio import EventKind, JobState
from rivertrio._driver import Driver
from support.common import (
    Blocker,
    Noop,
    Task,
    config,
    events_until,
    next_event,
    row,
    running,
    states,
    task_workers,
)

pytestmark = pytest.mark.timeout(60)


async def test_unreachable_database_then_healthy(database_url: str, migrated_schema: str) -> None:
    cfg = config(migrated_schema)
    with pytest.raises(rivertrio.DatabaseConnectionError, match=r"127\.0\.0\.1:1\b"):
        async with rivertrio.open_client(cfg, database_url="postgresql://postgres@127.0.0.1:1/x"):
            pytest.fail("started against a dead address")
    async with running(cfg, database_url) as client:
        assert client.started


async def test_stop_with_no_jobs_is_prompt(database_url: str, migrated_schema: str) -> None:
    async with running(config(migrated_schema), database_url) as client:
        with trio.fail_after(2):
            await client.stop()
        assert not client.started


async def test_stop_waits_for_a_running_job(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    started = trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        started.set()
        await trio.sleep(0.05)  # the job's own work, not synchronisation

    async with running(config(migrated_schema, workers=task_workers(work)), database_url) as c:
        res = await c.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        await c.stop()
        assert (await row(driver, res.job.id)).state == JobState.COMPLETED


async def test_bounded_stop_does_not_cancel_the_job(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    started, release = trio.Event(), trio.Event()
    cancelled = False

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal cancelled
        started.set()
        try:
            await release.wait()
        except trio.Cancelled:
            cancelled = True
            raise

    async with running(config(migrated_schema, workers=task_workers(work)), database_url) as c:
        res = await c.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        with trio.move_on_after(0.05) as scope:
            await c.stop()
        assert scope.cancelled_caught, "stop returned while a job was still running"
        assert not cancelled
        assert (await row(driver, res.job.id)).state == JobState.RUNNING
        release.set()
        with trio.fail_after(10):
            await c.stop()
        assert (await row(driver, res.job.id)).state == JobState.COMPLETED
        assert not cancelled


async def test_continuous_inserts_then_stop_leaves_nothing_running(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with running(config(migrated_schema, max_workers=20), database_url) as client:
        inserted = 0

        async def insert_forever() -> None:
            nonlocal inserted
            while True:
                await client.insert(Noop())
                inserted += 1

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(insert_forever)
            async with client.subscribe(EventKind.JOB_COMPLETED) as events:
                await events_until(events, 50)
            await client.stop()
            nursery.cancel_scope.cancel()
    counts = await states(driver)
    assert counts.get("running", 0) == 0
    assert counts.get("completed", 0) >= 50
    assert sum(counts.values()) >= inserted


async def test_stop_after_100_events_with_a_subscriber(
    database_url: str, migrated_schema: str
) -> None:
    hundred = trio.Event()
    drained = trio.Event()
    seen = 0

    async def consume(events: trio.MemoryReceiveChannel[rivertrio.Event]) -> None:
        nonlocal seen
        async for _ in events:  # reads on through the stop, until the channel closes
            seen += 1
            if seen == 100:
                hundred.set()
        drained.set()

    async def insert_forever(client: rivertrio.Client) -> None:
        while True:
            await client.insert_many([Noop(n=i) for i in range(20)])

    async with (
        running(config(migrated_schema, max_workers=50), database_url) as client,
        trio.open_nursery() as nursery,
        client.subscribe(EventKind.JOB_COMPLETED, buffer=10) as events,
    ):
        nursery.start_soon(consume, events)
        nursery.start_soon(insert_forever, client)
        with trio.fail_after(20):
            await hundred.wait()
            # No deadlock between the completer and the subscription manager.
            await client.stop()
            await drained.wait()
        nursery.cancel_scope.cancel()
    assert seen >= 100


async def test_stop_and_cancel_cancels_running_jobs(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    blocker = Blocker()
    async with running(config(migrated_schema, workers=blocker.workers()), database_url) as c:
        res = await c.insert(Task())
        await blocker.wait_started()
        with trio.fail_after(10):
            await c.stop_and_cancel()
        assert not c.started
    assert (await row(driver, res.job.id)).state == JobState.AVAILABLE


async def test_stop_and_cancel_never_started(driver: Driver, migrated_schema: str) -> None:
    client = rivertrio.Client(config(migrated_schema), driver)
    with trio.fail_after(2):
        await client.stop_and_cancel()
        await client.stop()


async def test_stop_then_stop_and_cancel(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    blocker = Blocker()
    async with running(config(migrated_schema, workers=blocker.workers()), database_url) as c:
        await c.insert(Task())
        await blocker.wait_started()
        soft_returned = trio.Event()
        async with trio.open_nursery() as nursery:

            async def soft() -> None:
                await c.stop()
                soft_returned.set()

            nursery.start_soon(soft)
            await trio.testing.wait_all_tasks_blocked()
            assert not soft_returned.is_set()
            with trio.fail_after(10):
                await c.stop_and_cancel()
        assert blocker.cancelled
        assert soft_returned.is_set()


async def test_soft_stop_timeout_cancels_after_it(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    blocker = Blocker()
    cfg = config(migrated_schema, workers=blocker.workers(), soft_stop_timeout=0.1)
    async with running(cfg, database_url) as c:
        res = await c.insert(Task())
        await blocker.wait_started()
        t0 = trio.current_time()
        with trio.fail_after(10):
            await c.stop()
        elapsed = trio.current_time() - t0
        assert 0.1 <= elapsed < 5
    assert (await row(driver, res.job.id)).state == JobState.AVAILABLE


async def test_leaving_open_client_by_an_exception_is_a_hard_stop(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    blocker = Blocker()  # its job never ends: a soft stop would wait for it forever
    cfg = config(migrated_schema, workers=blocker.workers())
    inserted: list[int] = []

    async def fail_while_the_job_runs() -> None:
        async with running(cfg, database_url) as c:
            inserted.append((await c.insert(Task())).job.id)
            await blocker.wait_started()
            raise KeyError("the block's own error")

    with pytest.raises(KeyError, match="the block's own error"):
        await fail_while_the_job_runs()
    # Interrupted, and its outcome persisted before open_client returned.
    stored = await row(driver, inserted[0])
    assert stored.state == JobState.AVAILABLE
    assert stored.attempt == 0


async def test_interrupted_job_is_restored_then_fails_for_real(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    started = trio.Event()
    fail_now = False

    async def work(job: rivertrio.Job[Task]) -> None:
        if fail_now:
            raise RuntimeError("real failure")
        started.set()
        await trio.sleep_forever()

    # A retry far enough away that the failure below is `retryable`, not `available`.
    cfg = config(migrated_schema, workers=task_workers(work), retry_policy=lambda job: 100.0)
    async with running(cfg, database_url) as c, c.subscribe(*EventKind) as events:
        res = await c.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        await c.stop_and_cancel()
        event = await next_event(events)
        assert event.kind == EventKind.JOB_INTERRUPTED
        assert event.job is not None and event.job.id == res.job.id
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.AVAILABLE
    assert stored.attempt == 0
    assert stored.errors == []
    assert stored.finalized_at is None

    # Worked again after a restart, failing for real: retryable, attempt 1, one error.
    fail_now = True
    async with running(cfg, database_url) as c, c.subscribe(EventKind.JOB_FAILED) as events:
        await c.insert(Noop())  # wakes the producer at once
        event = await next_event(events)
        assert event.job is not None and event.job.id == res.job.id
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.RETRYABLE
    assert stored.attempt == 1
    assert len(stored.errors) == 1
    assert "real failure" in stored.errors[0].error


async def test_enclosing_scope_cancelled_loses_nothing(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    """Cancelling the scope around the client while jobs run loses no outcome or event."""
    n_blocking = 5
    started = 0
    all_started = trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal started
        if job.args.name == "block":
            started += 1
            if started == n_blocking:
                all_started.set()
            await trio.sleep_forever()

    cfg = config(migrated_schema, workers=task_workers(work))
    received: list[rivertrio.Event] = []
    channel_closed = trio.Event()

    async def consume(
        client: rivertrio.Client, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with client.subscribe(*EventKind) as events:
            task_status.started()
            received.extend([event async for event in events])
        channel_closed.set()

    with trio.fail_after(30):
        # The consumer runs outside the cancelled scope, as a user's reporting
        # task would, so it sees its channel end once the client has stopped.
        async with trio.open_nursery() as consumers:
            with trio.CancelScope() as outer:
                async with rivertrio.open_client(cfg, database_url=database_url) as client:
                    await consumers.start(consume, client)
                    blocking = await client.insert_many([Task(name="block")] * n_blocking)
                    quick = await client.insert_many([Task(name="quick")] * 20)
                    await all_started.wait()
                    outer.cancel()
                    await trio.sleep_forever()
            assert outer.cancelled_caught
            await channel_closed.wait()
    counts = await states(driver)
    assert counts.get("running", 0) == 0
    ids = {r.job.id for r in blocking}
    interrupted = {e.job.id for e in received if e.kind == EventKind.JOB_INTERRUPTED and e.job}
    assert ids <= interrupted
    for job_id in ids:
        assert (await row(driver, job_id)).state == JobState.AVAILABLE
    # Every persisted outcome reached the subscriber exactly once.
    job_events = [e.job.id for e in received if e.job is not None]
    assert len(job_events) == len(set(job_events))
    completed = {e.job.id for e in received if e.kind == EventKind.JOB_COMPLETED and e.job}
    stored_completed = {
        r["id"]
        for r in await driver.fetch("SELECT id FROM /*schema*/river_job WHERE state = 'completed'")
    }
    assert completed == stored_completed
    assert stored_completed <= {r.job.id for r in quick}


async def test_enclosing_scope_cancelled_with_a_subscriber_inside(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    """The subscriber lives inside the cancelled scope too: nothing raises from the library."""
    blocker = Blocker()
    cfg = config(migrated_schema, workers=blocker.workers())
    with trio.fail_after(30), trio.CancelScope() as outer:
        async with (
            rivertrio.open_client(cfg, database_url=database_url) as client,
            client.subscribe(*EventKind) as events,
        ):
            await client.insert_many([Task()] * 3)
            await blocker.wait_started()
            outer.cancel()
            async for _ in events:
                pass
    assert outer.cancelled_caught
    assert (await states(driver)).get("running", 0) == 0


async def test_start_stop_start_again(driver: Driver, migrated_schema: str) -> None:
    client = rivertrio.Client(config(migrated_schema), driver)
    for round_ in range(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            async with client.subscribe(EventKind.JOB_COMPLETED) as events:
                res = await client.insert(Noop(n=round_))
                event = await next_event(events)
                assert event.job is not None and event.job.id == res.job.id
            await client.stop()
    assert (await states(driver)) == {"completed": 2}


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_job_reaches_its_client_and_context(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    seen: list[str] = []

    async def work(job: rivertrio.Job[Task]) -> None:
        seen.append(request_id.get("unset"))
        if job.args.n == 0:
            await rivertrio.current_client().insert(Task(n=1))

    request_id.set("req-42")
    cfg = config(migrated_schema, workers=task_workers(work))
    async with running(cfg, database_url) as c, c.subscribe(EventKind.JOB_COMPLETED) as events:
        await c.insert(Task(n=0))
        await events_until(events, 2)
    assert seen == ["req-42", "req-42"]
    assert (await states(driver)) == {"completed": 2}
    with pytest.raises(RuntimeError, match="inside a job"):
        rivertrio.current_client()


async def test_subscribe_on_insert_only_client_explains(
    driver: Driver, migrated_schema: str
) -> None:
    client = rivertrio.Client(rivertrio.Config(schema=migrated_schema), driver)
    with pytest.raises(rivertrio.ConfigError, match="insert-only"):
        client.subscribe(EventKind.JOB_COMPLETED)
