"""Connections cut or black-holed between the client and Postgres.

A `FaultProxy` sits between the client and the server and drops or stalls its
connections by kind: the LISTEN connection, the pool's connections, the
liveness lock's. The client must keep working (polling covers lost
notifications), report each fault in its logs once rather than once per
statement, and never hang on a connection that stopped answering.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import EventKind
from rivertrio._driver import RELEASE_TIMEOUT, Driver, open_driver
from support.common import Task, config, task_workers
from support.faults import (
    SUSPENDED,
    FaultProxy,
    Kind,
    Load,
    LogWatch,
    Recorder,
    Tally,
    job_states,
    open_fault_proxy,
    print_figures,
    wait_none_available,
    watch_logs,
)

pytestmark = pytest.mark.timeout(90)


class Work:
    """Counts runs per job."""

    def __init__(self) -> None:
        self.runs: collections.Counter[int] = collections.Counter()
        self._changed = trio.Event()

    async def work(self, job: rivertrio.Job[Task]) -> None:
        self.runs[job.id] += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_worked(self, ids: set[int]) -> None:
        while not ids <= set(self.runs):
            await self._changed.wait()

    def run_twice(self) -> int:
        return sum(1 for count in self.runs.values() if count > 1)


@dataclasses.dataclass
class Run:
    """A client working a stream of jobs through the proxy."""

    proxy: FaultProxy
    client: rivertrio.Client
    recorder: Recorder
    load: Load
    work: Work
    logs: LogWatch
    nursery: trio.Nursery
    cfg: rivertrio.Config


@asynccontextmanager
async def proxied_run(
    database_url: str, schema: str, *, total: int = 400, **fields: Any
) -> AsyncIterator[Run]:
    """A client through a fresh proxy, a lossless recorder and a load that starts at once.

    The block should end with ``await run.client.stop()``: the recorder then sees
    the last events before its channel closes.
    """
    work = Work()
    cfg = config(schema, workers=task_workers(work.work), max_workers=10, **fields)
    with watch_logs() as logs:
        async with (
            open_fault_proxy(database_url) as proxy,
            trio.open_nursery() as nursery,
            rivertrio.open_client(cfg, database_url=proxy.url()) as client,
            client.subscribe(*EventKind, buffer=50, overflow="block") as events,
        ):
            recorder = Recorder()
            nursery.start_soon(recorder.run, events)
            load = Load(client, total, batch=5)
            nursery.start_soon(load.run)
            yield Run(proxy, client, recorder, load, work, logs, nursery, cfg)


async def finish(run: Run, driver: Driver) -> dict[int, str]:
    """Let the load finish and the client take every job, stop it, and return the states."""
    await run.load.done.wait()
    await wait_none_available(driver, run.recorder)
    await run.client.stop()
    return await job_states(driver)


def figures(tally: Tally, run: Run, final: dict[int, str]) -> None:
    """Fill in the common figures and check the common promises."""
    print_figures(tally, final, run.recorder, run.work.runs)
    assert set(final.values()) == {"completed"}
    assert set(run.recorder.ids()) == set(final), "every job completed, with its event"
    assert tally.duplicate_events == 0
    assert tally.jobs_run_twice == 0


async def probe(run: Run, count: int = 20) -> list[int]:
    """Insert `count` jobs (retrying, each try bounded, as careful user code does)."""
    while True:
        with trio.move_on_after(5):
            try:
                results = await run.client.insert_many([Task(n=i) for i in range(count)])
            except rivertrio.DatabaseError:
                pass
            else:
                return [r.job.id for r in results]
        run.load.failures += 1


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record at WARNING or above, from any logger (asyncpg's included)."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def per_logger(records: list[logging.LogRecord]) -> collections.Counter[str]:
    return collections.Counter(r.name for r in records)


def once_each(records: list[logging.LogRecord]) -> bool:
    """No message (a logger's message template, per subject) was logged twice.

    Maintenance services share one template that starts with their own name
    ("%s: pass failed ..."): each service reporting its own fault once is fine.
    """

    def key(r: logging.LogRecord) -> tuple[str, object, object]:
        subject = r.args[0] if str(r.msg).startswith("%s:") and isinstance(r.args, tuple) else None
        return (r.name, r.msg, subject)

    counts = collections.Counter(key(r) for r in records)
    repeated = {key: n for key, n in counts.items() if n > 1}
    assert not repeated, f"repeated: {repeated}"
    return True


# -- the LISTEN connection -------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_lost_listen_connection_is_covered_by_polling_and_reported_once(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    tally = Tally(f"LISTEN connection: {fault}")
    with trio.fail_after(60):
        async with proxied_run(database_url, migrated_schema, total=100) as run:
            notifier = run.client._tree.notifier
            assert notifier is not None
            await run.load.done.wait()
            await run.recorder.wait_until(lambda r: len(r.ids()) >= 100)
            caplog.clear()
            faulted_at = trio.current_time()
            if fault == "drop":
                assert run.proxy.drop("listener") == 1
            else:
                # A black hole: nothing tells the client; only its ping can.
                assert run.proxy.stall("listener") == 1
            # Jobs inserted now get no notification through: polling finds them.
            more = await run.client.insert_many([Task(n=i) for i in range(20)])
            await run.recorder.wait_completed([r.job.id for r in more])
            polled_before_reconnect = notifier.reconnects == 0
            await notifier.wait_reconnected(1)
            tally.recover_seconds = trio.current_time() - faulted_at
            # Listening again: an insert is picked up at once, not at the next poll.
            again = await run.client.insert(Task(n=-1))
            await run.recorder.wait_completed([again.job.id])
            final = await finish(run, driver)

    tally.extra["polled_before_reconnect"] = polled_before_reconnect
    figures(tally, run, final)
    if fault == "stall":
        assert polled_before_reconnect, "polling, not the reconnection, found the jobs"
    # One line for the whole fault, from the notifier, naming what happened.
    [line] = warnings(caplog)
    assert line.name == "rivertrio.notifier"
    assert "LISTEN connection" in line.getMessage() and "broke" in line.getMessage()
    if fault == "stall":
        assert "ping" in line.getMessage()
    assert notifier.reconnects == 1


# -- the pool's connections --------------------------------------------------------------


@pytest.mark.parametrize("kinds", [("pool",), ("pool", "listener", "liveness")])
async def test_dropped_connections_are_replaced_and_reported_once(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    caplog: pytest.LogCaptureFixture,
    kinds: tuple[Kind, ...],
) -> None:
    tally = Tally("drop " + "+".join(kinds))
    with trio.fail_after(60):
        async with proxied_run(database_url, migrated_schema) as run:
            await run.recorder.wait_until(lambda r: len(r.ids()) >= 100)
            caplog.clear()
            # Catch statements in flight: the server runs them, their answers are
            # held, and at the first one every connection of these kinds is cut.
            run.proxy.hold_replies("pool")
            await run.proxy.wait_held(1)
            in_flight = run.proxy.held_replies()
            dropped = run.proxy.drop(*kinds)
            run.proxy.heal()
            faulted_at = trio.current_time()
            # Jobs inserted after the fault are worked: the client recovered.
            await run.recorder.wait_completed(await probe(run))
            tally.recover_seconds = trio.current_time() - faulted_at
            liveness = run.client._tree.liveness
            assert liveness is not None
            final = await finish(run, driver)

    tally.extra.update(connections_dropped=dropped, answers_lost=in_flight)
    figures(tally, run, final)
    lines = warnings(caplog)
    counts = per_logger(lines)
    print("warnings:", [f"{r.name}: {r.getMessage()[:120]}" for r in lines])
    # Each part of the client that saw the fault says so once, and nothing says it
    # again per statement: a handful of lines in all, whatever the load.
    # The driver, which sees every statement (the client's and the user's), says
    # once that they fail (and at most once that they work again).
    [trouble] = [r for r in lines if r.name == "rivertrio.driver"]
    assert "statements to Postgres fail" in trouble.getMessage()
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) <= 1
    assert once_each(lines)
    assert len(lines) <= 6, counts
    assert not [r for r in lines if r.levelno >= logging.ERROR]
    if "liveness" in kinds:
        # The lock was lost and taken again: fetching was suspended, then resumed.
        assert liveness.losses.value == 1 and liveness.regains.value == 1
        assert counts["rivertrio.liveness"] == 1
    if "listener" in kinds:
        assert counts["rivertrio.notifier"] == 1


# -- black holes -------------------------------------------------------------------------


async def test_black_holed_pool_connections_do_not_hang_the_client(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally = Tally("black-holed pool connections")
    with trio.fail_after(80):
        async with proxied_run(database_url, migrated_schema, total=300) as run:
            await run.recorder.wait_until(lambda r: len(r.ids()) >= 100)
            caplog.clear()
            # Every pooled connection open now stops answering, for good; new ones work.
            stalled = run.proxy.stall("pool")
            faulted_at = trio.current_time()
            await run.recorder.wait_completed(await probe(run))
            tally.recover_seconds = trio.current_time() - faulted_at
            final = await finish(run, driver)
            stop_seconds = trio.current_time() - faulted_at - tally.recover_seconds

    tally.extra.update(connections_stalled=stalled, stop_and_finish=f"{stop_seconds:.1f}s")
    figures(tally, run, final)
    lines = warnings(caplog)
    print("warnings:", [f"{r.name}: {r.getMessage()[:120]}" for r in lines])
    # Statement deadlines ended the waits: the producer's fetch (10 s) is the longest.
    assert tally.recover_seconds is not None and tally.recover_seconds < 25
    # The driver saw connections that never answered, dropped them and renewed the
    # pool, and said so once.
    unanswered = [r for r in lines if "did not answer" in r.getMessage()]
    assert [r.name for r in unanswered] == ["rivertrio.driver"]
    assert once_each(lines)


async def test_a_refresh_that_gets_no_answer_gives_up_and_the_next_one_works(
    database_url: str, migrated_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rivertrio._producer, "_REFRESH_TIMEOUT", 0.5)
    cfg = config(migrated_schema, workers=task_workers(Work().work))
    with watch_logs() as logs, trio.fail_after(30):
        async with (
            open_fault_proxy(database_url) as proxy,
            rivertrio.open_client(cfg, database_url=proxy.url()) as client,
        ):
            producer = client._tree.producers["default"]
            # The pool's statements run, and their answers never arrive.
            proxy.hold_replies("pool")
            producer.request_refresh()
            await logs.wait_for("refreshing queue default failed .*no answer within 0.5 s")
            proxy.heal()
            # Later refreshes run on other connections.
            with trio.fail_after(10):
                await producer.wait_refreshed()


_TWO_ROWS = "SELECT x FROM generate_series(1, 2) AS x"  # its answer ends "SELECT 2"


async def _in_a_transaction(conn: Any) -> int:
    # Asyncio side: a multi-statement call, whose cleanup on cancellation (the
    # ROLLBACK) needs the connection to answer.
    async with conn.transaction():
        return len(await conn.fetch(_TWO_ROWS))


async def _one_statement(conn: Any) -> int:
    return len(await conn.fetch(_TWO_ROWS))


@pytest.mark.parametrize("call", [_one_statement, _in_a_transaction])
async def test_a_cancelled_call_on_a_black_hole_returns_and_the_pool_recovers(
    database_url: str, empty_schema: str, call: Any
) -> None:
    async with (
        open_fault_proxy(database_url) as proxy,
        open_driver(proxy.url(), schema=empty_schema, max_size=2) as pool,
    ):
        assert await pool.run(call) == 2
        # The SELECT runs; its answer, and anything after it, never comes back
        # (within a transaction: after the BEGIN went through).
        proxy.hold_reply_to("pool", b"SELECT 2")
        started = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await pool.run(call)
        took = trio.current_time() - started
        assert scope.cancelled_caught
        # The caller waits at most the release bound for the cleanup: asyncpg alone
        # would wait for the ROLLBACK's connection as long as it lives.
        assert took < 0.5 + RELEASE_TIMEOUT + 2, took
        with trio.fail_after(RELEASE_TIMEOUT + 10):
            assert await pool.run(call) == 2  # on a new connection
    print(f"\n[black hole, {call.__name__}] cancelled call returned after {took:.2f}s")


# -- a fetch whose reply is lost ------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "after", "committed"),
    [
        # The UPDATE ran and its answer is lost: its transaction never commits.
        (b"UPDATE 3", None, False),
        # The COMMIT ran and its answer is lost: the jobs are the client's, and
        # only it knows they are not being worked.
        (b"COMMIT", b"UPDATE 3", True),
    ],
    ids=["update-reply-lost", "commit-reply-lost"],
)
async def test_a_fetch_whose_reply_is_lost_strands_no_job(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    held: bytes,
    after: bytes | None,
    committed: bool,
) -> None:
    work = Work()
    cfg = config(
        migrated_schema, workers=task_workers(work.work), fetch_poll_interval=0.2, max_workers=5
    )
    with watch_logs() as logs, trio.fail_after(30):
        async with (
            open_fault_proxy(database_url) as proxy,
            rivertrio.open_client(cfg, database_url=proxy.url()) as client,
        ):
            proxy.hold_reply_to("pool", held, after=after)
            admin = rivertrio.Config(schema=migrated_schema)  # straight to the server
            async with rivertrio.open_client(admin, database_url=database_url) as inserter:
                ids = {r.job.id for r in await inserter.insert_many([Task(n=i) for i in range(3)])}
            await proxy.wait_held(1)
            taken = await driver.fetchval(
                "SELECT count(*) FROM /*schema*/river_job "
                "WHERE state = 'running' AND $1 = ANY(attempted_by)",
                client.id,
            )
            assert taken == (3 if committed else 0)
            # The connections die before the answer arrives; new ones work.
            started = trio.current_time()
            proxy.drop("pool")
            proxy.heal()
            await work.wait_worked(ids)
            recovered = trio.current_time() - started
            await client.stop()
        states = await job_states(driver)
    print(
        f"\n[lost fetch reply: {held.decode()}] jobs={len(ids)} worked={len(set(work.runs))} "
        f"run twice={work.run_twice()} recovered in {recovered:.2f}s"
    )
    assert set(work.runs) == ids, "every job the fetch took was worked"
    assert work.run_twice() == 0
    assert set(states.values()) == {"completed"}
    # Only a commit in doubt needs confirming; the log says how it ended.
    assert bool(logs.matching("3 of the 3 jobs are ours")) == committed


# A flow-controlled queue: its fetch is one statement that commits on its own.
FLOW_QUEUE = "flowed"
FLOW_RULES = rivertrio.FlowControl(concurrency=5)


@pytest.mark.parametrize(
    ("held", "after"),
    [
        # The flow fetch (one row per job it started) ran and committed; its answer is lost.
        (b"SELECT 3", None),
        # Its answer came; the answer to the wait for its WAL flush (asyncpg's fetchval,
        # one row asked for: no CommandComplete, a PortalSuspended) is lost.
        (SUSPENDED, b"SELECT 3"),
    ],
    ids=["fetch-reply-lost", "flush-reply-lost"],
)
async def test_a_flow_fetch_whose_reply_is_lost_strands_no_job(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    held: bytes,
    after: bytes | None,
) -> None:
    work = Work()
    cfg = config(
        migrated_schema,
        workers=task_workers(work.work),
        queues={FLOW_QUEUE: rivertrio.QueueConfig(max_workers=5)},
        flow={FLOW_QUEUE: FLOW_RULES},
        fetch_poll_interval=0.2,
    )
    with trio.fail_after(30):
        async with (
            open_fault_proxy(database_url) as proxy,
            rivertrio.open_client(cfg, database_url=proxy.url()) as client,
        ):
            proxy.hold_reply_to("pool", held, after=after)
            # Straight to the server, with the queue's rules: the jobs go in held.
            admin = rivertrio.Config(schema=migrated_schema, flow={FLOW_QUEUE: FLOW_RULES})
            async with rivertrio.open_client(admin, database_url=database_url) as inserter:
                inserted = await inserter.insert_many(
                    [(Task(n=i), rivertrio.InsertOpts(queue=FLOW_QUEUE)) for i in range(3)]
                )
            ids = {r.job.id for r in inserted}
            assert {r.job.state for r in inserted} == {rivertrio.JobState.PENDING}
            await proxy.wait_held(1)
            # The fetch committed on its own: the jobs are the client's, unworked.
            taken = await driver.fetch(
                "SELECT id FROM /*schema*/river_job "
                "WHERE state = 'running' AND attempted_by = ARRAY[$1::text]",
                client.id,
            )
            assert {r["id"] for r in taken} == ids
            assert not work.runs
            # The connections die before the answer arrives; new ones work.
            started = trio.current_time()
            proxy.drop("pool")
            proxy.heal()
            await work.wait_worked(ids)
            recovered = trio.current_time() - started
            await client.stop()
        final = {
            r["id"]: r
            for r in await driver.fetch(
                "SELECT id, state::text, attempt, attempted_by FROM /*schema*/river_job"
            )
        }
    print(
        f"\n[lost flow fetch reply: {held.decode()}] jobs={len(ids)} "
        f"worked={len(set(work.runs))} run twice={work.run_twice()} "
        f"recovered in {recovered:.2f}s"
    )
    assert set(work.runs) == ids, "every job the fetch took was worked"
    assert work.run_twice() == 0
    assert set(final) == ids
    assert {r["state"] for r in final.values()} == {"completed"}
    # Taken back by the same client's next flow fetch, in the same attempt: not
    # rescued (a rescue makes a new attempt, and waits rescue_stuck_jobs_after).
    assert all(r["attempt"] == 1 for r in final.values())
    assert all(list(r["attempted_by"]) == [client.id] for r in final.values())
    assert recovered < 5 < cfg.rescue_stuck_jobs_after


@pytest.mark.parametrize("stop", ["stop", "stop_and_cancel", "cancel_scope"])
async def test_a_fetch_left_in_doubt_by_a_stop_names_its_jobs_for_the_rescuer(
    database_url: str,
    migrated_schema: str,
    driver: Driver,
    monkeypatch: pytest.MonkeyPatch,
    stop: str,
) -> None:
    monkeypatch.setattr(rivertrio._producer, "_FETCH_SHIELD_TIMEOUT", 0.5)
    work = Work()
    cfg = config(migrated_schema, workers=task_workers(work.work), fetch_poll_interval=0.2)
    with watch_logs() as logs, trio.fail_after(40):
        async with (
            open_fault_proxy(database_url) as proxy,
            open_driver(
                proxy.url(),
                schema=cfg.schema,
                max_size=cfg.effective_pool_size,
                reserved=cfg.reserved_connections,
            ) as pool,
        ):
            # Client.run in a nursery of ours, so that a cancelled scope around the
            # client is one of the ways to stop it.
            async with trio.open_nursery() as nursery:
                client = rivertrio.Client(cfg, pool)
                await nursery.start(client.run)
                proxy.hold_reply_to("pool", b"COMMIT", after=b"UPDATE 3")
                admin = rivertrio.Config(schema=migrated_schema)  # straight to the server
                async with rivertrio.open_client(admin, database_url=database_url) as inserter:
                    jobs = await inserter.insert_many([Task(n=i) for i in range(3)])
                ids = {r.job.id for r in jobs}
                await proxy.wait_held(1)
                # The database stops answering the pool: the fetch cannot be confirmed.
                proxy.hold_replies("pool")
                await logs.wait_for("the commit of 3 jobs got no answer")
                if stop == "cancel_scope":
                    nursery.cancel_scope.cancel()
                else:
                    await getattr(client, stop)()
            proxy.heal()
        states = await job_states(driver)
    [line] = logs.matching("stay running for the rescuer")
    assert {int(i) for i in re.findall(r"\d+", line.getMessage().split("jobs")[1])} == ids
    assert {states[i] for i in ids} == {"running"}, "the fetch did commit"
    assert not work.runs
