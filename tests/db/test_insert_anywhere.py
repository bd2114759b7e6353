"""Jobs inserted from outside Trio are worked by a rivertrio worker, and unique across paths.

The paths: `rivertrio.aio.AsyncInsertClient` (asyncio, asyncpg), `render_insert`
run on a psycopg connection (synchronous code), River's Python insert client
(PyPI ``riverqueue``) on SQLAlchemy, and the Trio client itself. Each asyncio or
synchronous program runs in a thread of its own, as it would in its own process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import psycopg
import pytest
import riverqueue
import sqlalchemy
import trio
from riverqueue.driver import riversqlalchemy

import rivertrio
from rivertrio import DatabaseError, EventKind, InsertOpts, InvalidInputError, UniqueOpts
from rivertrio._driver import Driver
from rivertrio.aio import AsyncInsertClient, open_insert_client
from support.common import config, events_until, next_payload, open_listener, running

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


@dataclass
class Welcome(rivertrio.JobArgs, kind="welcome"):
    user_id: int
    source: str = field(default="", metadata={"river": "unique"})


UNIQUE = InsertOpts(unique=UniqueOpts(by_args=True))


async def in_asyncio(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an asyncio program to its end in a thread, as a separate program would."""
    return await trio.to_thread.run_sync(lambda: asyncio.run(main()))


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


async def worked_by_rivertrio(
    database_url: str, schema: str, count: int
) -> dict[int, tuple[str, int, str]]:
    """Run a rivertrio worker until it has completed `count` jobs; id -> (kind, user, source)."""
    seen: dict[int, tuple[str, int, str]] = {}
    workers = rivertrio.Workers()

    @workers.register(Welcome)
    async def welcome(job: rivertrio.Job[Welcome]) -> None:
        seen[job.id] = (job.kind, job.args.user_id, job.args.source)

    cfg = config(schema, workers=workers)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        got = await events_until(events, count)
    assert {e.kind for e in got} == {EventKind.JOB_COMPLETED}
    return seen


# --- each path's jobs are worked by rivertrio ---


async def test_jobs_from_every_path_are_worked(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async def from_asyncio() -> list[int]:
        async with open_insert_client(
            database_url, config=rivertrio.Config(schema=migrated_schema)
        ) as jobs:
            one = await jobs.insert(Welcome(user_id=1, source="aio"))
            many = await jobs.insert_many([Welcome(2, "aio"), (Welcome(3, "aio"), None)])
            fast = await jobs.insert_many_fast([Welcome(4, "aio"), Welcome(5, "aio")])
            assert fast == 2
            return [one.job.id, *(r.job.id for r in many)]

    def from_psycopg() -> int:
        with psycopg.connect(database_url) as conn:
            sql, params = rivertrio.render_insert(Welcome(6, "psycopg"), schema=migrated_schema)
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])

    def from_riverqueue() -> int:
        engine = sqlalchemy.create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg://"),
            connect_args={"options": f"-c search_path={migrated_schema}"},
        )
        try:
            client = riverqueue.Client(riversqlalchemy.Driver(engine))
            result = client.insert(RiverqueueWelcome(user_id=7))
            return result.job.id
        finally:
            engine.dispose()

    ids = await in_asyncio(from_asyncio)
    ids.append(await in_thread(from_psycopg))
    ids.append(await in_thread(from_riverqueue))
    seen = await worked_by_rivertrio(database_url, migrated_schema, 7)
    assert sorted(user for _, user, _ in seen.values()) == [1, 2, 3, 4, 5, 6, 7]
    assert set(ids) <= set(seen)
    assert {kind for kind, _, _ in seen.values()} == {"welcome"}


@dataclass
class RiverqueueWelcome:
    """Job args as River's Python client declares them: a kind and a to_json."""

    user_id: int
    kind: str = "welcome"

    def to_json(self) -> str:
        return json.dumps({"user_id": self.user_id, "source": "riverqueue"})


# --- a unique job inserted by one path is a duplicate for the others ---


async def test_a_unique_job_is_one_job_whichever_path_inserts_it(
    database_url: str, migrated_schema: str
) -> None:
    # Only `source` is marked unique: the user id does not count.
    cfg = rivertrio.Config(schema=migrated_schema)
    async with running(cfg, database_url) as trio_client:
        first = await trio_client.insert(Welcome(1, "signup"), UNIQUE)
        assert not first.unique_skipped_as_duplicate

        async def from_asyncio() -> tuple[rivertrio.InsertResult, rivertrio.InsertResult]:
            async with open_insert_client(database_url, config=cfg) as jobs:
                again = await jobs.insert(Welcome(2, "signup"), UNIQUE)
                # Another one, seen by psycopg next.
                other = await jobs.insert(Welcome(1, "invite"), UNIQUE)
                return again, other

        again, other = await in_asyncio(from_asyncio)
        assert again.unique_skipped_as_duplicate and again.job.id == first.job.id
        assert not other.unique_skipped_as_duplicate

        def from_psycopg() -> list[tuple[int, bool]]:
            out = []
            with psycopg.connect(database_url) as conn:
                for source in ("signup", "invite", "import"):
                    sql, params = rivertrio.render_insert(
                        Welcome(5, source), UNIQUE, schema=migrated_schema
                    )
                    cur = conn.execute(sql, params)
                    assert cur.description is not None
                    names = [c.name for c in cur.description]
                    row = dict(zip(names, cur.fetchone() or (), strict=True))
                    out.append((row["id"], row["unique_skipped_as_duplicate"]))
            return out

        rendered = await in_thread(from_psycopg)
        assert rendered[0] == (first.job.id, True)
        assert rendered[1] == (other.job.id, True)
        assert rendered[2][1] is False
        third = await trio_client.insert(Welcome(6, "import"), UNIQUE)
        assert third.unique_skipped_as_duplicate and third.job.id == rendered[2][0]


async def test_riverqueue_unique_insert_fails_on_this_schema(
    database_url: str, migrated_schema: str
) -> None:
    """The caveat: River's Python client 0.7 names the unique index of River's schema
    version 5 in its ON CONFLICT, which later versions replaced."""

    def unique_insert() -> None:
        engine = sqlalchemy.create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg://"),
            connect_args={"options": f"-c search_path={migrated_schema}"},
        )
        try:
            client = riverqueue.Client(riversqlalchemy.Driver(engine))
            client.insert(
                RiverqueueWelcome(user_id=1),
                riverqueue.InsertOpts(unique_opts=riverqueue.UniqueOpts(by_args=True)),
            )
        finally:
            engine.dispose()

    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="no unique or exclusion constraint"):
        await in_thread(unique_insert)


# --- transactions: the jobs and their notification commit with the caller's ---


async def count_jobs(driver: Driver) -> int:
    return int(await driver.fetchval("SELECT count(*) FROM /*schema*/river_job"))


async def test_rendered_insert_commits_with_the_callers_transaction(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    listener = await open_listener(driver, "river_insert")
    try:

        def rolled_back_then_committed() -> None:
            # No schema: the tables and the channel come from search_path.
            with psycopg.connect(database_url, options=f"-c search_path={migrated_schema}") as c:
                with c.transaction(force_rollback=True):
                    sql, params = rivertrio.render_insert(Welcome(1), InsertOpts(queue="mail"))
                    c.execute(sql, params)
                with c.transaction():
                    sql, params = rivertrio.render_insert(Welcome(2), InsertOpts(queue="sms"))
                    c.execute(sql, params)

        await in_thread(rolled_back_then_committed)
        # Only the committed insert notified, on this schema's channel.
        assert await next_payload(listener) == {"queue": "sms"}
        assert await count_jobs(driver) == 1
    finally:
        await listener.aclose()


async def test_asyncio_tx_forms_commit_with_the_callers_transaction(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    listener = await open_listener(driver, "river_insert")
    try:

        async def main() -> None:
            # No configured schema: the client finds it through search_path.
            pool = await asyncpg.create_pool(
                database_url, server_settings={"search_path": migrated_schema}
            )
            try:
                jobs = AsyncInsertClient(pool)
                async with pool.acquire() as conn:
                    tx = conn.transaction()
                    await tx.start()
                    await jobs.insert_tx(conn, Welcome(1), InsertOpts(queue="a"))
                    await jobs.insert_many_tx(conn, [(Welcome(2), InsertOpts(queue="b"))])
                    await jobs.insert_many_fast_tx(conn, [(Welcome(3), InsertOpts(queue="c"))])
                    await tx.rollback()
                    async with conn.transaction():
                        await jobs.insert_many_fast_tx(
                            conn, [(Welcome(4), InsertOpts(queue="d")), Welcome(5)]
                        )
            finally:
                await pool.close()

        await in_asyncio(main)
        got = {(await next_payload(listener))["queue"] for _ in range(2)}
        assert got == {"d", "default"}
        assert await count_jobs(driver) == 2
    finally:
        await listener.aclose()


async def test_trio_insert_many_fast_tx(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with running(rivertrio.Config(schema=migrated_schema), database_url) as client:

        async def copy_then_fail() -> None:
            async with client.transaction() as tx:
                assert await client.insert_many_fast_tx(tx, [Welcome(1), Welcome(2)]) == 2
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError, match="rolled back"):
            await copy_then_fail()
        assert await count_jobs(driver) == 0
        async with client.transaction() as tx:
            assert await client.insert_many_fast_tx(tx, [Welcome(1), Welcome(2)]) == 2
        assert await count_jobs(driver) == 2


# --- bad input is refused before anything is written ---


async def test_bad_input_is_refused(database_url: str, migrated_schema: str) -> None:
    with pytest.raises(InvalidInputError, match="paramstyle must be"):
        rivertrio.render_insert(Welcome(1), paramstyle="qmark")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a valid Postgres schema name"):
        rivertrio.render_insert(Welcome(1), schema="")
    with pytest.raises(InvalidInputError, match=r"job args must be a rivertrio\.JobArgs"):
        rivertrio.render_insert({"user_id": 1})  # type: ignore[arg-type]

    async def main() -> list[str]:
        errors = []
        async with open_insert_client(
            database_url, config=rivertrio.Config(schema=migrated_schema)
        ) as jobs:
            for call in (
                lambda: jobs.insert_many([]),
                lambda: jobs.insert_tx("not a connection", Welcome(1)),  # type: ignore[arg-type]
                lambda: jobs.insert_many_fast([Welcome(1), Welcome(1)]),
            ):
                try:
                    await call()
                except (InvalidInputError, DatabaseError) as exc:
                    errors.append(str(exc))
            # A unique conflict inside one COPY batch fails it whole.
            try:
                await jobs.insert_many_fast([(Welcome(9, "x"), UNIQUE)] * 2)
            except DatabaseError as exc:
                errors.append(f"{exc.sqlstate} {exc}")
        return errors

    errors = await in_asyncio(main)
    assert "the list is empty" in errors[0]
    assert "take an asyncpg connection, not str" in errors[1]
    assert len(errors) == 3  # two plain jobs alike are no conflict
    assert errors[2].startswith("23505 insert_many_fast: a job conflicts with a unique job")


def test_render_styles() -> None:
    sql, params = rivertrio.render_insert(Welcome(1), schema='we"ird$1%')
    assert '"we""ird$1%%".river_job' in sql and "$" not in sql.replace('"we""ird$1%%"', "")
    assert sql.count("%s") == len(params)
    dollar, same = rivertrio.render_insert(Welcome(1), paramstyle="numeric_dollar", schema="s")
    assert f"${len(same)}" in dollar and f"${len(same) + 1}" not in dollar
    when = datetime.now(UTC) + timedelta(hours=1)
    _, scheduled = rivertrio.render_insert(
        Welcome(1), InsertOpts(scheduled_at=when, pending=True), schema="s"
    )
    assert [when] in scheduled and [True] in scheduled
