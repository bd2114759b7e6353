"""Migrations: up, down, targets, dry runs, River-migrated schemas, the CLI, errors."""

from __future__ import annotations

import functools
from typing import Any

import click.testing
import pytest
import trio

from rivertrio import ConfigError, DatabaseError
from rivertrio._cli.migrate import migrate as migrate_cli
from rivertrio._driver import open_driver
from rivertrio._driver._migrations import LATEST_VERSION, migrate_up_all
from rivertrio._migrate import MigrationError, migrate, migrate_list, migrate_validate

ALL = tuple(range(1, LATEST_VERSION + 1))


# --- Catalog probes (asyncio side, one driver crossing each). ---------------------


async def _objects(conn: Any, schema: str) -> list[tuple[str, str, str]]:
    """Everything in the schema, with enough detail to notice any change."""
    rows = await conn.fetch(
        """
        WITH n AS (SELECT oid FROM pg_namespace WHERE nspname = $1)
        SELECT 'relation' AS kind, relname AS name, relkind::text || relpersistence::text AS detail
            FROM pg_class WHERE relnamespace = (SELECT oid FROM n)
        UNION ALL
        SELECT 'type', typname, typtype::text FROM pg_type WHERE typnamespace = (SELECT oid FROM n)
        UNION ALL
        SELECT 'function', proname, pg_get_function_identity_arguments(oid)
            FROM pg_proc WHERE pronamespace = (SELECT oid FROM n)
        UNION ALL
        SELECT 'constraint', conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = (SELECT oid FROM n)
        UNION ALL
        SELECT 'enum', enumlabel, t.typname FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
            WHERE t.typnamespace = (SELECT oid FROM n)
        UNION ALL
        SELECT 'column', c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relnamespace = (SELECT oid FROM n) AND c.relkind = 'r'
                AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 'trigger', tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE c.relnamespace = (SELECT oid FROM n) AND NOT t.tgisinternal
        ORDER BY 1, 2, 3
        """,
        schema,
    )
    return [(r["kind"], r["name"], r["detail"]) for r in rows]


async def _migration_rows(conn: Any, schema: str) -> list[tuple[Any, ...]]:
    """river_migration's rows, in whichever shape it has, with each row's xmin."""
    name = f'"{schema}".river_migration'
    if await conn.fetchval("SELECT to_regclass($1)", name) is None:
        return []
    rows = await conn.fetch(f"SELECT xmin::text AS xid, * FROM {name} ORDER BY version")
    return [tuple(r.items()) for r in rows]


async def _xmins(conn: Any, schema: str) -> dict[int, str]:
    rows = await conn.fetch(f'SELECT version, xmin::text AS xid FROM "{schema}".river_migration')
    return {r["version"]: r["xid"] for r in rows}


async def _has_line_column(conn: Any, schema: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attname = 'line' AND NOT attisdropped)",
            f'"{schema}".river_migration',
        )
    )


async def probe(database_url: str, fn: Any, *args: Any) -> Any:
    async with open_driver(database_url) as driver:
        return await driver.run(fn, *args)


async def execute(database_url: str, sql: str) -> None:
    async with open_driver(database_url) as driver:
        await driver.execute(sql)


async def applied(database_url: str, schema: str) -> tuple[int, ...]:
    return (await migrate_list(database_url, schema=schema)).applied


# --- Up. ------------------------------------------------------------------------


async def test_up_applies_every_version_each_in_its_own_transaction(
    database_url: str, empty_schema: str
) -> None:
    first = await migrate(database_url, schema=empty_schema, target_version=4)
    assert first.version_numbers == (1, 2, 3, 4)
    assert (first.direction, first.from_version, first.to_version) == ("up", 0, 4)
    # One transaction per version: each bookkeeping row has its own inserting xid.
    # (Version 5 copies rows 1-4 into the rebuilt table, so look before it runs.)
    xmins = await probe(database_url, _xmins, empty_schema)
    assert sorted(xmins) == [1, 2, 3, 4]
    assert len(set(xmins.values())) == 4

    rest = await migrate(database_url, schema=empty_schema)
    assert rest.version_numbers == (5, 6, 7, 8)
    assert (rest.from_version, rest.to_version) == (4, 8)
    xmins = await probe(database_url, _xmins, empty_schema)
    assert sorted(xmins) == list(ALL)
    assert len({xmins[5], xmins[6], xmins[7], xmins[8]}) == 4
    assert await applied(database_url, empty_schema) == ALL


async def test_fresh_schema_migrates_in_one_go_and_again_is_a_no_op(
    database_url: str, empty_schema: str
) -> None:
    # Version 6 uses the enum value version 4 adds: this passes only because
    # version 4 committed first, inside the same single script.
    result = await migrate(database_url, schema=empty_schema)
    assert result.version_numbers == ALL
    assert [v.name for v in result.versions][:2] == ["create river migration", "initial schema"]
    assert result.schema == empty_schema
    before = await probe(database_url, _objects, empty_schema)
    again = await migrate(database_url, schema=empty_schema)
    assert again.version_numbers == ()
    assert (again.from_version, again.to_version) == (LATEST_VERSION, LATEST_VERSION)
    assert await probe(database_url, _objects, empty_schema) == before


async def test_a_failing_version_rolls_back_alone(database_url: str, empty_schema: str) -> None:
    # Version 4 creates river_queue; an existing one makes it fail.
    await execute(database_url, f'CREATE TABLE "{empty_schema}".river_queue (x int)')
    with pytest.raises(DatabaseError, match=r"migration 004 \[up\] \(pending and more\) failed"):
        await migrate(database_url, schema=empty_schema)
    # 1-3 committed; nothing of 4 (args is still nullable, no `pending` state).
    assert await applied(database_url, empty_schema) == (1, 2, 3)
    objects = await probe(database_url, _objects, empty_schema)
    assert ("column", "river_job.args", "jsonb") in objects
    assert not any(kind == "enum" and name == "pending" for kind, name, _ in objects)

    await execute(database_url, f'DROP TABLE "{empty_schema}".river_queue')
    result = await migrate(database_url, schema=empty_schema)
    assert result.version_numbers == (4, 5, 6, 7, 8)


async def test_up_to_a_target_and_target_errors(database_url: str, empty_schema: str) -> None:
    assert (await migrate(database_url, schema=empty_schema, target_version=3)).to_version == 3
    # A target already applied is nothing to do (River does the same since 0.39).
    again = await migrate(database_url, schema=empty_schema, target_version=2)
    assert (again.version_numbers, again.to_version) == ((), 3)
    with pytest.raises(MigrationError, match="down to version 5: it is not applied"):
        await migrate(database_url, schema=empty_schema, direction="down", target_version=5)
    with pytest.raises(ConfigError, match="target_version 9 is not a migration version"):
        await migrate(database_url, schema=empty_schema, target_version=9)
    with pytest.raises(ConfigError, match="target_version 0 is not a migration version"):
        await migrate(database_url, schema=empty_schema, target_version=0)
    with pytest.raises(ConfigError, match="target_version -1"):
        await migrate(database_url, schema=empty_schema, direction="down", target_version=-1)
    with pytest.raises(ConfigError, match="direction must be 'up' or 'down', not 'sideways'"):
        await migrate(database_url, schema=empty_schema, direction="sideways")  # type: ignore[arg-type]
    assert await applied(database_url, empty_schema) == (1, 2, 3)


# --- Down. ----------------------------------------------------------------------


async def test_down_removes_one_version_by_default(database_url: str, empty_schema: str) -> None:
    await migrate(database_url, schema=empty_schema, target_version=6)
    at_six = await probe(database_url, _objects, empty_schema)
    await migrate(database_url, schema=empty_schema, target_version=7)
    at_seven = await probe(database_url, _objects, empty_schema)
    await migrate(database_url, schema=empty_schema, line="main")

    result = await migrate(database_url, schema=empty_schema, direction="down")
    assert result.version_numbers == (8,)
    assert (result.direction, result.from_version, result.to_version) == ("down", 8, 7)
    assert await probe(database_url, _objects, empty_schema) == at_seven

    result = await migrate(database_url, schema=empty_schema, direction="down")
    assert result.version_numbers == (7,)
    assert (result.direction, result.from_version, result.to_version) == ("down", 7, 6)
    assert await applied(database_url, empty_schema) == (1, 2, 3, 4, 5, 6)
    # Exactly the version-6 schema again (river_client back, defaults gone...).
    assert await probe(database_url, _objects, empty_schema) == at_six

    result = await migrate(database_url, schema=empty_schema, direction="down")
    assert result.version_numbers == (6,)
    assert await applied(database_url, empty_schema) == (1, 2, 3, 4, 5)


async def test_down_to_a_target_restores_the_old_migration_table(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema, target_version=3)
    at_three = await probe(database_url, _objects, empty_schema)
    await migrate(database_url, schema=empty_schema)
    assert await probe(database_url, _has_line_column, empty_schema)

    result = await migrate(database_url, schema=empty_schema, direction="down", target_version=3)
    assert result.version_numbers == (8, 7, 6, 5, 4)
    assert result.to_version == 3
    assert not await probe(database_url, _has_line_column, empty_schema)
    assert await applied(database_url, empty_schema) == (1, 2, 3)
    # Version 4's down, as River's, leaves the `pending` enum value and leaves
    # metadata nullable without a default; all else is as it was at version 3.
    now = set(await probe(database_url, _objects, empty_schema))
    then = set(at_three)
    assert now - then == {("enum", "pending", "river_job_state"), _METADATA_NO_DEFAULT}
    assert then - now == {_METADATA_DEFAULT}


_METADATA_DEFAULT = ("column", "river_job.metadata", "jsonb not null default '{}'::jsonb")
_METADATA_NO_DEFAULT = ("column", "river_job.metadata", "jsonb")


async def test_down_to_zero_removes_everything_and_up_restores_it(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema)
    full = await probe(database_url, _objects, empty_schema)
    assert any(name == "river_job" for _, name, _ in full)

    result = await migrate(database_url, schema=empty_schema, direction="down", target_version=0)
    assert result.version_numbers == tuple(reversed(ALL))
    assert result.to_version == 0
    assert await probe(database_url, _objects, empty_schema) == []  # no river_ anything left
    assert await applied(database_url, empty_schema) == ()
    # Down again on an empty schema is a no-op, as in River.
    assert (
        await migrate(database_url, schema=empty_schema, direction="down")
    ).version_numbers == ()

    assert (await migrate(database_url, schema=empty_schema)).version_numbers == ALL
    assert await probe(database_url, _objects, empty_schema) == full
    assert (await migrate_validate(database_url, schema=empty_schema)).ok


async def test_every_single_step_down_and_back_up(database_url: str, empty_schema: str) -> None:
    snapshots = [await probe(database_url, _objects, empty_schema)]
    for version in ALL:
        await migrate(database_url, schema=empty_schema, target_version=version)
        snapshots.append(await probe(database_url, _objects, empty_schema))
    for version in reversed(ALL):
        result = await migrate(database_url, schema=empty_schema, direction="down")
        assert result.version_numbers == (version,)
        # River's own down migrations leave these traces behind; all else is exact.
        now = await probe(database_url, _objects, empty_schema)
        expected = snapshots[version - 1]
        if 2 <= version - 1 < 4:
            now = [o for o in now if o != ("enum", "pending", "river_job_state")]
            now = [_METADATA_DEFAULT if o == _METADATA_NO_DEFAULT else o for o in now]
            now.sort()
        assert now == expected, version


async def _record_newer_version(database_url: str, schema: str) -> None:
    """What a newer River release leaves: a version 9 and an object of its own."""
    await execute(
        database_url,
        f"INSERT INTO \"{schema}\".river_migration (line, version) VALUES ('main', 9); "
        f'CREATE VIEW "{schema}".river_job_future AS SELECT id FROM "{schema}".river_job',
    )


async def test_versions_a_newer_river_recorded_are_left_alone(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema)
    await _record_newer_version(database_url, empty_schema)
    status = await migrate_list(database_url, schema=empty_schema)
    assert (status.applied, status.unknown, status.pending) == ((*ALL, 9), (9,), ())
    assert status.current_version == 9
    assert (await migrate_validate(database_url, schema=empty_schema)).ok
    res = await cli("list", "--database-url", database_url, "--schema", empty_schema)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == (
        "  also applied, by a newer River release (rivertrio leaves them alone): 9"
    )
    # Up has nothing to do; down reverts the newest version rivertrio knows and
    # leaves 9 recorded, as River's migrator does.
    assert (await migrate(database_url, schema=empty_schema)).version_numbers == ()
    down = await migrate(database_url, schema=empty_schema, direction="down")
    assert down.version_numbers == (LATEST_VERSION,)
    assert await applied(database_url, empty_schema) == (*ALL[:-1], 9)
    assert (await migrate(database_url, schema=empty_schema)).version_numbers == (LATEST_VERSION,)


async def test_a_down_blocked_by_a_newer_version_says_what_to_do(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema)
    await _record_newer_version(database_url, empty_schema)
    # Version 2's down drops river_job, which version 9's view depends on.
    with pytest.raises(DatabaseError) as caught:
        await migrate(database_url, schema=empty_schema, direction="down", target_version=1)
    message = str(caught.value)
    assert "migration 002 [down] (initial schema) failed and was rolled back" in message
    assert "also records versions 9, which a newer River release applied" in message
    assert "migrate them down first with that release's migrator" in message
    assert await applied(database_url, empty_schema) == (1, 2, 9)


# --- List, validate, dry run. -----------------------------------------------------


async def test_validate_reports_unapplied_versions(database_url: str, empty_schema: str) -> None:
    result = await migrate_validate(database_url, schema=empty_schema)
    assert (result.ok, result.unapplied) == (False, ALL)
    assert result.messages == ("unapplied migrations: 1, 2, 3, 4, 5, 6, 7, 8",)

    await migrate(database_url, schema=empty_schema, target_version=5)
    result = await migrate_validate(database_url, schema=empty_schema)
    assert (result.ok, result.unapplied) == (False, (6, 7, 8))
    assert result.messages == ("unapplied migrations: 6, 7, 8",)

    await migrate(database_url, schema=empty_schema)
    result = await migrate_validate(database_url, schema=empty_schema)
    assert (result.ok, result.unapplied, result.messages) == (True, (), ())


async def test_list_reports_applied_and_available(database_url: str, empty_schema: str) -> None:
    await migrate(database_url, schema=empty_schema, target_version=2)
    status = await migrate_list(database_url, schema=empty_schema)
    assert status.schema == empty_schema
    assert [(m.version, m.applied) for m in status.migrations] == [(v, v <= 2) for v in ALL]
    assert status.migrations[6].name == "notification outbox sqlite jsonb and sql cleanup"
    assert status.migrations[7].name == "job id autoincrement"
    assert (status.current_version, status.latest_version, status.pending) == (
        2,
        8,
        (3, 4, 5, 6, 7, 8),
    )
    assert status.unknown == ()


@pytest.mark.parametrize(
    ("start", "direction", "target", "expected"),
    [
        (0, "up", None, ALL),
        (4, "up", 6, (5, 6)),
        (8, "down", None, (8,)),
        (8, "down", 0, (8, 7, 6, 5, 4, 3, 2, 1)),
    ],
)
async def test_dry_run_changes_nothing(
    database_url: str,
    empty_schema: str,
    start: int,
    direction: Any,
    target: int | None,
    expected: tuple[int, ...],
) -> None:
    if start:
        await migrate(database_url, schema=empty_schema, target_version=start)
    objects = await probe(database_url, _objects, empty_schema)
    rows = await probe(database_url, _migration_rows, empty_schema)

    result = await migrate(
        database_url, schema=empty_schema, direction=direction, target_version=target, dry_run=True
    )
    assert result.dry_run
    assert result.version_numbers == expected
    assert result.from_version == start
    assert await probe(database_url, _objects, empty_schema) == objects
    assert await probe(database_url, _migration_rows, empty_schema) == rows

    # The SQL shown is what would run: running it by hand gets the same result.
    assert result.sql.startswith("BEGIN;\n-- River main migration")
    assert result.sql.count("BEGIN;") == result.sql.count("COMMIT;") == len(expected)
    assert f'"{empty_schema}".river_' in result.sql
    await execute(database_url, result.sql)
    assert await applied(database_url, empty_schema) == tuple(
        sorted(set(range(1, start + 1)) ^ set(expected))
    )


# --- Schemas River migrated. --------------------------------------------------------


@pytest.mark.parametrize("river_version", ALL)
async def test_schema_river_left_at_version_n_is_recognised(
    database_url: str, empty_schema: str, river_version: int
) -> None:
    # A River-migrated schema at version N: versions 1..N applied, river_migration
    # in the shape of that version (no `line` column before 5).
    await migrate(database_url, schema=empty_schema, target_version=river_version)
    assert await probe(database_url, _has_line_column, empty_schema) == (river_version >= 5)
    status = await migrate_list(database_url, schema=empty_schema)
    assert status.current_version == river_version
    assert status.applied == tuple(range(1, river_version + 1))

    result = await migrate(database_url, schema=empty_schema)
    assert result.from_version == river_version
    assert result.version_numbers == tuple(range(river_version + 1, LATEST_VERSION + 1))
    assert await applied(database_url, empty_schema) == ALL


async def test_schema_river_migrated_with_its_own_bookkeeping(
    database_url: str, empty_schema: str
) -> None:
    # River's migrator writes the rows of all versions after running their DDL,
    # with its own ids; rows written that way read the same.
    await migrate(database_url, schema=empty_schema, target_version=4)
    await execute(
        database_url,
        f'DELETE FROM "{empty_schema}".river_migration; '
        f'INSERT INTO "{empty_schema}".river_migration (version) '
        "SELECT unnest(ARRAY[1, 2, 3, 4])",
    )
    assert (await migrate(database_url, schema=empty_schema)).version_numbers == (5, 6, 7, 8)


async def test_schema_with_river_tables_but_no_migration_table(
    database_url: str, empty_schema: str
) -> None:
    await execute(database_url, f'CREATE TABLE "{empty_schema}".river_job (id bigint)')
    with pytest.raises(MigrationError, match="river_job but no river_migration"):
        await migrate(database_url, schema=empty_schema)


async def test_missing_schema_is_named(database_url: str) -> None:
    with pytest.raises(MigrationError, match="schema 'rt_no_such_schema' does not exist"):
        await migrate(database_url, schema="rt_no_such_schema")


async def test_no_schema_means_the_search_path(database_url: str, empty_schema: str) -> None:
    # asyncpg passes unknown URL parameters as server settings.
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}search_path={empty_schema}"
    result = await migrate(url)
    assert result.schema == empty_schema
    assert result.version_numbers == ALL
    assert await applied(database_url, empty_schema) == ALL
    assert "river_job" in {name for _, name, _ in await probe(database_url, _objects, empty_schema)}


async def test_concurrent_migrators_apply_each_version_once(
    database_url: str, empty_schema: str
) -> None:
    results: list[tuple[int, ...]] = []

    async def one() -> None:
        results.append((await migrate(database_url, schema=empty_schema)).version_numbers)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
    done = [v for r in results for v in r]
    assert sorted(done) == list(ALL)  # every version ran exactly once, nobody failed
    assert await applied(database_url, empty_schema) == ALL


async def test_migrate_up_all_for_fixtures(database_url: str, empty_schema: str) -> None:
    async with open_driver(database_url, schema=empty_schema) as driver:
        assert await driver.run(migrate_up_all, empty_schema) == list(ALL)
        assert await driver.run(migrate_up_all, empty_schema) == []
    assert (await migrate_validate(database_url, schema=empty_schema)).ok


# --- The CLI. ---------------------------------------------------------------------------


async def cli(*args: str) -> click.testing.Result:
    """Invoke ``rivertrio migrate ARGS`` in a worker thread (it runs its own trio.run)."""
    runner = click.testing.CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, migrate_cli, list(args), catch_exceptions=True)
    )


async def test_cli_up_list_validate_down(database_url: str, empty_schema: str) -> None:
    where = ["--database-url", database_url, "--schema", empty_schema]

    res = await cli("validate", *where)
    assert res.exit_code == 1, res.output
    assert f'schema "{empty_schema}": unapplied migrations: 1, 2, 3, 4, 5, 6, 7, 8' in res.stderr

    res = await cli("up", *where, "--target-version", "5")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "applied 001 create river migration",
        "applied 002 initial schema",
        "applied 003 river job tags non null",
        "applied 004 pending and more",
        "applied 005 migration unique client",
        f'schema "{empty_schema}" is now at version 5',
    ]

    res = await cli("list", *where)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == f'schema "{empty_schema}": version 5 (latest 8)'
    assert lines[5].split() == ["005", "migration", "unique", "client", "applied"]
    assert lines[6].split() == ["006", "bulk", "unique", "pending"]

    res = await cli("up", *where, "--dry-run")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("BEGIN;\n-- River main migration 006 [up]: bulk unique\n")
    assert "-- River main migration 007 [up]" in res.stdout
    assert await applied(database_url, empty_schema) == (1, 2, 3, 4, 5)

    res = await cli("up", *where)
    assert res.exit_code == 0, res.output
    assert "applied 006 bulk unique" in res.stdout
    res = await cli("validate", *where)
    assert res.exit_code == 0, res.output
    assert res.stdout == f'schema "{empty_schema}": ok, every migration is applied\n'

    res = await cli("down", *where)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "rolled back 008 job id autoincrement"
    res = await cli("down", *where, "--target-version", "0")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == f'schema "{empty_schema}" is now at version 0'
    assert await probe(database_url, _objects, empty_schema) == []

    res = await cli("down", *where)
    assert res.exit_code == 0, res.output
    assert res.stdout == f'nothing to migrate down: schema "{empty_schema}" is at version 0\n'


async def test_cli_errors_are_one_line(database_url: str, empty_schema: str) -> None:
    where = ["--database-url", database_url, "--schema", empty_schema]
    res = await cli("up", *where, "--target-version", "9")
    assert (res.exit_code, res.stdout) == (1, "")
    assert res.stderr == ("error: target_version 9 is not a migration version: up accepts 1 to 8\n")
    res = await cli("down", *where, "--target-version", "3")
    assert res.exit_code == 1
    assert res.stderr == (
        "error: cannot migrate down to version 3: it is not applied (applied: none)\n"
    )
    res = await cli("list", "--database-url", database_url, "--schema", "rt_missing")
    assert res.exit_code == 1
    assert res.stderr == "error: schema 'rt_missing' does not exist; create it first\n"
    assert await applied(database_url, empty_schema) == ()
