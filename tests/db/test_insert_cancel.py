"""A single insert under cancellation: the job and its notification arrive together or not at all.

The insert is one autocommitted statement that also sends the notification.
Cancelled before it is sent, the call raises `trio.Cancelled` and nothing is
written; once sent, the call waits for the answer and returns it, so the
caller always knows which. Hypothesis cancels the call after every number of
scheduler passes, from before the crossing begins to after it ends.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

import rivertrio
from rivertrio import DatabaseConnectionError, InsertOpts, JobArgs, UniqueOpts
from rivertrio._config import Config
from rivertrio._driver import RELEASE_TIMEOUT, Driver, Listener, open_driver
from rivertrio._insert import Inserter, InsertResult
from rivertrio.testing._host import TrioHost

SENTINEL = '{"queue":"zz_sentinel"}'
_queues = itertools.count()


@dataclass
class Mail(JobArgs, kind="cancel_mail"):
    to: str = ""


class FixedClock:
    """The debounce's clock, standing still: a queue's second notification is always too soon."""

    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
async def listener(driver: Driver) -> AsyncIterator[Listener]:
    lis = await driver.open_listener()
    try:
        await lis.listen("river_insert")
        yield lis
    finally:
        await lis.aclose()


async def notified(driver: Driver, listener: Listener) -> list[str]:
    """The queues notified since the last call (a sentinel sent now arrives after them)."""
    await driver.notify("river_insert", SENTINEL)
    queues: list[str] = []
    with trio.fail_after(10):
        while (note := await listener.receive.receive()).payload != SENTINEL:
            queues.append(json.loads(note.payload)["queue"])
    return queues


async def queue_ids(driver: Driver, queue: str) -> list[int]:
    rows = await driver.fetch("SELECT id FROM /*schema*/river_job WHERE queue = $1", queue)
    return [r["id"] for r in rows]


async def cancelled_after(
    passes: int, inserter: Inserter, driver: Driver, args: Mail, opts: InsertOpts
) -> InsertResult | None:
    """Insert, cancelling the call after `passes` scheduler passes; None if it raised Cancelled."""
    scope = trio.CancelScope()
    result: InsertResult | None = None

    async def cancel_later() -> None:
        for _ in range(passes):
            await trio.lowlevel.checkpoint()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_later)
        with scope:
            result = await inserter.insert(driver, args, opts)
    return result


@dataclass
class World:
    url: str
    schema: str
    driver: Driver
    listener: Listener


async def open_world(
    url: str, *, task_status: trio.TaskStatus[World] = trio.TASK_STATUS_IGNORED
) -> None:
    """A migrated schema of its own, a driver and a listener on it, until cancelled."""
    schema = f"rt_{uuid.uuid4().hex[:16]}"
    async with open_driver(url) as admin:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        await rivertrio.migrate(url, schema=schema)
        async with open_driver(url, schema=schema) as driver:
            listener = await driver.open_listener()
            try:
                await listener.listen("river_insert")
                task_status.started(World(url, schema, driver, listener))
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
    finally:
        with trio.move_on_after(10, shield=True):
            async with open_driver(url) as admin:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_a_cancelled_insert_is_whole_or_absent_and_the_caller_knows(database_url: str) -> None:
    # Hypothesis runs each example from this (sync) thread; the examples share
    # one Trio run in a helper thread, and one database schema, each inserting
    # into a queue of its own.
    host = TrioHost("insert-cancel")
    try:
        world = host.call(lambda: host.nursery.start(open_world, database_url))

        @settings(max_examples=100, deadline=None)
        @given(
            passes=st.one_of(st.integers(0, 12), st.integers(13, 400)),
            unique=st.booleans(),
            scheduled=st.booleans(),
            cold=st.booleans(),
        )
        def example(passes: int, unique: bool, scheduled: bool, cold: bool) -> None:
            returned = host.call(lambda: one_example(world, passes, unique, scheduled, cold))
            event("returned its outcome" if returned else "cancelled before it began")
            outcomes.add(returned)

        outcomes: set[bool] = set()
        example()
        # Both ways must have been taken, or the test did not test cancellation.
        assert outcomes == {True, False}
    finally:
        host.close(30)


async def one_example(world: World, passes: int, unique: bool, scheduled: bool, cold: bool) -> bool:
    """One insert cancelled after `passes` passes, checked; whether it returned its outcome.

    `cold`: on a driver of its own, with no connection open yet (the cancellation
    may then land while the connection is being opened).
    """
    if cold:
        async with open_driver(world.url, schema=world.schema) as driver:
            return await check_one(driver, world.listener, passes, unique, scheduled)
    return await check_one(world.driver, world.listener, passes, unique, scheduled)


async def check_one(
    driver: Driver, listener: Listener, passes: int, unique: bool, scheduled: bool
) -> bool:
    queue = f"cq{next(_queues)}"
    inserter = Inserter(driver, Config(), clock=FixedClock())
    opts = InsertOpts(
        queue=queue,
        unique=UniqueOpts(by_args=True) if unique else None,
        scheduled_at=datetime.now(UTC) + timedelta(hours=1) if scheduled else None,
    )
    await notified(driver, listener)  # nothing left over from an earlier example

    result = await cancelled_after(passes, inserter, driver, Mail(to=queue), opts)

    stored = await queue_ids(driver, queue)
    notes = await notified(driver, listener)
    expected_notes = [] if scheduled else [queue]
    if result is None:
        assert stored == [], "the call raised Cancelled, so the job must not be there"
        assert notes == [], "no notification without its job"
        # The notification slot held for the cancelled insert was given back:
        # the next insert into the queue notifies it, though the clock stands still.
        again = await inserter.insert(driver, Mail(to=queue), opts)
        assert await queue_ids(driver, queue) == [again.job.id]
        assert await notified(driver, listener) == expected_notes
    else:
        assert stored == [result.job.id], "a returned result means the job is there"
        assert not result.unique_skipped_as_duplicate
        assert notes == expected_notes, "notified with the job, and only if it is available"
    return result is not None


async def test_an_insert_cancelled_before_it_begins_sends_nothing(
    driver: Driver, listener: Listener
) -> None:
    inserter = Inserter(driver, Config())
    with trio.CancelScope() as scope:
        scope.cancel()
        await inserter.insert(driver, Mail(to="x"), InsertOpts(queue="never"))
    assert scope.cancelled_caught
    assert await driver.fetchval("SELECT count(*) FROM /*schema*/river_job") == 0
    assert await notified(driver, listener) == []


async def test_a_cancellation_waits_for_a_sent_insert_and_returns_it(driver: Driver) -> None:
    # The insert is held up in the server (its unique key is locked by another
    # transaction) when the call is cancelled: the call still returns the
    # answer, once the server gives it, so the caller knows the job is there.
    inserter = Inserter(driver, Config())
    opts = InsertOpts(queue="held", unique=UniqueOpts(by_args=True))
    cancelled = trio.CancelScope()
    second: InsertResult | None = None

    async def insert() -> None:
        nonlocal second
        with cancelled:
            second = await inserter.insert(driver, Mail(to="held"), opts)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, driver.transaction() as tx:
            first = await inserter.insert(tx, Mail(to="held"), opts)
            nursery.start_soon(insert)
            await wait_for_lock_wait(driver)
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert second is None, "answered before the lock was released"
        # Committed on leaving the block: the held insert goes on, and finds the row.
    assert second is not None, "the cancelled call must return the outcome of its sent insert"
    assert second.job.id == first.job.id
    assert second.unique_skipped_as_duplicate


async def wait_for_lock_wait(driver: Driver) -> None:
    """Return once a session of this database waits on a lock (polled: Postgres tells no one)."""
    with trio.fail_after(10):
        while not await driver.fetchval(  # noqa: ASYNC110
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock')"
        ):
            await trio.sleep(0.01)


async def test_a_sent_insert_left_unanswered_ends_in_doubt_within_the_bound(driver: Driver) -> None:
    # Cancelled while the server holds it (a lock it waits for is never
    # released in time), the call waits RELEASE_TIMEOUT for the answer, then
    # gives up: it says the outcome is unknown, never that it was cancelled.
    inserter = Inserter(driver, Config(insert_coalesce_window=0))
    opts = InsertOpts(queue="stuck", unique=UniqueOpts(by_args=True))
    cancelled = trio.CancelScope()
    error: DatabaseConnectionError | None = None

    async def insert() -> None:
        nonlocal error
        with cancelled:
            try:
                await inserter.insert(driver, Mail(to="stuck"), opts)
            except DatabaseConnectionError as exc:
                error = exc

    with trio.fail_after(RELEASE_TIMEOUT + 10):
        async with driver.transaction() as tx:
            await inserter.insert(tx, Mail(to="stuck"), opts)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(insert)
                await wait_for_lock_wait(driver)
                cancelled.cancel()
                started = trio.current_time()
            waited = trio.current_time() - started
            await tx.execute("SELECT 1")
    assert error is not None
    assert "whether it took effect is unknown" in str(error)
    assert RELEASE_TIMEOUT - 0.5 <= waited < RELEASE_TIMEOUT + 5
