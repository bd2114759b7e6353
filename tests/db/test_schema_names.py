"""Schema names that need quoting work everywhere, and none can inject SQL.

River quotes its schema name in every statement, so any name Postgres can hold
is accepted there; rivertrio accepts the same names. Each test runs with a
decoy ``river_job`` table first on the search path: SQL smuggled in through a
schema name (``x"; DROP TABLE river_job; --``) would reach that table, and the
tests check it is still there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import click.testing
import pytest
import trio

import rivertrio
from rivertrio import ConfigError, EventKind
from rivertrio._cli.migrate import migrate as migrate_cli
from rivertrio._driver import open_driver
from rivertrio._driver._migrations import LATEST_VERSION
from rivertrio._driver._topics import INSERT_TOPIC, MAX_SCHEMA_BYTES
from support.catalog import read_catalog
from support.common import Noop, config, next_event, running
from support.schemas import new_schema

pytestmark = pytest.mark.timeout(60)

ODD_NAMES = {
    "mixed-case": "Mixed Case",
    "double-quote": 'With "Quote"',
    "injection": 'x"; DROP TABLE river_job; --',
    "dots-and-upper": "UPPER.dot $1",
}


@pytest.fixture(params=sorted(ODD_NAMES))
def odd_name(request: pytest.FixtureRequest) -> str:
    # Unique per test (tests share the server), and still the name under test.
    return f"{ODD_NAMES[request.param]} {uuid.uuid4().hex[:8]}"


@pytest.fixture
async def decoy_url(database_url: str) -> AsyncIterator[str]:
    """The server's URL with a schema holding a decoy river_job first on the search path."""
    decoy = f"rt_{uuid.uuid4().hex[:12]}_decoy"
    async with open_driver(database_url) as admin:
        await admin.execute(f"CREATE SCHEMA {decoy}; CREATE TABLE {decoy}.river_job (x int)")
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}search_path={decoy}"
        async with open_driver(database_url) as admin:
            assert await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{decoy}.river_job")
    finally:
        async with open_driver(database_url) as admin:
            await admin.execute(f"SET lock_timeout = '10s'; DROP SCHEMA {decoy} CASCADE")


@pytest.fixture
async def odd_schema(database_url: str, odd_name: str) -> AsyncIterator[str]:
    async with new_schema(database_url, odd_name) as name:
        yield name


async def catalog(database_url: str, schema: str) -> dict[str, Any]:
    async with open_driver(database_url) as driver:
        return await driver.run(read_catalog, schema)


async def test_migrations_build_rivers_schema_under_any_name(
    database_url: str, decoy_url: str, odd_schema: str, empty_schema: str
) -> None:
    await rivertrio.migrate(database_url, schema=empty_schema)
    result = await rivertrio.migrate(decoy_url, schema=odd_schema)
    assert result.schema == odd_schema
    assert result.to_version == LATEST_VERSION
    assert await catalog(database_url, odd_schema) == await catalog(database_url, empty_schema)
    status = await rivertrio.migrate_list(decoy_url, schema=odd_schema)
    assert status.current_version == LATEST_VERSION
    down = await rivertrio.migrate(decoy_url, schema=odd_schema, direction="down", target_version=0)
    assert down.to_version == 0
    emptied = await catalog(database_url, odd_schema)
    assert (emptied["tables"], emptied["enums"], emptied["functions"]) == ({}, [], [])


async def test_clients_work_and_notify_each_other_in_the_schema(
    decoy_url: str, odd_schema: str
) -> None:
    await rivertrio.migrate(decoy_url, schema=odd_schema)
    # A 30 s poll: only the insert notification can start the job within seconds,
    # so this passes only if the channel named after the schema works both ways.
    worker = config(odd_schema, fetch_poll_interval=30.0)
    inserter = rivertrio.Config(schema=odd_schema)
    async with (
        open_driver(decoy_url, schema=odd_schema) as driver,
        running(worker, decoy_url) as client,
        running(inserter, decoy_url) as other,
        client.subscribe(EventKind.JOB_COMPLETED) as events,
    ):
        listener = await driver.open_listener()
        try:
            await listener.listen(INSERT_TOPIC)
            t0 = trio.current_time()
            res = await other.insert(Noop(n=1))
            event = await next_event(events, within=10)
            assert event.job is not None and event.job.id == res.job.id
            assert trio.current_time() - t0 < 10
            with trio.fail_after(10):
                note = await listener.receive.receive()
            assert note.topic == INSERT_TOPIC
            assert json.loads(note.payload) == {"queue": "default"}
        finally:
            await listener.aclose()
        # Management statements are qualified alike.
        assert (await client.job_get(res.job.id)).state == rivertrio.JobState.COMPLETED
        assert [q.name for q in await client.queue_list()] == ["default"]


async def test_the_cli_takes_the_name_as_given(decoy_url: str, odd_schema: str) -> None:
    runner = click.testing.CliRunner()

    def cli(*args: str) -> click.testing.Result:
        return runner.invoke(
            migrate_cli, [*args, "--database-url", decoy_url, "--schema", odd_schema]
        )

    res = await trio.to_thread.run_sync(cli, "up")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == f'schema "{odd_schema}" is now at version 8'
    res = await trio.to_thread.run_sync(cli, "validate")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is not a valid Postgres schema name"),
        ("nul\x00byte", "is not a valid Postgres schema name"),
        ("s" * 64, "is not a valid Postgres schema name"),
        ("é" * 32, "is not a valid Postgres schema name"),  # 64 bytes
        ("s" * (MAX_SCHEMA_BYTES + 1), "is too long for notifications"),
    ],
)
async def test_names_postgres_would_refuse_or_cut_short_are_refused(
    database_url: str, name: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        rivertrio.Config(schema=name)
    if "notifications" not in problem:
        # Refused before anything reaches the server.
        with pytest.raises(ConfigError, match=problem):
            await rivertrio.migrate(database_url, schema=name)
        with pytest.raises(ConfigError, match=problem):
            await rivertrio.migrate_list(database_url, schema=name)


def test_the_longest_name_whose_channels_fit_is_accepted() -> None:
    assert rivertrio.Config(schema="s" * MAX_SCHEMA_BYTES).schema == "s" * MAX_SCHEMA_BYTES
