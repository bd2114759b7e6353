"""Maintenance: scheduler, rescuer, cleaners, leader-only, fast rescue of dead clients' jobs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._driver._liveness import open_lock_connection
from rivertrio._driver._maintenance import rescue_jobs
from rivertrio._elector import Elector
from rivertrio._exceptions import LivenessError
from rivertrio._liveness import CLIENT_ID_MARKER, Liveness, liveness_key
from rivertrio._maintenance import (
    JobCleaner,
    JobRescuer,
    JobScheduler,
    Maintainer,
    MaintenanceSettings,
    QueueCleaner,
)
from rivertrio._maintenance._rescuer import RESCUED_ERROR
from support.common import Noop, row
from support.maintenance import HookedDriver, first_passes_done, job_state, make_job

pytestmark = pytest.mark.timeout(60)


@dataclass
class Slow(rivertrio.JobArgs, kind="slow"):
    n: int = 0


class SlowWorker(rivertrio.Worker[Slow]):
    """A worker allowed far longer than rescue_stuck_jobs_after."""

    async def work(self, job: rivertrio.Job[Slow]) -> None:
        pass

    def timeout(self, job: rivertrio.Job[Slow]) -> float:
        return 10_000.0


def rescue_config(schema: str, **fields: Any) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Noop)
    async def noop(job: rivertrio.Job[Noop]) -> None:
        pass

    workers.add(SlowWorker())
    fields.setdefault("rescue_stuck_jobs_after", 60.0)
    fields.setdefault("job_timeout", 30.0)
    fields.setdefault("retry_policy", lambda job: 100.0)
    return rivertrio.Config(schema=schema, workers=workers, **fields)


def marked_id(name: str = "client") -> str:
    """A unique rivertrio-style client id (tests run in parallel on one server)."""
    return f"{name}-{uuid.uuid4().hex[:8]}{CLIENT_ID_MARKER}"


# -- 82, 83: scheduler --


async def test_scheduler_makes_due_jobs_available_and_notifies_once_per_queue(
    driver: Driver,
) -> None:
    due = [
        await make_job(driver, state="scheduled", queue="alpha", scheduled_in=-5),
        await make_job(driver, state="scheduled", queue="alpha", scheduled_in=-1),
        await make_job(driver, state="retryable", queue="alpha", scheduled_in=-3),
        await make_job(driver, state="retryable", queue="beta", scheduled_in=-2),
    ]
    later = [
        await make_job(driver, state="scheduled", queue="alpha", scheduled_in=3600),
        await make_job(driver, state="retryable", queue="gamma", scheduled_in=3600),
    ]
    running = await make_job(driver, state="running", queue="gamma", attempted_ago=1, attempt=1)
    woken: list[frozenset[str]] = []
    scheduler = JobScheduler(driver, on_available=woken.append)
    listener = await driver.open_listener()
    try:
        await listener.listen("river_insert")
        with trio.fail_after(10):
            result = await scheduler.run_once()
            # Notifications arrive in commit order: the marker comes after the scheduler's.
            await driver.notify("river_insert", json.dumps({"queue": "zz-end"}))
            queues = []
            while True:
                note = await listener.receive.receive()
                queue = json.loads(note.payload)["queue"]
                if queue == "zz-end":
                    break
                queues.append(queue)
    finally:
        await listener.aclose()
    assert sorted(queues) == ["alpha", "beta"]
    assert result.made_available == 4 and result.discarded == 0
    assert result.queues == {"alpha", "beta"}
    assert woken == [frozenset({"alpha", "beta"})]
    for job_id in due:
        assert await job_state(driver, job_id) == "available"
    assert await job_state(driver, later[0]) == "scheduled"
    assert await job_state(driver, later[1]) == "retryable"
    assert await job_state(driver, running) == "running"
    # A second pass finds nothing to do.
    assert not await scheduler.run_once()


async def test_scheduler_without_notify_sends_none(driver: Driver) -> None:
    await make_job(driver, state="scheduled", queue="alpha", scheduled_in=-1)
    listener = await driver.open_listener()
    try:
        await listener.listen("river_insert")
        with trio.fail_after(10):
            result = await JobScheduler(driver, notify=False).run_once()
            await driver.notify("river_insert", json.dumps({"queue": "zz-end"}))
            note = await listener.receive.receive()
    finally:
        await listener.aclose()
    assert result.made_available == 1
    assert json.loads(note.payload)["queue"] == "zz-end"


async def test_scheduler_works_in_batches(driver: Driver) -> None:
    ids = [await make_job(driver, state="scheduled", scheduled_in=-1) for _ in range(5)]
    with trio.fail_after(10):
        result = await JobScheduler(driver, batch_size=2).run_once()
    assert result.made_available == 5
    for job_id in ids:
        assert await job_state(driver, job_id) == "available"


async def test_scheduler_discards_job_whose_unique_key_is_taken(driver: Driver) -> None:
    key = uuid.uuid4().bytes * 2
    # The default unique states without retryable: a retryable copy can exist
    # beside an available one, and then cannot become available itself.
    states = 0xF5 & ~0x20
    holder = await make_job(driver, state="available", unique_key=key, unique_states=states)
    later = await make_job(
        driver,
        state="retryable",
        scheduled_in=-1,
        unique_key=key,
        unique_states=states,
        metadata={"keep": 1},
    )
    # Two due copies of another key: the first in fetch order wins.
    other = uuid.uuid4().bytes * 2
    first = await make_job(
        driver, state="retryable", scheduled_in=-10, unique_key=other, unique_states=states
    )
    second = await make_job(
        driver, state="retryable", scheduled_in=-5, unique_key=other, unique_states=states
    )
    plain = await make_job(driver, state="scheduled", scheduled_in=-1)
    with trio.fail_after(10):
        result = await JobScheduler(driver).run_once()
    assert result.made_available == 2 and result.discarded == 2
    lost = await row(driver, later)
    assert lost.state == rivertrio.JobState.DISCARDED
    assert lost.finalized_at is not None
    assert lost.metadata == {"keep": 1, "unique_key_conflict": "scheduler_discarded"}
    assert await job_state(driver, holder) == "available"
    assert await job_state(driver, first) == "available"
    second_row = await row(driver, second)
    assert second_row.state == rivertrio.JobState.DISCARDED
    assert second_row.metadata["unique_key_conflict"] == "scheduler_discarded"
    assert await job_state(driver, plain) == "available"


# -- 84, 85, 86: rescuer --


async def test_rescuer_rescues_stuck_jobs_and_leaves_younger_ones(
    driver: Driver, migrated_schema: str
) -> None:
    cfg = rescue_config(migrated_schema)
    by = ["old-client"]
    retried = await make_job(driver, state="running", attempt=2, attempted_ago=120, attempted_by=by)
    exhausted = await make_job(
        driver, state="running", attempt=3, max_attempts=3, attempted_ago=120, attempted_by=by
    )
    cancelled = await make_job(
        driver,
        state="running",
        attempt=1,
        attempted_ago=120,
        attempted_by=by,
        metadata={"cancel_attempted_at": "2026-01-01T00:00:00Z"},
    )
    young = await make_job(driver, state="running", attempt=1, attempted_ago=10, attempted_by=by)
    unknown_kind = await make_job(
        driver, state="running", kind="not-ours", attempt=1, attempted_ago=120, attempted_by=by
    )
    before = await row(driver, cancelled)
    with trio.fail_after(10):
        result = await JobRescuer(driver, cfg).run_once()
    assert (result.retried, result.discarded, result.cancelled) == (2, 1, 1)
    assert result.orphans == 0

    r = await row(driver, retried)
    assert r.state == rivertrio.JobState.RETRYABLE
    assert r.finalized_at is None
    assert r.attempt == 2
    (err,) = r.errors
    assert err.error.startswith(RESCUED_ERROR) and "rescue_stuck_jobs_after" in err.error
    assert err.attempt == 2
    # The retry policy says 100 s (from the database's now).
    assert r.attempted_at is not None
    delay = (r.scheduled_at - r.attempted_at).total_seconds()
    assert 100 + 120 - 5 < delay < 100 + 120 + 5
    assert r.metadata["river:rescue_count"] == 1

    d = await row(driver, exhausted)
    assert d.state == rivertrio.JobState.DISCARDED
    assert d.finalized_at is not None and len(d.errors) == 1

    c = await row(driver, cancelled)
    assert c.state == rivertrio.JobState.CANCELLED
    assert c.finalized_at is not None
    assert c.scheduled_at == before.scheduled_at

    assert await job_state(driver, young) == "running"
    # A kind this client has no worker for is retried, not discarded.
    assert await job_state(driver, unknown_kind) == "retryable"


async def test_rescuer_uses_worker_next_retry(driver: Driver, migrated_schema: str) -> None:
    @dataclass
    class Later(rivertrio.JobArgs, kind="later"):
        pass

    class LaterWorker(rivertrio.Worker[Later]):
        async def work(self, job: rivertrio.Job[Later]) -> None:
            pass

        def next_retry(self, job: rivertrio.Job[Later]) -> Any:
            assert job.attempted_at is not None
            return job.attempted_at + timedelta(days=2)

    workers = rivertrio.Workers()
    workers.add(LaterWorker())
    cfg = rivertrio.Config(
        schema=migrated_schema, workers=workers, rescue_stuck_jobs_after=60, job_timeout=30
    )
    job_id = await make_job(driver, state="running", kind="later", attempt=1, attempted_ago=120)
    with trio.fail_after(10):
        await JobRescuer(driver, cfg).run_once()
    r = await row(driver, job_id)
    assert r.state == rivertrio.JobState.RETRYABLE
    assert r.attempted_at is not None
    assert r.scheduled_at - r.attempted_at == timedelta(days=2)


async def test_rescuer_leaves_job_that_finished_between_select_and_update(
    driver: Driver, migrated_schema: str
) -> None:
    finished = await make_job(driver, state="running", attempt=1, attempted_ago=120)
    refetched = await make_job(driver, state="running", attempt=1, attempted_ago=120)
    untouched = await make_job(driver, state="running", attempt=1, attempted_ago=120)

    async def meanwhile() -> None:
        # The worker completes one job, and another is retried and fetched again
        # (a new attempt), after the rescuer selected them and before it updates.
        await driver.execute(
            "UPDATE /*schema*/river_job SET state = 'completed', finalized_at = now() "
            "WHERE id = $1",
            finished,
        )
        await driver.execute(
            "UPDATE /*schema*/river_job SET attempt = 2, attempted_at = now() WHERE id = $1",
            refetched,
        )

    hooked = HookedDriver(driver, rescue_jobs, meanwhile)
    with trio.fail_after(10):
        result = await JobRescuer(hooked, rescue_config(migrated_schema)).run_once()  # type: ignore[arg-type]
    assert hooked.hooked == 1
    assert result.retried == 1
    done = await row(driver, finished)
    assert done.state == rivertrio.JobState.COMPLETED and done.errors == []
    again = await row(driver, refetched)
    assert again.state == rivertrio.JobState.RUNNING and again.errors == []
    assert await job_state(driver, untouched) == "retryable"


async def test_rescuer_full_batch_of_skipped_jobs_does_not_hide_a_rescuable_one(
    driver: Driver, migrated_schema: str
) -> None:
    # Slow's worker allows 10,000 s: its stuck-looking jobs are skipped, and
    # with a batch of 2 they fill the first batches entirely.
    skipped = [
        await make_job(driver, state="running", kind="slow", attempt=1, attempted_ago=120)
        for _ in range(4)
    ]
    rescuable = await make_job(driver, state="running", attempt=1, attempted_ago=120)
    rescuer = JobRescuer(driver, rescue_config(migrated_schema), batch_size=2)
    with trio.fail_after(10):
        result = await rescuer.run_once()
    assert result.skipped == 4 and result.retried == 1
    assert await job_state(driver, rescuable) == "retryable"
    for job_id in skipped:
        assert await job_state(driver, job_id) == "running"


async def test_rescuer_rescues_slow_kind_once_its_own_timeout_passed(
    driver: Driver, migrated_schema: str
) -> None:
    job_id = await make_job(driver, state="running", kind="slow", attempt=1, attempted_ago=20_000)
    with trio.fail_after(10):
        await JobRescuer(driver, rescue_config(migrated_schema)).run_once()
    assert await job_state(driver, job_id) == "retryable"


# -- fast rescue: liveness locks --


async def test_liveness_lock_is_visible_in_pg_locks_and_released_on_stop(driver: Driver) -> None:
    client_id = marked_id()
    liveness = Liveness(driver, client_id)
    key = liveness_key(driver.schema, client_id)
    assert liveness.key == key
    held_sql = """
        SELECT count(*) FROM pg_locks
        WHERE locktype = 'advisory' AND objsubid = 1 AND granted
            AND classid = (($1::bigint >> 32) & 4294967295)::oid
            AND objid = ($1::bigint & 4294967295)::oid
    """
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            assert liveness.held and liveness.backend_pid is not None
            assert await driver.fetchval(held_sql, key) == 1
            liveness.stop()
        assert not liveness.held
        assert await driver.fetchval(held_sql, key) == 0


async def test_liveness_refuses_an_id_in_use(driver: Driver) -> None:
    client_id = marked_id()
    first = Liveness(driver, client_id)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            with pytest.raises(LivenessError, match="in use"):
                await nursery.start(Liveness(driver, client_id).run)
            first.stop()


async def test_liveness_notices_a_lost_connection_and_takes_the_lock_again(
    driver: Driver,
) -> None:
    liveness = Liveness(driver, marked_id(), check_interval=0.2)
    lost_calls: list[str] = []
    liveness.on_lost(lambda: lost_calls.append("lost"))
    liveness.on_regained(lambda: lost_calls.append("regained"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            lost = liveness.lost
            first_pid = liveness.backend_pid
            await driver.execute("SELECT pg_terminate_backend($1)", first_pid)
            await lost.wait()
            await liveness.regains.wait_for(1)
            assert liveness.held and liveness.backend_pid != first_pid
            assert not liveness.lost.is_set()
            liveness.stop()
    assert lost_calls == ["lost", "regained"]


async def test_fast_rescue_of_a_dead_clients_job(driver: Driver, migrated_schema: str) -> None:
    grace = 1.0
    dead_id, river_id = marked_id("dead"), f"river-go-{uuid.uuid4().hex[:8]}"
    rescuer = JobRescuer(
        driver,
        rescue_config(migrated_schema, rescue_stuck_jobs_after=3600, job_timeout=None),
        orphan_interval=0.1,
        orphan_grace=grace,
    )
    # The client's lock on a connection of its own, as Liveness holds it; killing
    # that session below is what a dying process does to it.
    lock = await open_lock_connection(driver, liveness_key(driver.schema, dead_id))
    assert lock is not None
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                orphan = await make_job(
                    driver, state="running", attempt=1, attempted_ago=60, attempted_by=[dead_id]
                )
                # Earlier attempts by the dead client do not matter, only the last one.
                elsewhere = await make_job(
                    driver,
                    state="running",
                    attempt=2,
                    attempted_ago=60,
                    attempted_by=[dead_id, river_id],
                )
                await nursery.start(rescuer.run)
                # While the lock is held, passes spanning the grace leave the job alone.
                start = trio.current_time()
                while trio.current_time() - start < 2 * grace:
                    await rescuer.passes.wait_for(rescuer.passes.value + 1)
                assert await job_state(driver, orphan) == "running"

                killed_at = trio.current_time()
                await driver.execute("SELECT pg_terminate_backend($1)", lock.backend_pid)
                while await job_state(driver, orphan) == "running":
                    await rescuer.passes.wait_for(rescuer.passes.value + 1)
                took = trio.current_time() - killed_at
                rescuer.stop()
    finally:
        await lock.aclose()
    # Seen lockless, confirmed once the grace has passed, rescued in that pass.
    assert grace <= took < grace + 2.0
    r = await row(driver, orphan)
    assert r.state == rivertrio.JobState.RETRYABLE
    (err,) = r.errors
    assert err.error.startswith(RESCUED_ERROR) and dead_id in err.error and "died" in err.error
    assert await job_state(driver, elsewhere) == "running"


async def test_fast_rescue_spares_live_clients_and_unmarked_ids(
    driver: Driver, migrated_schema: str
) -> None:
    live_id = marked_id("live")
    # Never held a lock and has no marker: a River Go client, alive or not.
    river_id = f"river-go-{uuid.uuid4().hex[:8]}"
    # A marked id that never held a lock: dead from the start.
    dead_id = marked_id("dead")
    live = Liveness(driver, live_id)
    rescuer = JobRescuer(
        driver,
        rescue_config(migrated_schema, rescue_stuck_jobs_after=3600, job_timeout=None),
        orphan_grace=0.0,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(live.run)
            slow = await make_job(
                driver, state="running", attempt=1, attempted_ago=600, attempted_by=[live_id]
            )
            river = await make_job(
                driver, state="running", attempt=1, attempted_ago=600, attempted_by=[river_id]
            )
            dead = await make_job(
                driver, state="running", attempt=1, attempted_ago=600, attempted_by=[dead_id]
            )
            result = await rescuer.run_once(stuck=False)
            live.stop()
    assert result.orphans == 1 and result.retried == 1
    assert await job_state(driver, dead) == "retryable"
    assert await job_state(driver, slow) == "running"
    assert await job_state(driver, river) == "running"
    # The time rule still applies to the River client's job.
    strict = JobRescuer(driver, rescue_config(migrated_schema, rescue_stuck_jobs_after=300))
    with trio.fail_after(10):
        await strict.run_once(orphans=False)
    assert await job_state(driver, river) == "retryable"


async def test_fast_rescue_rechecks_the_lock_at_update_time(
    driver: Driver, migrated_schema: str
) -> None:
    client_id = marked_id("back")
    job_id = await make_job(
        driver, state="running", attempt=1, attempted_ago=600, attempted_by=[client_id]
    )
    back = Liveness(driver, client_id)
    async with trio.open_nursery() as nursery:

        async def comes_back() -> None:
            # The client takes its lock again after the rescuer judged it dead.
            await nursery.start(back.run)

        hooked = HookedDriver(driver, rescue_jobs, comes_back)
        rescuer = JobRescuer(
            hooked,  # type: ignore[arg-type]
            rescue_config(migrated_schema, rescue_stuck_jobs_after=3600, job_timeout=None),
            orphan_grace=0.0,
        )
        with trio.fail_after(10):
            result = await rescuer.run_once(stuck=False)
        back.stop()
    assert hooked.hooked == 1
    assert not result
    assert await job_state(driver, job_id) == "running"


# -- 87, 88: cleaners --


async def test_cleaner_deletes_finalized_jobs_past_retention(driver: Driver) -> None:
    old_completed = await make_job(driver, state="completed", finalized_ago=7200)
    new_completed = await make_job(driver, state="completed", finalized_ago=10)
    old_cancelled = await make_job(driver, state="cancelled", finalized_ago=7200)
    old_discarded = await make_job(driver, state="discarded", finalized_ago=7200)
    new_discarded = await make_job(driver, state="discarded", finalized_ago=10)
    running = await make_job(driver, state="running", attempted_ago=7200, attempt=1)
    cleaner = JobCleaner(
        driver,
        completed_retention=3600,
        cancelled_retention=None,
        discarded_retention=60,
        batch_size=1,
    )
    with trio.fail_after(10):
        assert await cleaner.run_once() == 2
    assert await job_state(driver, old_completed) is None
    assert await job_state(driver, old_discarded) is None
    assert await job_state(driver, new_completed) == "completed"
    assert await job_state(driver, new_discarded) == "discarded"
    assert await job_state(driver, old_cancelled) == "cancelled"  # None keeps forever
    assert await job_state(driver, running) == "running"
    keep_all = JobCleaner(
        driver, completed_retention=None, cancelled_retention=None, discarded_retention=None
    )
    with trio.fail_after(10):
        assert await keep_all.run_once() == 0


async def test_queue_cleaner_deletes_idle_queues(driver: Driver) -> None:
    await driver.execute(
        """
        INSERT INTO /*schema*/river_queue (name, updated_at) VALUES
            ('stale', now() - interval '25 hours'),
            ('stale2', now() - interval '48 hours'),
            ('fresh', now() - interval '23 hours')
        """
    )
    with trio.fail_after(10):
        assert await QueueCleaner(driver, batch_size=1).run_once() == ["stale", "stale2"]
    names = await driver.fetch("SELECT name FROM /*schema*/river_queue")
    assert [r["name"] for r in names] == ["fresh"]


async def test_interval_service_runs_passes_and_wakes_early(driver: Driver) -> None:
    scheduler = JobScheduler(driver, interval=3600)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            await scheduler.passes.wait_for(1)
            job_id = await make_job(driver, state="scheduled", scheduled_in=-1)
            scheduler.wake()
            await scheduler.passes.wait_for(2)
            scheduler.stop()
    assert await job_state(driver, job_id) == "available"


# -- 90: only the leader runs maintenance --


async def test_only_the_leader_runs_maintenance(driver: Driver, migrated_schema: str) -> None:
    cfg = rescue_config(migrated_schema)
    settings = MaintenanceSettings(scheduler_interval=0.05)
    pairs = []
    for name in ("a", "b"):
        elector = Elector(driver, marked_id(name), elect_interval=0.2, ttl=2.0)
        pairs.append((elector, Maintainer.for_config(driver, cfg, elector, settings=settings)))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for elector, maintainer in pairs:
                await nursery.start(maintainer.run)
                await nursery.start(elector.run)
            # Wait until one of them leads.
            led = trio.Event()

            async def watch(maintainer: Maintainer) -> None:
                await maintainer.terms.wait_for(1)
                led.set()

            async with trio.open_nursery() as watchers:
                for _, maintainer in pairs:
                    watchers.start_soon(watch, maintainer)
                await led.wait()
                watchers.cancel_scope.cancel()
            leaders = [p for p in pairs if p[1].leading]
            assert len(leaders) == 1
            winner = leaders[0]
            (w_elector, w_maint) = winner
            (l_elector, l_maint) = next(p for p in pairs if p is not winner)
            w_sched = w_maint.service(JobScheduler)
            await w_sched.passes.wait_for(3)
            await first_passes_done(w_maint)
            # The loser has tried and lost at least once since.
            await l_elector.attempts.wait_for(l_elector.attempts.value + 1)
            assert not l_maint.leading and not l_elector.is_leader
            assert all(getattr(s, "stopped", True) for s in l_maint.services)
            assert l_maint.service(JobScheduler).passes.value == 0

            # A job due now is made available by the leader's scheduler.
            job_id = await make_job(driver, state="scheduled", scheduled_in=-1)
            await w_sched.passes.wait_for(w_sched.passes.value + 2)
            assert await job_state(driver, job_id) == "available"

            # The leader stops; the other takes over and its services run.
            w_maint.stop()
            w_elector.stop()
            await w_elector.wait_stopped()
            await w_maint.wait_stopped()
            assert not w_maint.leading
            await l_maint.terms.wait_for(1)
            assert l_maint.leading
            await first_passes_done(l_maint)
            assert w_sched.stopped
            l_maint.stop()
            l_elector.stop()


async def test_maintainer_stops_services_when_leadership_ends_and_restarts_them(
    driver: Driver, migrated_schema: str
) -> None:
    elector = Elector(driver, marked_id("flip"), elect_interval=0.1, ttl=1.0)
    settings = MaintenanceSettings(scheduler_interval=3600)
    maintainer = Maintainer.for_config(
        driver, rescue_config(migrated_schema), elector, settings=settings
    )
    scheduler = maintainer.service(JobScheduler)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(maintainer.run)
            await nursery.start(elector.run)
            await maintainer.terms.wait_for(1)
            term = elector.term
            assert term is not None and scheduler.started
            await first_passes_done(maintainer)
            elector.request_resign()
            await term.lost.wait()
            await maintainer.terms_ended.wait_for(1)
            assert not maintainer.leading
            assert all(s.stopped for s in maintainer.services)
            # After standing back for an interval it wins again: the same
            # services start afresh for the new term.
            await maintainer.terms.wait_for(2)
            assert scheduler.started and maintainer.leading
            await first_passes_done(maintainer, passes=2)
            maintainer.stop()
            elector.stop()
    assert scheduler.stopped and not maintainer.leading
