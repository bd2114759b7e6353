"""The database restarts while a client works a stream of jobs.

The Postgres server is the test's own (`TempPostgres`), stopped with ``-m fast``
(every session is terminated, as in a restart) and started again on the same
port. A producer task inserts continuously, a lossless subscriber records every
event, and a few "held" jobs finish while the server is down, so that their
outcomes reach the completer during the outage.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import rivertrio
from rivertrio import EventKind
from rivertrio._driver import Driver, open_driver
from support.common import Task, config, task_workers
from support.faults import (
    Load,
    Recorder,
    Tally,
    TempPostgres,
    job_states,
    print_figures,
    temp_postgres,
    wait_none_available,
    watch_logs,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.requires_program("pg_ctl")]

SCHEMA = "rt_fault"
HELD = 5


@asynccontextmanager
async def migrated(pg: TempPostgres) -> AsyncIterator[Driver]:
    """The server's `SCHEMA`, migrated; yields a driver on it."""
    async with open_driver(pg.url) as admin:
        await admin.execute(f'CREATE SCHEMA "{SCHEMA}"')
    await rivertrio.migrate(pg.url, schema=SCHEMA)
    async with open_driver(pg.url, schema=SCHEMA) as driver:
        yield driver


@asynccontextmanager
async def recorded_client(
    cfg: rivertrio.Config, url: str, recorder: Recorder
) -> AsyncIterator[tuple[rivertrio.Client, trio.Nursery]]:
    """A client on `url` whose every event `recorder` keeps; yields it and a nursery."""
    async with (
        trio.open_nursery() as nursery,
        rivertrio.open_client(cfg, database_url=url) as client,
        client.subscribe(*EventKind, buffer=50, overflow="block") as events,
    ):
        nursery.start_soon(recorder.run, events)
        yield client, nursery


class Work:
    """The worker: counts runs per job; "held" jobs wait for `release`."""

    def __init__(self) -> None:
        self.runs: collections.Counter[int] = collections.Counter()
        self.held: set[int] = set()
        self.held_running = trio.Event()
        self.release = trio.Event()

    async def work(self, job: rivertrio.Job[Task]) -> None:
        self.runs[job.id] += 1
        if job.args.name == "held" and not self.release.is_set():
            self.held.add(job.id)
            if len(self.held) == HELD:
                self.held_running.set()
            await self.release.wait()


async def rescue_by_a_new_client(
    url: str, cfg: rivertrio.Config, stranded: set[int], recorder: Recorder
) -> None:
    """Start another client and wait until it has worked the `stranded` jobs.

    Its leader's rescuer sees that their client is gone (its liveness lock was
    released when it stopped) and hands them back; the scheduler makes them
    available and the new client works them. While their client lived, only the
    stuck rule (``rescue_stuck_jobs_after``, an hour by default) could.
    """
    fresh = dataclasses.replace(cfg, id="", retry_policy=lambda job: 0.0)
    async with recorded_client(fresh, url, recorder) as (client, _):
        await recorder.wait_completed(stranded)
        await client.stop()


async def test_a_restart_loses_no_job_and_delivers_each_event_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work()
    recorder = Recorder()
    async with temp_postgres() as pg, migrated(pg) as driver:
        cfg = config(SCHEMA, workers=task_workers(work.work), max_workers=20)
        with watch_logs() as logs, trio.fail_after(50):
            async with recorded_client(cfg, pg.url, recorder) as (client, nursery):
                await client.insert_many([Task(name="held") for _ in range(HELD)])
                load = Load(client, 600)
                nursery.start_soon(load.run)
                await work.held_running.wait()
                await recorder.wait_until(lambda r: len(r.ids()) >= 100)

                await pg.stop("fast")
                down_at = trio.current_time()
                work.release.set()  # the held jobs end while the server is down
                # Hold the outage past the old retry budget (3 attempts, under 1 s).
                await logs.wait_for(r"persisting the outcomes of \d+ jobs failed", 3)
                await pg.start()
                up_at = trio.current_time()
                await recorder.wait_completed(work.held)
                recovered_at = trio.current_time()
                await load.done.wait()
                await wait_none_available(driver, recorder)
                assert client._tree.notifier is not None and client._tree.liveness is not None
                reconnects = client._tree.notifier.reconnects
                lock_losses = client._tree.liveness.losses.value
                lock_regains = client._tree.liveness.regains.value
                leading = client._tree.elector.is_leader
                # A soft stop: every job it took runs to the end, and every
                # outcome is persisted and delivered before it returns.
                await client.stop()
            failed_attempts = client._tree.completer.counters.failed_attempts
            dropped = client._tree.completer.counters.rows_dropped

            # A fetch whose commit the outage left unanswered is confirmed once
            # the server is back: nothing stays running under this client.
            final = await job_states(driver)

    completed = recorder.ids()
    tally = Tally("restart", recover_seconds=recovered_at - up_at)
    tally.extra.update(
        outage=f"{up_at - down_at:.2f}s",
        failed_completions=failed_attempts,
        failed_inserts=load.failures,
        listen_reconnects=reconnects,
    )
    print_figures(tally, final, recorder, work.runs)

    assert set(final.values()) == {"completed"}
    assert set(completed) == set(final), "every job inserted completed, with its event"
    assert tally.duplicate_events == 0
    assert len(completed) == len(final)
    assert tally.jobs_run_twice == 0
    # The outcomes produced during the outage were persisted by the retries.
    assert failed_attempts >= 3
    assert dropped == 0
    assert not logs.matching("giving up|final flush deadline")
    # Every service noticed and came back; the leader kept its term.
    assert reconnects >= 1
    assert lock_losses >= 1 and lock_regains == lock_losses
    assert leading
    # The outage is reported once by the driver (and by each service that it
    # affected), and so is the recovery; asyncpg adds nothing.
    assert len(logs.matching("statements to Postgres fail", level=logging.WARNING)) == 1
    assert len(logs.matching("answers again")) <= 1
    assert not [r for r in caplog.records if r.name.startswith("asyncpg")]
    # No error-level line (a raw asyncpg error crashing a service would show here).
    assert [r.getMessage() for r in logs.records if r.levelno >= logging.ERROR] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_outage_longer_than_the_retries_leaves_the_jobs_to_the_rescuer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work()
    recorder = Recorder()
    async with temp_postgres() as pg, migrated(pg) as driver:
        cfg = config(SCHEMA, workers=task_workers(work.work), max_workers=20)
        with watch_logs() as logs, trio.fail_after(50):

            def given_up() -> set[int]:
                return {
                    int(job_id)
                    for record in logs.matching("giving up persisting")
                    for job_id in re.findall(r"\d+", record.getMessage().split("job ids")[1])
                }

            async with recorded_client(cfg, pg.url, recorder) as (client, nursery):
                # A retry budget the outage will outlast.
                client._tree.completer.max_attempts = 2
                client._tree.completer.retry_backoff = 0.01
                await client.insert_many([Task(name="held") for _ in range(HELD)])
                load = Load(client, 200)
                nursery.start_soon(load.run)
                await work.held_running.wait()

                await pg.stop("fast")
                down_at = trio.current_time()
                work.release.set()
                # Every held job's outcome given up on (each batch in turn).
                await logs.wait_until(lambda _: work.held <= given_up())
                await pg.start()
                up_at = trio.current_time()
                await load.done.wait()
                await wait_none_available(driver, recorder)
                await client.stop()

            lost = given_up()
            states = await job_states(driver)
            stranded = {i for i, state in states.items() if state != "completed"}
            # Left running, as the log lines said (those and no other), and no
            # event for them.
            assert {states[i] for i in stranded} == {"running"}
            assert lost == stranded
            assert not lost & set(recorder.ids())
            await rescue_by_a_new_client(pg.url, cfg, stranded, recorder)
            recovered_at = trio.current_time()
            final = await job_states(driver)

    tally = Tally("restart, outage past the completer's retries")
    tally.recover_seconds = recovered_at - up_at
    tally.extra.update(outage=f"{up_at - down_at:.2f}s", left_to_rescuer=len(lost))
    print_figures(tally, final, recorder, work.runs)

    assert set(final.values()) == {"completed"}
    assert set(recorder.ids()) == set(final)
    assert tally.duplicate_events == 0
    # Exactly the jobs whose outcome was given up on ran again, once.
    assert {job_id for job_id, count in work.runs.items() if count > 1} == lost
    assert max(work.runs.values()) == 2
    # caplog saw the same lines: the ids, and what becomes of them.
    lines = [r for r in caplog.records if "giving up persisting" in r.getMessage()]
    assert lines and all(r.levelno == logging.ERROR for r in lines)
    assert all("stay running for the rescuer" in r.getMessage() for r in lines)
    logged = " ".join(r.getMessage() for r in lines)
    assert all(str(job_id) in logged for job_id in lost)


async def test_a_client_stopped_during_an_outage_stops_in_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work()
    recorder = Recorder()
    async with temp_postgres() as pg, migrated(pg) as driver:
        cfg = config(SCHEMA, workers=task_workers(work.work), max_workers=20)
        with watch_logs() as logs, trio.fail_after(55):
            async with recorded_client(cfg, pg.url, recorder) as (client, _):
                await client.insert_many([Task(name="held") for _ in range(HELD)])
                await work.held_running.wait()
                await pg.stop("fast")
                down_at = trio.current_time()
                work.release.set()  # their outcomes cannot be persisted now
                await logs.wait_for(r"persisting the outcomes of \d+ jobs failed")
                # Stopping while the completer retries: its retries (about 30 s) end
                # at the final flush deadline, which starts when its input closes.
                stop_started = trio.current_time()
                await client.stop()
                stop_took = trio.current_time() - stop_started
                final_flush = client._tree.completer.final_flush_timeout
            await pg.start()
            up_at = trio.current_time()
            [line] = logs.matching("final flush deadline", level=logging.ERROR)
            assert all(str(job_id) in line.getMessage() for job_id in work.held)
            # Left running for the rescuer, which hands them back once it sees that
            # their client is gone.
            assert set((await job_states(driver)).values()) == {"running"}
            await rescue_by_a_new_client(pg.url, cfg, work.held, recorder)
            final = await job_states(driver)

    tally = Tally("stop during an outage", recover_seconds=trio.current_time() - up_at)
    tally.extra.update(stop_took=f"{stop_took:.1f}s", outage=f"{up_at - down_at:.1f}s")
    print_figures(tally, final, recorder, work.runs)
    assert final_flush <= stop_took < final_flush + 10
    assert set(final.values()) == {"completed"}
    assert tally.jobs_run_twice == HELD  # their first run's outcome was lost with the server
    assert tally.duplicate_events == 0
    assert any("final flush deadline" in r.getMessage() for r in caplog.records)
