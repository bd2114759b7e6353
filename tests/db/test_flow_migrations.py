"""The ``rivertrio_flow`` migration line: installed after ``main``, removable, River's untouched.

River's ``main`` line is checked object by object against River's catalog in
test_schema.py; here the point is that the flow line only adds objects of its
own: a schema with the line installed and then removed reads back exactly as
one that never had it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import MigrationError, migrate, migrate_get, migrate_list, migrate_validate
from rivertrio._driver import open_driver
from rivertrio._driver._flow_migrations import FLOW_LATEST_VERSION, FLOW_LINE
from rivertrio._driver._migrations import LATEST_VERSION
from support.catalog import read_catalog
from support.cli import invoke
from support.schemas import new_schema

FLOW_VERSIONS = tuple(range(1, FLOW_LATEST_VERSION + 1))
MAIN_VERSIONS = tuple(range(1, LATEST_VERSION + 1))


async def catalog(url: str, schema: str) -> dict[str, Any]:
    async with open_driver(url) as driver:
        return await driver.run(read_catalog, schema)


async def lines(url: str, schema: str) -> list[tuple[str, int]]:
    async with open_driver(url, schema=schema) as driver:
        rows = await driver.fetch(
            "SELECT line, version FROM /*schema*/river_migration ORDER BY line, version"
        )
    return [(r["line"], r["version"]) for r in rows]


@pytest.fixture
async def other_schema(database_url: str) -> AsyncIterator[str]:
    async with new_schema(database_url) as name:
        yield name


async def test_up_installs_the_line_after_main(database_url: str, empty_schema: str) -> None:
    result = await migrate(database_url, schema=empty_schema)
    assert result.line == "main"
    assert result.version_numbers == MAIN_VERSIONS
    [flow] = result.also
    assert (flow.line, flow.version_numbers, flow.to_version) == (
        FLOW_LINE,
        FLOW_VERSIONS,
        FLOW_LATEST_VERSION,
    )
    assert await lines(database_url, empty_schema) == [
        *(("main", v) for v in MAIN_VERSIONS),
        *((FLOW_LINE, v) for v in FLOW_VERSIONS),
    ]
    status = await migrate_list(database_url, schema=empty_schema, line=FLOW_LINE)
    assert (status.current_version, status.pending) == (FLOW_LATEST_VERSION, ())
    assert (await migrate_validate(database_url, schema=empty_schema, line=FLOW_LINE)).ok
    # Again: nothing to do on either line.
    again = await migrate(database_url, schema=empty_schema)
    assert (again.version_numbers, again.also[0].version_numbers) == ((), ())


async def test_removing_the_line_leaves_exactly_rivers_schema(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    await migrate(database_url, schema=other_schema, line="main")
    rivers = await catalog(database_url, other_schema)
    await migrate(database_url, schema=empty_schema)
    with_flow = await catalog(database_url, empty_schema)
    assert with_flow != rivers
    assert set(with_flow["tables"]) - set(rivers["tables"]) == {"rivertrio_flow_start"}
    added = set(with_flow["indexes"]["river_job"]) - set(rivers["indexes"]["river_job"])
    assert added == {
        "rivertrio_flow_held_idx",
        "rivertrio_flow_sequence_idx",
        "rivertrio_flow_waiting_idx",
    }

    down = await migrate(
        database_url, schema=empty_schema, line=FLOW_LINE, direction="down", target_version=0
    )
    assert down.version_numbers == tuple(reversed(FLOW_VERSIONS))
    assert down.also == ()
    assert await catalog(database_url, empty_schema) == rivers
    assert await lines(database_url, empty_schema) == [("main", v) for v in MAIN_VERSIONS]
    validate = await migrate_validate(database_url, schema=empty_schema, line=FLOW_LINE)
    assert (validate.ok, validate.unapplied) == (False, FLOW_VERSIONS)

    # And back, by the line alone.
    up = await migrate(database_url, schema=empty_schema, line=FLOW_LINE)
    assert up.version_numbers == FLOW_VERSIONS
    assert await catalog(database_url, empty_schema) == with_flow


async def test_one_version_at_a_time(database_url: str, empty_schema: str) -> None:
    await migrate(database_url, schema=empty_schema, line="main")
    first = await migrate(database_url, schema=empty_schema, line=FLOW_LINE, target_version=1)
    assert (first.version_numbers, first.from_version, first.to_version) == ((1,), 0, 1)
    rest = await migrate(database_url, schema=empty_schema, line=FLOW_LINE)
    assert rest.version_numbers == FLOW_VERSIONS[1:]
    one_down = await migrate(database_url, schema=empty_schema, line=FLOW_LINE, direction="down")
    assert one_down.version_numbers == (FLOW_LATEST_VERSION,)
    with pytest.raises(MigrationError, match="not applied"):
        await migrate(
            database_url,
            schema=empty_schema,
            line=FLOW_LINE,
            direction="down",
            target_version=FLOW_LATEST_VERSION,
        )


async def test_the_line_needs_main_at_version_5(database_url: str, empty_schema: str) -> None:
    # A targeted up migrates main alone.
    result = await migrate(database_url, schema=empty_schema, target_version=4)
    assert result.also == ()
    with pytest.raises(MigrationError, match="needs River's main line at version 5"):
        await migrate(database_url, schema=empty_schema, line=FLOW_LINE)
    # A full up then takes both.
    result = await migrate(database_url, schema=empty_schema)
    assert result.version_numbers == (5, 6, 7, 8)
    assert result.also[0].version_numbers == FLOW_VERSIONS


async def test_main_going_below_5_removes_the_line_first(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema)
    # Down one version of main: the line stays.
    one = await migrate(database_url, schema=empty_schema, direction="down")
    assert (one.version_numbers, one.also) == ((8,), ())
    down = await migrate(database_url, schema=empty_schema, direction="down", target_version=3)
    assert down.version_numbers == (7, 6, 5, 4)
    assert down.also[0].version_numbers == tuple(reversed(FLOW_VERSIONS))
    # Below 5, river_migration has River's old shape (no line column): main only.
    async with open_driver(database_url, schema=empty_schema) as driver:
        rows = await driver.fetch("SELECT version FROM /*schema*/river_migration ORDER BY 1")
    assert [r["version"] for r in rows] == [1, 2, 3]


async def test_a_dry_run_of_both_lines_changes_nothing(
    database_url: str, empty_schema: str
) -> None:
    plan = await migrate(database_url, schema=empty_schema, dry_run=True)
    assert plan.version_numbers == MAIN_VERSIONS
    assert plan.also[0].version_numbers == FLOW_VERSIONS
    assert "CREATE INDEX IF NOT EXISTS rivertrio_flow_held_idx" in plan.also[0].sql
    assert (await migrate_list(database_url, schema=empty_schema)).applied == ()


async def test_another_tool_running_the_printed_sql_builds_the_same(
    database_url: str, empty_schema: str, other_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema)
    await migrate(database_url, schema=other_schema, line="main")
    async with open_driver(database_url) as driver:
        await driver.execute(migrate_get(schema=other_schema, line=FLOW_LINE, transactions=True))
    assert await catalog(database_url, other_schema) == await catalog(database_url, empty_schema)
    status = await migrate_list(database_url, schema=other_schema, line=FLOW_LINE)
    assert status.applied == FLOW_VERSIONS


async def test_the_command_line_takes_the_line(database_url: str, empty_schema: str) -> None:
    common = ("--database-url", database_url, "--schema", empty_schema)
    up = await invoke("migrate", "up", *common)
    assert up.exit_code == 0, up.output
    assert f"applied {FLOW_LINE} 001 flow control" in up.output
    assert up.output.splitlines()[-1] == f'schema "{empty_schema}" is now at version 8'

    listed = await invoke("migrate", "list", "--line", FLOW_LINE, *common)
    assert listed.exit_code == 0, listed.output
    assert f"{FLOW_LINE} version {FLOW_LATEST_VERSION}" in listed.output

    down = await invoke("migrate", "down", "--line", FLOW_LINE, "--target-version", "0", *common)
    assert down.exit_code == 0, down.output
    assert f"is now at {FLOW_LINE} version 0" in down.output
    invalid = await invoke("migrate", "validate", "--line", FLOW_LINE, *common)
    assert invalid.exit_code == 1
    assert "unapplied rivertrio_flow migrations: 1, 2" in invalid.output

    unknown = await invoke("migrate", "up", "--line", "pro", *common)
    assert unknown.exit_code == 1
    assert "migration line does not exist: 'pro'" in unknown.output


@dataclass
class Call(rivertrio.JobArgs, kind="flow_line_call"):
    n: int = 0


RATED = {"api": rivertrio.FlowControl(rate=rivertrio.RateLimit(limit=5, period=1.0))}


def _rated_config(schema: str, queues: list[str], worked: trio.Event) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Call)
    async def call(job: rivertrio.Job[Call]) -> None:
        worked.set()

    return rivertrio.Config(
        schema=schema,
        workers=workers,
        queues={name: rivertrio.QueueConfig(max_workers=2) for name in queues},
        flow=RATED,
        fetch_poll_interval=0.05,
    )


async def test_a_client_refuses_flow_queues_on_a_schema_without_the_line(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema, line="main")
    # Inserting into a flow-controlled queue needs none of the line's objects.
    async with rivertrio.open_client(
        rivertrio.Config(schema=empty_schema, flow=RATED), database_url=database_url
    ) as inserter:
        job = (await inserter.insert(Call(), rivertrio.InsertOpts(queue="api"))).job
    worked = trio.Event()
    config = _rated_config(empty_schema, ["api"], worked)
    fix = r"rivertrio migrate up"
    with pytest.raises(
        MigrationError, match=rf"queue 'api' is flow-controlled .*lacks rivertrio_flow_start.*{fix}"
    ):
        async with rivertrio.open_client(config, database_url=database_url):
            pytest.fail("the client started")
    async with open_driver(database_url, schema=empty_schema) as driver:
        row = await driver.fetchrow(
            "SELECT state::text AS state, attempt FROM /*schema*/river_job WHERE id = $1", job.id
        )
        assert row is not None
        # Refused before anything was fetched: the job is still held, never attempted.
        assert (row["state"], row["attempt"]) == ("pending", 0)

        # A queue added to a running client is checked the same way.
        plain = _rated_config(empty_schema, ["plain"], trio.Event())
        async with rivertrio.open_client(plain, database_url=database_url) as client:
            with pytest.raises(MigrationError, match=rf"queue 'api' is flow-controlled .*{fix}"):
                await client.queues.add("api", rivertrio.QueueConfig(max_workers=1))
        assert not worked.is_set()

        # With the line installed, the same configuration starts and works the job.
        await migrate(database_url, schema=empty_schema, line=FLOW_LINE)
        async with rivertrio.open_client(config, database_url=database_url):
            with trio.fail_after(10):
                await worked.wait()
