"""Pooled connections between statements: kept as they are after rivertrio's own
statements (no reset round trip), reset after anything that may have left state.

A connection that ran only a `Driver.run` function goes back with no reset. One
handed to the caller (`connection()`, `transaction()`), one that ran the
caller's SQL (`execute`, `fetch`, ...), and one whose statement failed are
reset before anyone uses them again. A one-connection pool makes every
statement meet the previous one's connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from rivertrio import DatabaseError
from rivertrio._driver import Driver, open_driver


@pytest.fixture
async def one(database_url: str, migrated_schema: str) -> AsyncIterator[Driver]:
    async with open_driver(database_url, schema=migrated_schema, max_size=1) as driver:
        yield driver


async def _name(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT current_setting('application_name')"))


async def _pid(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def _set_then_fail(conn: asyncpg.Connection) -> None:
    await conn.execute("SET application_name = 'left_by_a_failure'")
    await conn.execute("SELECT 1/0")


async def test_the_same_connection_serves_statement_after_statement(one: Driver) -> None:
    pids = {await one.run(_pid) for _ in range(5)}
    assert len(pids) == 1


async def test_a_connection_block_is_reset_before_the_next_statement(one: Driver) -> None:
    async with one.connection() as conn:
        await conn.execute("SET application_name = 'left_by_a_block'")
    assert await one.run(_name) == "rivertrio"


async def test_a_transaction_block_is_reset_before_the_next_statement(one: Driver) -> None:
    async with one.transaction() as tx:
        await tx.execute("SET application_name = 'left_by_a_transaction'")
    assert await one.run(_name) == "rivertrio"


async def test_the_callers_own_sql_is_reset_before_the_next_statement(one: Driver) -> None:
    await one.execute("SET application_name = 'left_by_execute'")
    assert await one.run(_name) == "rivertrio"
    await one.fetchval("SELECT set_config('application_name', 'left_by_fetchval', false)")
    assert await one.run(_name) == "rivertrio"


async def test_a_failed_statement_is_reset_before_the_next_one(one: Driver) -> None:
    with pytest.raises(DatabaseError, match="division by zero"):
        await one.run(_set_then_fail)
    assert await one.run(_name) == "rivertrio"
