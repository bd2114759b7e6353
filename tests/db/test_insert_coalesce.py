"""Coalesced inserts against a real Postgres: concurrent `insert` calls share one statement.

Every caller gets its own result or its own error; a caller cancelled before its
batch is sent leaves it (its job is not inserted), one cancelled after waits for
the answer and gets its result; a shutdown in the middle leaves every job either
inserted and reported, or absent and cancelled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from rivertrio import DatabaseError, InsertOpts, JobArgs, UniqueOpts, open_client
from rivertrio._config import Config
from rivertrio._driver import Driver, Tx
from rivertrio._insert import Inserter, InsertResult

# A row whose `to` is 'bad' is refused by the database (a trigger), and one whose
# `to` is 'slow' waits for advisory lock SLOW_LOCK: the test holds it to keep a
# statement in flight for as long as it likes.
SLOW_LOCK = 424242
TRIGGERS = f"""
CREATE FUNCTION /*schema*/coalesce_test_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.args->>'to' = 'bad' THEN
        RAISE EXCEPTION 'refused by the test trigger';
    END IF;
    IF NEW.args->>'to' = 'slow' THEN
        PERFORM pg_advisory_xact_lock_shared({SLOW_LOCK});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER coalesce_test BEFORE INSERT ON /*schema*/river_job
    FOR EACH ROW EXECUTE FUNCTION /*schema*/coalesce_test_trigger();
"""


@dataclass
class Mail(JobArgs, kind="coalesce_mail"):
    to: str = ""


@pytest.fixture
async def triggers(driver: Driver) -> Driver:
    await driver.execute(TRIGGERS)
    return driver


@pytest.fixture
async def slow_lock(driver: Driver) -> AsyncIterator[Tx]:
    """A connection holding SLOW_LOCK: rows to 'slow' wait until it is released."""
    async with driver.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", SLOW_LOCK)
        try:
            yield conn
        finally:
            await conn.execute("SELECT pg_advisory_unlock_all()")


def coalescing(window: float) -> Config:
    return Config(insert_coalesce_window=window)


async def rows(driver: Driver) -> dict[str, int]:
    """Stored jobs: `to` -> id."""
    recs = await driver.fetch("SELECT id, args->>'to' AS to FROM /*schema*/river_job")
    return {r["to"]: r["id"] for r in recs}


async def statements(driver: Driver) -> int:
    """How many statements inserted the stored jobs (rows of one statement share created_at)."""
    return int(await driver.fetchval("SELECT count(DISTINCT created_at) FROM /*schema*/river_job"))


async def wait_for_lock_waits(driver: Driver, count: int = 1) -> None:
    """Return once `count` sessions of this database wait on a lock (polled: Postgres
    tells no one)."""
    with trio.fail_after(10):
        while (  # noqa: ASYNC110
            await driver.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            < count
        ):
            await trio.sleep(0.01)


class Callers:
    """Tasks inserting one job each, with what each got: a result, an error, or Cancelled."""

    def __init__(self, insert: Callable[[Mail, InsertOpts], Awaitable[InsertResult]]) -> None:
        self._insert = insert
        self.results: dict[str, InsertResult] = {}
        self.errors: dict[str, DatabaseError] = {}
        self.cancelled: set[str] = set()
        self.scopes: dict[str, trio.CancelScope] = {}

    def start(
        self, nursery: trio.Nursery, name: str, opts: InsertOpts | None = None, to: str = ""
    ) -> None:
        """Start a caller named `name`, inserting ``Mail(to=to or name)``."""
        scope = self.scopes[name] = trio.CancelScope()
        nursery.start_soon(self._one, name, Mail(to=to or name), opts or InsertOpts(), scope)

    async def _one(self, name: str, args: Mail, opts: InsertOpts, scope: trio.CancelScope) -> None:
        with scope:
            try:
                self.results[name] = await self._insert(args, opts)
            except DatabaseError as exc:
                self.errors[name] = exc
            except trio.Cancelled:
                self.cancelled.add(name)
                raise


async def test_concurrent_inserts_share_a_statement_and_each_gets_its_own_row(
    driver: Driver,
) -> None:
    inserter = Inserter(driver, coalescing(0.05))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    async with trio.open_nursery() as nursery:
        for i in range(40):
            callers.start(nursery, f"m{i}")
    stored = await rows(driver)
    assert set(callers.results) == set(stored) == {f"m{i}" for i in range(40)}
    for to, result in callers.results.items():
        assert json.loads(result.job.encoded_args) == {"to": to}
        assert result.job.id == stored[to]
        assert not result.unique_skipped_as_duplicate
    # The first went alone, at once; the 39 others joined one batch meanwhile.
    assert await statements(driver) == 2


async def test_a_refused_row_fails_its_own_caller_only(triggers: Driver, slow_lock: Tx) -> None:
    driver = triggers
    inserter = Inserter(driver, coalescing(0.05))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            callers.start(nursery, "alone", to="slow")  # in flight, held: the others gather
            await wait_for_lock_waits(driver)
            for i in range(20):
                callers.start(nursery, "bad" if i == 7 else f"m{i}")
            await trio.testing.wait_all_tasks_blocked()
            await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
    assert set(callers.errors) == {"bad"}
    assert "refused by the test trigger" in str(callers.errors["bad"])
    assert callers.errors["bad"].sqlstate == "P0001"
    good = {f"m{i}" for i in range(20) if i != 7}
    assert set(callers.results) == {"alone", *good}
    assert set(await rows(driver)) == {"slow", *good}


async def test_unique_duplicates_among_many_are_reported_to_their_callers_only(
    driver: Driver,
) -> None:
    inserter = Inserter(driver, coalescing(0.05))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    unique = InsertOpts(unique=UniqueOpts(by_args=True))
    first = await inserter.insert(driver, Mail(to="dup"), unique)  # stored beforehand
    async with trio.open_nursery() as nursery:
        for i in range(30):
            callers.start(nursery, f"m{i}")
            if i % 5 == 0:  # six callers with one unique key, among the others
                callers.start(nursery, f"twin{i}", unique, to="twin")
        callers.start(nursery, "dup", unique)

    assert callers.results["dup"].job.id == first.job.id
    assert callers.results["dup"].unique_skipped_as_duplicate
    twins = [r for name, r in callers.results.items() if name.startswith("twin")]
    assert len(twins) == 6
    assert len({t.job.id for t in twins}) == 1, "one row for one unique key"
    assert sorted(t.unique_skipped_as_duplicate for t in twins) == [False] + [True] * 5
    others = [r for name, r in callers.results.items() if name.startswith("m")]
    assert len({r.job.id for r in others}) == 30
    assert not any(r.unique_skipped_as_duplicate for r in others)
    assert set(await rows(driver)) == {"dup", "twin", *(f"m{i}" for i in range(30))}


async def test_a_caller_cancelled_before_its_batch_is_sent_leaves_it(
    triggers: Driver, slow_lock: Tx
) -> None:
    driver = triggers
    inserter = Inserter(driver, coalescing(0.3))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            callers.start(nursery, "alone", to="slow")  # in flight, held: the others gather
            await wait_for_lock_waits(driver)
            for i in range(10):
                callers.start(nursery, f"m{i}")
            # They wait for the window to close. Cancel two of them.
            await trio.testing.wait_all_tasks_blocked()
            callers.scopes["m3"].cancel()
            callers.scopes["m8"].cancel()
            await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
    assert callers.cancelled == {"m3", "m8"}
    expected = {f"m{i}" for i in range(10)} - {"m3", "m8"}
    assert set(callers.results) == {"alone", *expected}
    assert set(await rows(driver)) == {"slow", *expected}


async def test_callers_cancelled_after_their_batch_is_sent_get_its_outcome(
    triggers: Driver, slow_lock: Tx
) -> None:
    driver = triggers
    inserter = Inserter(driver, coalescing(0.05))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    batch = {"slow", "m1", "m2", "m3"}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            callers.start(nursery, "alone", to="slow")  # in flight, held: the others gather
            await wait_for_lock_waits(driver)
            for name in sorted(batch):
                callers.start(nursery, name)
            await wait_for_lock_waits(driver, 2)  # their batch is in the server, held too
            for scope in callers.scopes.values():
                scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert not callers.results, "answered before the server did"
            await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
    assert callers.cancelled == set()
    assert set(callers.results) == {"alone", *batch}
    stored = {r["id"] for r in await driver.fetch("SELECT id FROM /*schema*/river_job")}
    assert stored == {r.job.id for r in callers.results.values()}
    assert await statements(driver) == 2


async def test_a_shutdown_with_a_batch_in_flight_loses_nothing(
    database_url: str, migrated_schema: str, triggers: Driver, slow_lock: Tx
) -> None:
    driver = triggers
    config = Config(schema=migrated_schema, insert_coalesce_window=0.3)
    with trio.fail_after(30):
        with trio.CancelScope() as shutdown:
            async with (
                open_client(config, database_url=database_url) as client,
                trio.open_nursery() as nursery,
            ):
                callers = Callers(client.insert)
                callers.start(nursery, "alone", to="slow")  # in flight, held: others gather
                await wait_for_lock_waits(driver)
                for name in ("slow", *(f"sent{i}" for i in range(20))):
                    callers.start(nursery, name)
                await wait_for_lock_waits(driver, 2)  # that batch is in the server, held
                # These wait for the window of a batch of their own, not sent yet.
                for i in range(10):
                    callers.start(nursery, f"waiting{i}")
                await trio.testing.wait_all_tasks_blocked()
                shutdown.cancel()
                with trio.CancelScope(shield=True):
                    await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
        assert shutdown.cancelled_caught
    sent = {"alone", "slow", *(f"sent{i}" for i in range(20))}
    assert set(callers.results) == sent, "every job sent was answered"
    assert callers.cancelled == {f"waiting{i}" for i in range(10)}
    assert not callers.errors
    stored = {r["id"] for r in await driver.fetch("SELECT id FROM /*schema*/river_job")}
    assert stored == {r.job.id for r in callers.results.values()}, (
        "nothing half-inserted, nothing lost"
    )


async def test_past_its_window_a_batch_waits_for_a_statement_in_flight_to_end(
    triggers: Driver, slow_lock: Tx
) -> None:
    # Two statements in flight (the most a client sends at once): a third batch
    # goes on gathering jobs past its window, and is sent when one of them ends.
    driver = triggers
    inserter = Inserter(driver, coalescing(1e-6))  # a window over at once
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            callers.start(nursery, "alone", to="slow")
            await wait_for_lock_waits(driver)
            callers.start(nursery, "slow")
            await wait_for_lock_waits(driver, 2)
            for i in range(5):
                callers.start(nursery, f"early{i}")
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5):
                callers.start(nursery, f"late{i}")
            await trio.testing.wait_all_tasks_blocked()
            assert not callers.results
            assert await rows(driver) == {}, "sent while two statements were in flight"
            await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
    assert len(callers.results) == 12
    # alone, slow, then one statement for the ten that gathered meanwhile.
    assert await statements(driver) == 3


async def test_when_the_caller_watching_a_window_leaves_another_takes_over(
    triggers: Driver, slow_lock: Tx
) -> None:
    # The first caller to join a batch watches its window for all; cancelled,
    # it hands the watch on, and the batch is still sent.
    driver = triggers
    inserter = Inserter(driver, coalescing(0.2))
    callers = Callers(lambda args, opts: inserter.insert(driver, args, opts))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            callers.start(nursery, "alone", to="slow")  # in flight, held: the others gather
            await wait_for_lock_waits(driver)
            callers.start(nursery, "watcher")
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5):
                callers.start(nursery, f"m{i}")
            await trio.testing.wait_all_tasks_blocked()
            callers.scopes["watcher"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            await slow_lock.execute("SELECT pg_advisory_unlock($1)", SLOW_LOCK)
    assert callers.cancelled == {"watcher"}
    assert set(callers.results) == {"alone", *(f"m{i}" for i in range(5))}
    assert set(await rows(driver)) == {"slow", *(f"m{i}" for i in range(5))}
