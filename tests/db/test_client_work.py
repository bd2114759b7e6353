"""Outcomes of work (complete, retry, discard, cancel, snooze, timeouts) and fetching."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pytest
import trio

import rivertrio
from rivertrio import EventKind, JobState
from rivertrio._driver import Driver
from rivertrio._driver._producer import fetch_jobs
from rivertrio._events import Outcome, OutcomeKind, QueueEvent
from rivertrio._executor import WorkConfig
from rivertrio._producer import Producer, ProducerConfig
from support.common import (
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

T = TypeVar("T")


async def work_one(
    database_url: str,
    schema: str,
    work: Any,
    *,
    args: Task | None = None,
    opts: rivertrio.InsertOpts | None = None,
    kinds: tuple[EventKind, ...] = tuple(EventKind),
    **fields: Any,
) -> tuple[rivertrio.Event, int]:
    """Insert one Task worked by `work`; return its first event and its id."""
    cfg = config(schema, workers=task_workers(work), **fields)
    async with running(cfg, database_url) as client, client.subscribe(*kinds) as events:
        res = await client.insert(args or Task(), opts)
        event = await next_event(events)
    assert event.job is not None and event.job.id == res.job.id
    return event, res.job.id


async def test_returning_completes(database_url: str, migrated_schema: str, driver: Driver) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        pass

    event, job_id = await work_one(database_url, migrated_schema, work)
    assert event.kind == EventKind.JOB_COMPLETED
    stored = await row(driver, job_id)
    assert stored.state == JobState.COMPLETED
    assert stored.finalized_at is not None
    assert event.job == stored
    assert event.stats is not None and event.stats.run_duration >= 0


async def test_failure_with_attempts_left_is_retryable(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        raise ValueError("boom")

    event, job_id = await work_one(
        database_url, migrated_schema, work, retry_policy=lambda job: 100.0
    )
    assert event.kind == EventKind.JOB_FAILED
    stored = await row(driver, job_id)
    assert stored.state == JobState.RETRYABLE
    assert stored.attempted_at is not None
    assert stored.scheduled_at - stored.attempted_at == timedelta(seconds=100)
    assert len(stored.errors) == 1
    assert stored.errors[0].attempt == 1


async def test_failure_retried_within_5s_is_available(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        if job.attempt == 1:
            raise ValueError("boom")

    cfg = config(migrated_schema, workers=task_workers(work), retry_policy=lambda job: 1.0)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        failed = await next_event(events)
        assert failed.kind == EventKind.JOB_FAILED
        assert failed.job is not None and failed.job.state == JobState.AVAILABLE
        # Due within a second, with no scheduler: the producer's poll finds it.
        completed = await next_event(events)
    assert completed.kind == EventKind.JOB_COMPLETED
    assert (await row(driver, res.job.id)).attempt == 2


async def test_failure_at_last_attempt_discards(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        raise ValueError("boom")

    event, job_id = await work_one(
        database_url, migrated_schema, work, opts=rivertrio.InsertOpts(max_attempts=1)
    )
    assert event.kind == EventKind.JOB_FAILED
    stored = await row(driver, job_id)
    assert stored.state == JobState.DISCARDED
    assert stored.finalized_at is not None


async def test_error_record_has_type_message_and_trace(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    def inner() -> None:
        raise KeyError("missing-thing")

    async def work(job: rivertrio.Job[Task]) -> None:
        inner()

    _, job_id = await work_one(database_url, migrated_schema, work)
    (error,) = (await row(driver, job_id)).errors
    assert error.error.startswith("KeyError")
    assert "missing-thing" in error.error
    assert "inner()" in error.trace and "Traceback" in error.trace
    assert error.attempt == 1
    assert abs((datetime.now(UTC) - error.at).total_seconds()) < 60


async def test_job_cancel_cancels_at_once(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        raise rivertrio.JobCancel("not needed any more")

    event, job_id = await work_one(database_url, migrated_schema, work)
    assert event.kind == EventKind.JOB_CANCELLED
    stored = await row(driver, job_id)
    assert stored.state == JobState.CANCELLED
    assert stored.finalized_at is not None
    assert "not needed any more" in stored.errors[-1].error


async def test_snooze_30s_is_scheduled(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        raise rivertrio.JobSnooze(30)

    event, job_id = await work_one(database_url, migrated_schema, work)
    assert event.kind == EventKind.JOB_SNOOZED
    stored = await row(driver, job_id)
    assert stored.state == JobState.SCHEDULED
    assert stored.attempt == 0
    assert stored.metadata["snoozes"] == 1
    assert stored.attempted_at is not None
    ahead = (stored.scheduled_at - stored.attempted_at).total_seconds()
    assert 29 < ahead < 40


async def test_snooze_0_is_available_at_once(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        if not job.metadata.get("snoozes"):
            raise rivertrio.JobSnooze(0)

    cfg = config(migrated_schema, workers=task_workers(work))
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        snoozed, completed = await events_until(events, 2)
    assert snoozed.kind == EventKind.JOB_SNOOZED
    assert snoozed.job is not None and snoozed.job.state == JobState.AVAILABLE
    assert completed.kind == EventKind.JOB_COMPLETED
    stored = await row(driver, res.job.id)
    assert stored.attempt == 1  # the snooze gave its attempt back
    assert stored.metadata["snoozes"] == 1


async def test_error_handler_may_cancel(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    handled: list[BaseException] = []

    async def handler(job: rivertrio.JobRow, error: BaseException) -> rivertrio.ErrorHandlerResult:
        handled.append(error)
        return rivertrio.ErrorHandlerResult(set_cancelled=True)

    async def work(job: rivertrio.Job[Task]) -> None:
        raise ValueError("boom")

    event, job_id = await work_one(database_url, migrated_schema, work, error_handler=handler)
    assert event.kind == EventKind.JOB_CANCELLED
    assert (await row(driver, job_id)).state == JobState.CANCELLED
    assert [type(e) for e in handled] == [ValueError]


async def test_raising_error_handler_is_contained(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(job: rivertrio.JobRow, error: BaseException) -> None:
        raise RuntimeError("handler broke")

    async def work(job: rivertrio.Job[Task]) -> None:
        raise ValueError("boom")

    event, job_id = await work_one(
        database_url, migrated_schema, work, error_handler=handler, retry_policy=lambda j: 100.0
    )
    assert event.kind == EventKind.JOB_FAILED
    assert (await row(driver, job_id)).state == JobState.RETRYABLE
    assert "handler broke" in caplog.text


class RetryAt(rivertrio.Worker[Task]):
    def __init__(self, when: datetime) -> None:
        self.when = when

    async def work(self, job: rivertrio.Job[Task]) -> None:
        raise ValueError("boom")

    def next_retry(self, job: rivertrio.Job[Task]) -> datetime | None:
        return self.when


@pytest.mark.parametrize("future", [True, False])
async def test_worker_next_retry(
    database_url: str, migrated_schema: str, driver: Driver, future: bool
) -> None:
    when = datetime.now(UTC) + (timedelta(hours=3) if future else -timedelta(hours=3))
    workers = rivertrio.Workers()
    workers.add(RetryAt(when))
    cfg = config(migrated_schema, workers=workers, retry_policy=lambda job: 1000.0)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        await next_event(events)
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.RETRYABLE
    if future:
        assert abs((stored.scheduled_at - when).total_seconds()) < 0.001
    else:
        assert stored.attempted_at is not None
        assert stored.scheduled_at - stored.attempted_at == timedelta(seconds=1000)


async def test_unknown_kind_fails_and_is_retried_later(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as inserter:
        res = await inserter.insert(Task())  # no worker for "task" in the client below
    workers = rivertrio.Workers()

    @workers.register(Noop)
    async def noop(job: rivertrio.Job[Noop]) -> None:
        pass

    cfg = config(migrated_schema, workers=workers, retry_policy=lambda job: 100.0)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        await client.insert(Noop())  # wake the producer
        got = await events_until(events, 2)
    failed = next(e for e in got if e.job is not None and e.job.id == res.job.id)
    assert failed.kind == EventKind.JOB_FAILED
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.RETRYABLE
    assert "UnknownJobKindError" in stored.errors[0].error


class Sleeper(rivertrio.Worker[Task]):
    def __init__(self, timeout: Any) -> None:
        self._timeout = timeout

    async def work(self, job: rivertrio.Job[Task]) -> None:
        await trio.sleep(job.args.n / 1000)  # the job's own work, not synchronisation

    def timeout(self, job: rivertrio.Job[Task]) -> Any:
        return self._timeout


@pytest.mark.parametrize(
    ("worker_timeout", "job_timeout", "sleep_ms", "expected"),
    [
        (0.05, None, 10_000, EventKind.JOB_FAILED),  # the worker's timeout wins
        (rivertrio.DEFAULT_TIMEOUT, 0.05, 10_000, EventKind.JOB_FAILED),  # else job_timeout
        (None, 0.05, 200, EventKind.JOB_COMPLETED),  # None: no timeout at all
        (5.0, 0.05, 200, EventKind.JOB_COMPLETED),  # the worker's longer timeout wins
    ],
)
async def test_timeouts(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    worker_timeout: Any,
    job_timeout: float | None,
    sleep_ms: int,
    expected: EventKind,
) -> None:
    workers = rivertrio.Workers()
    workers.add(Sleeper(worker_timeout))
    cfg = config(
        migrated_schema,
        workers=workers,
        job_timeout=job_timeout,
        rescue_stuck_jobs_after=3600.0,
        retry_policy=lambda job: 100.0,
    )
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task(n=sleep_ms))
        event = await next_event(events)
    assert event.kind == expected
    if expected == EventKind.JOB_FAILED:
        (error,) = (await row(driver, res.job.id)).errors
        assert "JobTimeoutError" in error.error


async def test_job_completed_in_its_own_transaction_is_left_alone(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def work(job: rivertrio.Job[Task]) -> None:
        async with rivertrio.current_client().transaction() as tx:
            await tx.execute(
                "UPDATE /*schema*/river_job SET state = 'completed', finalized_at = now(), "
                'metadata = metadata || \'{"by": "worker"}\' WHERE id = $1',
                job.id,
            )
        raise ValueError("the completer must not record this")

    event, job_id = await work_one(database_url, migrated_schema, work)
    stored = await row(driver, job_id)
    assert stored.state == JobState.COMPLETED
    assert stored.errors == []
    assert event.kind == EventKind.JOB_COMPLETED
    assert event.job is not None and event.job.metadata == {"by": "worker"}


@pytest.mark.parametrize("final", ["completed", "discarded"])
async def test_row_finished_by_someone_else_is_not_overwritten(
    database_url: str, migrated_schema: str, driver: Driver, final: str
) -> None:
    started, release = trio.Event(), trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        started.set()
        await release.wait()
        raise ValueError("late failure")

    cfg = config(migrated_schema, workers=task_workers(work))
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        res = await client.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        await driver.execute(
            f"UPDATE /*schema*/river_job SET state = '{final}', finalized_at = now() WHERE id = $1",
            res.job.id,
        )
        release.set()
        await next_event(events)
    stored = await row(driver, res.job.id)
    assert stored.state == JobState(final)
    assert stored.errors == []


# -- fetching --


async def test_idle_client_starts_a_new_job_well_before_the_poll(
    database_url: str, migrated_schema: str
) -> None:
    cfg = config(migrated_schema, fetch_poll_interval=30.0)
    other = rivertrio.Config(schema=migrated_schema)  # an insert-only client: NOTIFY path
    async with (
        running(cfg, database_url) as client,
        running(other, database_url) as inserter,
        client.subscribe(EventKind.JOB_COMPLETED) as events,
    ):
        for source in (client, inserter):
            t0 = trio.current_time()
            await source.insert(Noop())
            await next_event(events, within=5)
            assert trio.current_time() - t0 < 5  # the poll interval is 30 s


async def test_never_more_running_than_max_workers(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    running_now = 0
    five = trio.Event()
    release = trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal running_now
        running_now += 1
        if running_now == 5:
            five.set()
        await release.wait()

    cfg = config(migrated_schema, workers=task_workers(work), max_workers=5)
    async with running(cfg, database_url) as client:
        await client.insert_many([Task(n=i) for i in range(10)])
        with trio.fail_after(10):
            await five.wait()
        assert await states(driver) == {"running": 5, "available": 5}
        release.set()


async def test_fetch_order_and_due_only(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=10)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as inserter:
        plan = [
            (Task(name="p2-late"), rivertrio.InsertOpts(priority=2)),
            (Task(name="p1-late"), rivertrio.InsertOpts(priority=1)),
            (Task(name="p2-early"), rivertrio.InsertOpts(priority=2, scheduled_at=past)),
            (Task(name="p1-early"), rivertrio.InsertOpts(priority=1, scheduled_at=past)),
            (Task(name="p1-late-2"), rivertrio.InsertOpts(priority=1)),
            (Task(name="future"), rivertrio.InsertOpts(scheduled_at=past + timedelta(days=1))),
            (Task(name="other-queue"), rivertrio.InsertOpts(queue="other")),
            (Task(name="p4"), rivertrio.InsertOpts(priority=4)),
        ]
        await inserter.insert_many(plan)
    order: list[str] = []

    async def work(job: rivertrio.Job[Task]) -> None:
        order.append(job.args.name)

    cfg = config(migrated_schema, workers=task_workers(work), max_workers=1)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        await events_until(events, 6)
    assert order == ["p1-early", "p1-late", "p1-late-2", "p2-early", "p2-late", "p4"]


async def test_two_clients_never_run_the_same_job(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    runs: list[tuple[int, str]] = []

    async def work(job: rivertrio.Job[Task]) -> None:
        runs.append((job.id, job.attempted_by[-1]))
        await trio.sleep(0.002)  # the job's own work: long enough that both clients get some

    n = 300
    cfg_a = config(migrated_schema, workers=task_workers(work), id="client-a", max_workers=7)
    cfg_b = config(migrated_schema, workers=task_workers(work), id="client-b", max_workers=7)
    async with (
        running(cfg_a, database_url) as a,
        running(cfg_b, database_url) as b,
        a.subscribe(EventKind.JOB_COMPLETED) as events_a,
        b.subscribe(EventKind.JOB_COMPLETED) as events_b,
    ):
        await a.insert_many([Task(n=i) for i in range(n)])
        done = 0
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def count(events: trio.MemoryReceiveChannel[rivertrio.Event]) -> None:
                    nonlocal done
                    async for _ in events:
                        done += 1
                        if done == n:
                            nursery.cancel_scope.cancel()

                nursery.start_soon(count, events_a)
                nursery.start_soon(count, events_b)
    ids = [job_id for job_id, _ in runs]
    assert len(ids) == n
    assert len(set(ids)) == n
    assert {who for _, who in runs} == {"client-a", "client-b"}


class CountingDriver:
    """A real driver that records each fetch: what it asked for, what it got."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.fetches: list[tuple[int, int]] = []

    @property
    def configured_schema(self) -> str | None:
        """The wrapped driver's schema."""
        return self.inner.configured_schema

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any) -> T:
        """Run ``fn`` on the real driver, noting a fetch's limit and rows."""
        result = await self.inner.run(fn, *args)
        if fn is fetch_jobs:
            self.fetches.append((args[2], len(cast("list[Any]", result))))
        return result


async def test_a_fetch_takes_at_most_half_the_slots(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # Half at a time, so that the next fetch is in flight while the jobs of the
    # last one run; the slots still bound how many run at once.
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as inserter:
        await inserter.insert_many([Task(n=i) for i in range(150)])
    running_now = peak = 0
    all_slots = trio.Event()
    release = trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        if running_now == 100:
            all_slots.set()
        await release.wait()
        running_now -= 1

    counting = CountingDriver(driver)
    cfg = config(migrated_schema, workers=task_workers(work))
    producer = Producer(
        ProducerConfig(
            driver=cast("Driver", counting),
            client_id="test-client",
            queue="default",
            max_workers=100,
            fetch_cooldown=0.001,
            fetch_poll_interval=1.0,
            work=WorkConfig(
                workers=cfg.workers,
                job_timeout=None,
                retry_policy=cfg.retry_policy,
                error_handler=None,
                enter_job=lambda: None,
            ),
        )
    )
    send, receive = trio.open_memory_channel[Outcome | QueueEvent](math.inf)
    producer.attach(send)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run)
            await all_slots.wait()
            assert counting.fetches[:2] == [(50, 50), (50, 50)]
            assert await states(driver) == {"running": 100, "available": 50}
            release.set()
            producer.stop()
    outcomes = [item async for item in receive]
    assert len(outcomes) >= 100
    assert all(isinstance(o, Outcome) and o.kind is OutcomeKind.COMPLETED for o in outcomes)
    assert all(limit <= 50 for limit, _ in counting.fetches)
    assert peak == 100


async def test_hard_stop_while_a_large_fetch_starts_leaves_nothing_running(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # A fetch of more jobs than one slice starts them a slice at a time; a hard
    # stop meanwhile must still give every fetched job its task, which is
    # interrupted and hands its row back.
    first = trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        first.set()
        await trio.sleep_forever()

    cfg = config(migrated_schema, workers=task_workers(work), max_workers=400)
    async with running(cfg, database_url) as client:
        await client.insert_many([Task(n=i) for i in range(400)])
        with trio.fail_after(10):
            await first.wait()
            await client.stop_and_cancel()
    assert await states(driver) == {"available": 400}
    attempts = await driver.fetch("SELECT DISTINCT attempt FROM /*schema*/river_job")
    assert [r["attempt"] for r in attempts] == [0]
