"""PgBouncer in front of Postgres.

A pgbouncer started by the test (the Debian ``pgbouncer`` package: ``apt-get
install -y pgbouncer``; without it the tests are skipped, and fail under CI,
which installs it) pools the server connections. In transaction mode a server connection serves one
transaction, then another client: session state (LISTEN, session advisory
locks, named prepared statements) does not survive. A ``poll_only`` client
needs none of it and must work fully; a listening client must refuse to start,
saying why and what to do, instead of silently never hearing a notification.
"""

from __future__ import annotations

import collections
import logging

import asyncpg
import pytest
import trio

import rivertrio
from rivertrio import EventKind
from rivertrio._driver import DELIVERY_PROBE_TIMEOUT, Driver
from support.common import Task, config, task_workers
from support.faults import Recorder, Tally, job_states, print_figures, run_pgbouncer, watch_logs

pytestmark = [pytest.mark.timeout(90), pytest.mark.requires_program("pgbouncer")]


class Work:
    """Counts runs; a "block" job runs until cancelled and says when it started."""

    def __init__(self) -> None:
        self.runs: collections.Counter[int] = collections.Counter()
        self.blocking = trio.Event()

    async def work(self, job: rivertrio.Job[Task]) -> None:
        self.runs[job.id] += 1
        if job.args.name == "block":
            self.blocking.set()
            await trio.sleep_forever()


async def test_a_poll_only_client_works_through_transaction_pooling(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    tally = Tally("pgbouncer transaction pooling, poll_only")
    work = Work()
    recorder = Recorder()
    fast = {"poll_only": True, "fetch_poll_interval": 0.2, "fetch_cooldown": 0.05}
    cfg = config(migrated_schema, workers=task_workers(work.work), max_workers=20, **fast)
    # A second client, as another process would be: its pause reaches the worker
    # only through the worker's refresh of the queue row.
    admin_cfg = rivertrio.Config(schema=migrated_schema, poll_only=True)
    with trio.fail_after(60):
        async with run_pgbouncer(database_url, pool_mode="transaction") as bouncer:
            with watch_logs() as logs:
                async with (
                    trio.open_nursery() as nursery,
                    rivertrio.open_client(cfg, database_url=bouncer.url()) as client,
                    rivertrio.open_client(admin_cfg, database_url=bouncer.url()) as admin,
                    client.subscribe(*EventKind, buffer=100) as events,
                ):
                    nursery.start_soon(recorder.run, events)
                    producer = client._tree.producers["default"]

                    # Insert (three ways, both clients) and work, concurrently.
                    async with trio.open_nursery() as inserts:
                        for i in range(10):
                            inserts.start_soon(admin.insert_many, [Task(n=i)] * 20)
                            inserts.start_soon(client.insert, Task(n=i))
                    await client.insert_many_fast([Task(n=-1)] * 50)
                    async with client.transaction() as tx:
                        in_tx = await client.insert_tx(tx, Task(n=-2))
                    states = await job_states(driver)
                    assert len(states) == 200 + 10 + 50 + 1
                    await recorder.wait_completed(states)

                    # Pause and resume from the other client: the refresh finds them.
                    await admin.queue_pause("default")
                    await recorder.wait_until(
                        lambda r: any(e.kind == EventKind.QUEUE_PAUSED for e in r.events)
                    )
                    paused_jobs = await admin.insert_many([Task(n=i) for i in range(5)])
                    await producer.wait_refreshed()  # a whole refresh while paused
                    assert {(await client.job_get(r.job.id)).state for r in paused_jobs} == {
                        rivertrio.JobState.AVAILABLE
                    }
                    await admin.queue_resume("default")
                    await recorder.wait_completed([r.job.id for r in paused_jobs])

                    # Cancel a running job in the same process.
                    blocker = await client.insert(Task(name="block"))
                    await work.blocking.wait()
                    await client.job_cancel(blocker.job.id)
                    await recorder.wait_until(
                        lambda r: blocker.job.id in r.ids(EventKind.JOB_CANCELLED)
                    )
                    await client.stop()
                final = await job_states(driver)
            bouncer_log = bouncer.log_tail(200)

    tally.extra.update(
        cancelled=len(recorder.ids(EventKind.JOB_CANCELLED)),
        queue_events=sum(1 for e in recorder.events if e.job is None),
    )
    print_figures(tally, final, recorder, work.runs)

    assert final[blocker.job.id] == "cancelled"
    assert in_tx.job.id in set(recorder.ids())
    assert {s for i, s in final.items() if i != blocker.job.id} == {"completed"}
    assert tally.duplicate_events == 0 and tally.jobs_run_twice == 0
    kinds = [e.kind for e in recorder.events if e.job is None]
    assert kinds == [EventKind.QUEUE_PAUSED, EventKind.QUEUE_RESUMED]
    # Not one error, from us, asyncpg or pgbouncer: no prepared statement went missing.
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    assert not logs.matching("prepared statement")
    assert "prepared statement" not in bouncer_log
    assert " ERROR " not in bouncer_log and "server conn crashed" not in bouncer_log


async def test_a_listening_client_behind_transaction_pooling_fails_fast_and_says_why(
    database_url: str, migrated_schema: str
) -> None:
    cfg = config(migrated_schema)  # notifications on, a liveness lock
    with trio.fail_after(30):
        async with run_pgbouncer(database_url, pool_mode="transaction") as bouncer:
            started = trio.current_time()
            with pytest.raises(rivertrio.ConfigError) as raised:
                async with rivertrio.open_client(cfg, database_url=bouncer.url()):
                    pass  # pragma: no cover - must not start
            took = trio.current_time() - started
    message = str(raised.value)
    print(f"\n[pgbouncer transaction pooling, listening] refused in {took:.2f}s: {message}")
    assert "poll_only=True" in message
    assert "session pooling" in message
    assert "transaction" in message and "LISTEN" in message
    # Fast: the probe's deadline and little more (not a hang, not a silent client).
    assert took < DELIVERY_PROBE_TIMEOUT + 5


async def test_a_listening_client_works_through_session_pooling(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    work = Work()
    recorder = Recorder()
    cfg = config(migrated_schema, workers=task_workers(work.work))
    with trio.fail_after(30):
        async with (
            run_pgbouncer(database_url, pool_mode="session") as bouncer,
            trio.open_nursery() as nursery,
            rivertrio.open_client(cfg, database_url=bouncer.url()) as client,
            client.subscribe(*EventKind) as events,
        ):
            nursery.start_soon(recorder.run, events)
            res = await client.insert_many([Task(n=i) for i in range(20)])
            await recorder.wait_completed([r.job.id for r in res])
            assert client._tree.liveness is not None and client._tree.liveness._lock is not None
            # Keepalives are set on the session, not sent as startup parameters
            # (which PgBouncer refuses), and still reach the server.
            lock = client._tree.liveness._lock
            idle = await lock.run(asyncpg.Connection.fetchval, "SHOW tcp_keepalives_idle")
            assert idle == "5"
            await client.stop()


async def test_a_flow_controlled_queue_works_through_transaction_pooling(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    # The flow fetch keeps no session state: its lock and its asynchronous
    # commit last one transaction, and the wait for its WAL flush may run on
    # another server connection (a later commit flushes every earlier one).
    running = 0
    most = 0
    worked: collections.Counter[int] = collections.Counter()

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        worked[job.id] += 1
        await trio.sleep(0.005)  # the work itself, so that jobs overlap
        running -= 1

    fast = {"poll_only": True, "fetch_poll_interval": 0.05, "fetch_cooldown": 0.01}
    flow = {"default": rivertrio.FlowControl(concurrency=3)}
    cfg = config(migrated_schema, workers=task_workers(work), max_workers=10, flow=flow, **fast)
    recorder = Recorder()
    with trio.fail_after(60):
        async with (
            run_pgbouncer(database_url, pool_mode="transaction") as bouncer,
            trio.open_nursery() as nursery,
            rivertrio.open_client(cfg, database_url=bouncer.url()) as client,
            client.subscribe(EventKind.JOB_COMPLETED, buffer=100) as events,
        ):
            nursery.start_soon(recorder.run, events)
            await client.insert_many([Task(n=i) for i in range(60)])
            states = await job_states(driver)
            await recorder.wait_completed(states)
            await client.stop()
            bouncer_log = bouncer.log_tail(200)
    assert sorted(worked) == sorted(states) and set(worked.values()) == {1}
    assert most == 3
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    assert " ERROR " not in bouncer_log
