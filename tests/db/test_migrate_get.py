"""The SQL ``migrate get`` prints, run by hand, builds what ``migrate up`` builds.

Each test migrates one schema with `migrate` and another by executing the
printed SQL as another migration tool would, then compares the two catalogs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rivertrio import migrate, migrate_get, migrate_list, migrate_validate
from rivertrio._driver import open_driver, quote_ident
from rivertrio._driver._migrations import LATEST_VERSION
from support.catalog import read_catalog
from support.schemas import new_schema

ALL = tuple(range(1, LATEST_VERSION + 1))


@pytest.fixture
async def other_schema(database_url: str) -> AsyncIterator[str]:
    """A second empty schema, its name in need of quoting (mixed case, a space, a quote)."""
    async with new_schema(database_url, f'rt_{uuid.uuid4().hex[:12]} Get "B"') as name:
        yield name


async def catalog(database_url: str, schema: str) -> dict[str, Any]:
    async with open_driver(database_url) as driver:
        return await driver.run(read_catalog, schema)


async def run_each_in_a_transaction(url: str, sqls: list[str]) -> None:
    """What a migration tool does: each migration in a transaction of its own."""

    async def apply(conn: Any) -> None:
        for sql in sqls:
            async with conn.transaction():
                await conn.execute(sql)

    async with open_driver(url) as driver:
        await driver.run(apply)


async def test_each_version_run_by_another_tool_builds_what_migrate_up_builds(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema, line="main")
    await run_each_in_a_transaction(
        database_url, [migrate_get(v, schema=other_schema) for v in ALL]
    )
    assert await catalog(database_url, other_schema) == await catalog(database_url, empty_schema)
    # The records are there too: rivertrio (and River) see a fully migrated schema.
    assert (await migrate_list(database_url, schema=other_schema)).applied == ALL
    assert (await migrate_validate(database_url, schema=other_schema)).ok
    assert (await migrate(database_url, schema=other_schema, line="main")).version_numbers == ()

    # And the down migrations, one by one, undo it all.
    await run_each_in_a_transaction(
        database_url,
        [migrate_get(v, direction="down", schema=other_schema) for v in reversed(ALL)],
    )
    emptied = await catalog(database_url, other_schema)
    assert (emptied["tables"], emptied["enums"], emptied["functions"]) == ({}, [], [])


async def test_the_whole_output_run_in_one_go(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    # As `psql -f` or one execute would run it; --transactions keeps each version
    # in its own transaction, which version 6 needs (it uses 4's new enum value).
    await migrate(database_url, schema=empty_schema, line="main")
    async with open_driver(database_url) as driver:
        await driver.execute(migrate_get(schema=other_schema, transactions=True))
    assert await catalog(database_url, other_schema) == await catalog(database_url, empty_schema)
    assert (await migrate_list(database_url, schema=other_schema)).applied == ALL


async def test_unqualified_output_lands_in_the_search_path_schema(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    # Without --schema, as River prints it: the connection's search path decides.
    await migrate(database_url, schema=empty_schema, line="main")
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}search_path={quote_ident(other_schema)}"
    await run_each_in_a_transaction(url, [migrate_get(v) for v in ALL])
    assert await catalog(database_url, other_schema) == await catalog(database_url, empty_schema)
    assert (await migrate_list(database_url, schema=other_schema)).applied == ALL


async def test_without_records_the_schema_is_built_but_not_recorded(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema, line="main")
    await run_each_in_a_transaction(
        database_url, [migrate_get(v, schema=other_schema, record=False) for v in ALL]
    )
    assert await catalog(database_url, other_schema) == await catalog(database_url, empty_schema)
    assert (await migrate_list(database_url, schema=other_schema)).applied == ()
