"""River's ``main`` migration line, versions 1 to 8, and the asyncio-side runner.

The DDL is ours, but every object it leaves behind has the shape River's own
migrations give it at the same version, so a database migrated by River (Go)
is recognised here and the other way round. The version numbers, the
``river_migration`` bookkeeping, the per-version transactions and the handling
of versions a newer River recorded follow River's ``rivermigrate`` package.

SQL uses the driver's ``/*schema*/`` placeholder wherever an object is named,
so a configured schema qualifies every name and no schema at all leaves names
to the search path (River's ``/* TEMPLATE: schema */`` does the same).

Everything here runs on the asyncio side of trio-asyncio, inside one
`Driver.run` crossing: the state read, the plan and the whole migration
script (one simple-query round trip holding one transaction per version).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import asyncpg

from .._exceptions import ConfigError, DatabaseError, MigrationError
from ._sql import qualify, quote_ident

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

__all__ = [
    "LATEST_VERSION",
    "LINE",
    "LINE_COLUMN_VERSION",
    "MIGRATIONS",
    "Direction",
    "Migration",
    "SchemaState",
    "Step",
    "check_request",
    "check_target",
    "failed_step",
    "migrate_up_all",
    "migrators_lock",
    "plan",
    "plan_versions",
    "read_state",
    "render",
    "render_step",
    "run_migrations",
    "script",
    "unknown_versions",
]

Direction = Literal["up", "down"]

#: River's migration line; rivertrio only ever uses this one.
LINE = "main"

#: The version that adds ``river_migration.line``. Rows of earlier versions are
#: written and deleted without that column, exactly as River's migrator does.
LINE_COLUMN_VERSION = 5

# Session advisory lock class (first key) serialising migrators of one schema;
# the second key is a hash of the schema name.
_LOCK_CLASS = 0x52_54_4D  # "RTM"


@dataclass(frozen=True, slots=True)
class Migration:
    """One version of the ``main`` line: its DDL in both directions (with placeholders)."""

    version: int
    name: str
    up: str
    down: str


# --------------------------------------------------------------------------
# Version 1: the bookkeeping table, in its first shape (no `line` column).
# --------------------------------------------------------------------------

_V1_UP = """
CREATE TABLE /*schema*/river_migration (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL,
    CONSTRAINT version CHECK (version >= 1)
);

-- Left unnamed so Postgres calls it river_migration_version_idx, as River's is.
CREATE UNIQUE INDEX ON /*schema*/river_migration USING btree (version);
"""

_V1_DOWN = """
DROP TABLE /*schema*/river_migration;
"""

# --------------------------------------------------------------------------
# Version 2: jobs, the (later removed) insert trigger, and leadership.
# --------------------------------------------------------------------------

# Created in 2, dropped in 4 (and back on the way down).
_INSERT_TRIGGER = """
CREATE FUNCTION /*schema*/river_job_notify() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF NEW.state = 'available' THEN
        PERFORM pg_notify('river_insert', json_build_object('queue', NEW.queue)::text);
    END IF;
    RETURN NULL;
END;
$body$;

CREATE TRIGGER river_notify AFTER INSERT ON /*schema*/river_job
    FOR EACH ROW EXECUTE FUNCTION /*schema*/river_job_notify();
"""

_V2_UP = (
    """
CREATE TYPE /*schema*/river_job_state AS ENUM (
    'available',
    'cancelled',
    'completed',
    'discarded',
    'retryable',
    'running',
    'scheduled'
);

-- Column order matters to River (alignment, `SELECT *` readability); keep it.
CREATE TABLE /*schema*/river_job (
    id bigserial PRIMARY KEY,
    state /*schema*/river_job_state NOT NULL DEFAULT 'available',
    attempt smallint NOT NULL DEFAULT 0,
    max_attempts smallint NOT NULL,
    attempted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    priority smallint NOT NULL DEFAULT 1,
    args jsonb,
    attempted_by text[],
    errors jsonb[],
    kind text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    queue text NOT NULL DEFAULT 'default',
    tags varchar(255)[],
    CONSTRAINT finalized_or_finalized_at_null CHECK (
        (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
        OR finalized_at IS NULL
    ),
    CONSTRAINT max_attempts_is_positive CHECK (max_attempts > 0),
    CONSTRAINT priority_in_range CHECK (priority >= 1 AND priority <= 4),
    CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
    CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
);

CREATE INDEX river_job_kind ON /*schema*/river_job USING btree (kind);

CREATE INDEX river_job_state_and_finalized_at_index ON /*schema*/river_job
    USING btree (state, finalized_at) WHERE finalized_at IS NOT NULL;

CREATE INDEX river_job_prioritized_fetching_index ON /*schema*/river_job
    USING btree (state, queue, priority, scheduled_at, id);

CREATE INDEX river_job_args_index ON /*schema*/river_job USING gin (args);

CREATE INDEX river_job_metadata_index ON /*schema*/river_job USING gin (metadata);

"""
    # River 0.0.x announced inserts from a trigger; version 4 removes it again.
    + _INSERT_TRIGGER
    + """
CREATE UNLOGGED TABLE /*schema*/river_leader (
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    leader_id text NOT NULL,
    name text PRIMARY KEY,
    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
    CONSTRAINT leader_id_length CHECK (char_length(leader_id) > 0 AND char_length(leader_id) < 128)
);
"""
)

_V2_DOWN = """
DROP TABLE /*schema*/river_job;
DROP FUNCTION /*schema*/river_job_notify();
DROP TYPE /*schema*/river_job_state;
DROP TABLE /*schema*/river_leader;
"""

# --------------------------------------------------------------------------
# Version 3: tags become non-null.
# --------------------------------------------------------------------------

_V3_UP = """
ALTER TABLE /*schema*/river_job ALTER COLUMN tags SET DEFAULT '{}';
UPDATE /*schema*/river_job SET tags = '{}' WHERE tags IS NULL;
ALTER TABLE /*schema*/river_job ALTER COLUMN tags SET NOT NULL;
"""

_V3_DOWN = """
ALTER TABLE /*schema*/river_job
    ALTER COLUMN tags DROP NOT NULL,
    ALTER COLUMN tags DROP DEFAULT;
"""

# --------------------------------------------------------------------------
# Version 4: args/metadata non-null, the `pending` state, river_queue, a
# stricter finalized_at check, one leader name, and no more insert trigger.
# --------------------------------------------------------------------------

_V4_UP = """
-- args gets a temporary default only to fill old NULLs; the column has none after.
ALTER TABLE /*schema*/river_job ALTER COLUMN args SET DEFAULT '{}';
UPDATE /*schema*/river_job SET args = '{}' WHERE args IS NULL;
ALTER TABLE /*schema*/river_job ALTER COLUMN args SET NOT NULL;
ALTER TABLE /*schema*/river_job ALTER COLUMN args DROP DEFAULT;

ALTER TABLE /*schema*/river_job ALTER COLUMN metadata SET DEFAULT '{}';
UPDATE /*schema*/river_job SET metadata = '{}' WHERE metadata IS NULL;
ALTER TABLE /*schema*/river_job ALTER COLUMN metadata SET NOT NULL;

-- The new value may not be used before this transaction commits (version 6
-- uses it), which is one reason every version runs in its own transaction.
ALTER TYPE /*schema*/river_job_state ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded';

ALTER TABLE /*schema*/river_job DROP CONSTRAINT finalized_or_finalized_at_null;
ALTER TABLE /*schema*/river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
    (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded'))
    OR (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded'))
);

DROP TRIGGER river_notify ON /*schema*/river_job;
DROP FUNCTION /*schema*/river_job_notify();

CREATE TABLE /*schema*/river_queue (
    name text PRIMARY KEY NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    paused_at timestamptz,
    updated_at timestamptz NOT NULL
);

ALTER TABLE /*schema*/river_leader
    ALTER COLUMN name SET DEFAULT 'default',
    DROP CONSTRAINT name_length,
    ADD CONSTRAINT name_length CHECK (name = 'default');
"""

# River's down leaves `pending` in the enum (Postgres cannot drop an enum value
# safely) and leaves metadata nullable and without the default version 2 gave
# it; we match River's result rather than version 2's, so both agree.
_V4_DOWN = (
    """
ALTER TABLE /*schema*/river_job ALTER COLUMN args DROP NOT NULL;

ALTER TABLE /*schema*/river_job ALTER COLUMN metadata DROP NOT NULL;
ALTER TABLE /*schema*/river_job ALTER COLUMN metadata DROP DEFAULT;

ALTER TABLE /*schema*/river_job DROP CONSTRAINT finalized_or_finalized_at_null;
ALTER TABLE /*schema*/river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
    (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
    OR finalized_at IS NULL
);

"""
    + _INSERT_TRIGGER
    + """
DROP TABLE /*schema*/river_queue;

ALTER TABLE /*schema*/river_leader
    ALTER COLUMN name DROP DEFAULT,
    DROP CONSTRAINT name_length,
    ADD CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128);
"""
)

# --------------------------------------------------------------------------
# Version 5: river_migration keyed by (line, version); river_job.unique_key;
# the river_client tables River reserved but never used (dropped again in 7).
# --------------------------------------------------------------------------

# Created in 5, dropped in 7 (and back on the way down).
_RIVER_CLIENT_TABLES = """
CREATE UNLOGGED TABLE /*schema*/river_client (
    id text PRIMARY KEY NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    paused_at timestamptz,
    updated_at timestamptz NOT NULL,
    CONSTRAINT name_length CHECK (char_length(id) > 0 AND char_length(id) < 128)
);

CREATE UNLOGGED TABLE /*schema*/river_client_queue (
    river_client_id text NOT NULL REFERENCES /*schema*/river_client (id) ON DELETE CASCADE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    max_workers bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    num_jobs_completed bigint NOT NULL DEFAULT 0,
    num_jobs_running bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (river_client_id, name),
    CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
    CONSTRAINT num_jobs_completed_zero_or_positive CHECK (num_jobs_completed >= 0),
    CONSTRAINT num_jobs_running_zero_or_positive CHECK (num_jobs_running >= 0)
);
"""

_V5_UP = (
    """
-- Rebuilt by rename-and-copy, the way River does it, so the resulting object
-- names (including the primary key's) are the ones River's databases have.
ALTER TABLE /*schema*/river_migration RENAME TO river_migration_old;

CREATE TABLE /*schema*/river_migration (
    line text NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT line_length CHECK (char_length(line) > 0 AND char_length(line) < 128),
    CONSTRAINT version_gte_1 CHECK (version >= 1),
    PRIMARY KEY (line, version)
);

INSERT INTO /*schema*/river_migration (created_at, line, version)
    SELECT created_at, 'main', version FROM /*schema*/river_migration_old;

DROP TABLE /*schema*/river_migration_old;

-- IF NOT EXISTS: River lets operators build these ahead of time (CONCURRENTLY).
ALTER TABLE /*schema*/river_job ADD COLUMN IF NOT EXISTS unique_key bytea;

CREATE UNIQUE INDEX IF NOT EXISTS river_job_kind_unique_key_idx ON /*schema*/river_job
    (kind, unique_key) WHERE unique_key IS NOT NULL;
"""
    + _RIVER_CLIENT_TABLES
)

_V5_DOWN = """
-- Rows of other migration lines have nowhere to go in the old table shape.
DO $body$
BEGIN
    IF EXISTS (SELECT 1 FROM /*schema*/river_migration WHERE line <> 'main') THEN
        RAISE EXCEPTION 'river_migration holds lines other than main; 005 down would lose them';
    END IF;
END;
$body$;

ALTER TABLE /*schema*/river_migration RENAME TO river_migration_old;

CREATE TABLE /*schema*/river_migration (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL,
    CONSTRAINT version CHECK (version >= 1)
);

CREATE UNIQUE INDEX ON /*schema*/river_migration USING btree (version);

INSERT INTO /*schema*/river_migration (created_at, version)
    SELECT created_at, version FROM /*schema*/river_migration_old ORDER BY version;

DROP TABLE /*schema*/river_migration_old;

-- Dropping the column drops river_job_kind_unique_key_idx with it.
ALTER TABLE /*schema*/river_job DROP COLUMN unique_key;

DROP TABLE /*schema*/river_client_queue;
DROP TABLE /*schema*/river_client;
"""

# --------------------------------------------------------------------------
# Version 6: unique jobs by state bitmask.
# --------------------------------------------------------------------------

# Bit numbers are get_bit's, counted from the left of the bit(8) string, so
# the mask read as a byte has available as its lowest bit (0x01) and
# scheduled as its highest (0x80).
_V6_UP = """
CREATE OR REPLACE FUNCTION /*schema*/river_job_state_in_bitmask(
    bitmask bit(8), state /*schema*/river_job_state
) RETURNS boolean LANGUAGE sql IMMUTABLE AS $body$
    SELECT CASE state
        WHEN 'available' THEN get_bit(bitmask, 7)
        WHEN 'cancelled' THEN get_bit(bitmask, 6)
        WHEN 'completed' THEN get_bit(bitmask, 5)
        WHEN 'discarded' THEN get_bit(bitmask, 4)
        WHEN 'pending' THEN get_bit(bitmask, 3)
        WHEN 'retryable' THEN get_bit(bitmask, 2)
        WHEN 'running' THEN get_bit(bitmask, 1)
        WHEN 'scheduled' THEN get_bit(bitmask, 0)
        ELSE 0
    END = 1;
$body$;

ALTER TABLE /*schema*/river_job ADD COLUMN IF NOT EXISTS unique_states bit(8);

CREATE UNIQUE INDEX IF NOT EXISTS river_job_unique_idx ON /*schema*/river_job (unique_key)
    WHERE unique_key IS NOT NULL
        AND unique_states IS NOT NULL
        AND /*schema*/river_job_state_in_bitmask(unique_states, state);

DROP INDEX /*schema*/river_job_kind_unique_key_idx;
"""

_V6_DOWN = """
DROP INDEX /*schema*/river_job_unique_idx;

ALTER TABLE /*schema*/river_job DROP COLUMN unique_states;

CREATE UNIQUE INDEX IF NOT EXISTS river_job_kind_unique_key_idx ON /*schema*/river_job
    (kind, unique_key) WHERE unique_key IS NOT NULL;

DROP FUNCTION /*schema*/river_job_state_in_bitmask(bit(8), /*schema*/river_job_state);
"""

# --------------------------------------------------------------------------
# Version 7 (River 0.43+): the notification outbox table (unused by
# Postgres-backed clients, River needs it for SQLite), no river_client tables,
# and two defaults.
# --------------------------------------------------------------------------

_V7_UP = """
CREATE TABLE /*schema*/river_notification (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL,
    topic text NOT NULL,
    CONSTRAINT topic_length CHECK (length(topic) > 0 AND length(topic) < 128)
);

CREATE INDEX river_notification_created_at_idx ON /*schema*/river_notification (created_at);
CREATE INDEX river_notification_topic_id_idx ON /*schema*/river_notification (topic, id);

DROP TABLE /*schema*/river_client_queue;
DROP TABLE /*schema*/river_client;

ALTER TABLE /*schema*/river_job ALTER COLUMN max_attempts SET DEFAULT 25;

ALTER TABLE /*schema*/river_queue ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP;
"""

_V7_DOWN = (
    _RIVER_CLIENT_TABLES
    + """
ALTER TABLE /*schema*/river_job ALTER COLUMN max_attempts DROP DEFAULT;

ALTER TABLE /*schema*/river_queue ALTER COLUMN updated_at DROP DEFAULT;

DROP TABLE /*schema*/river_notification;
"""
)

# --------------------------------------------------------------------------
# Version 8: nothing, for Postgres. River's SQLite driver rebuilds river_job
# with AUTOINCREMENT so that the id of a deleted newest job is never handed out
# again; a Postgres sequence never reuses a value anyway, so River's Postgres
# files for this version run a no-op in both directions, and only record it.
# --------------------------------------------------------------------------

_V8_UP = _V8_DOWN = """
-- No-op: a sequence already never reuses the ids it generated.
SELECT 1;
"""

#: The ``main`` line, in order; names are River's (from its file names).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create river migration", _V1_UP, _V1_DOWN),
    Migration(2, "initial schema", _V2_UP, _V2_DOWN),
    Migration(3, "river job tags non null", _V3_UP, _V3_DOWN),
    Migration(4, "pending and more", _V4_UP, _V4_DOWN),
    Migration(5, "migration unique client", _V5_UP, _V5_DOWN),
    Migration(6, "bulk unique", _V6_UP, _V6_DOWN),
    Migration(7, "notification outbox sqlite jsonb and sql cleanup", _V7_UP, _V7_DOWN),
    Migration(8, "job id autoincrement", _V8_UP, _V8_DOWN),
)

_BY_VERSION = {m.version: m for m in MIGRATIONS}

#: The newest version rivertrio knows.
LATEST_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a schema holds, as far as migrations go."""

    schema: str
    """The schema's name (the configured one, or the search path's current one)."""
    applied: tuple[int, ...]
    """Versions recorded in ``river_migration`` for the main line, ascending."""
    has_line_column: bool
    """Whether ``river_migration`` has River's version-5 shape."""


@dataclass(frozen=True, slots=True)
class Step:
    """One migration to run (or that ran) in one direction, as rendered SQL."""

    version: int
    name: str
    direction: Direction
    sql: str
    """The version's DDL plus its ``river_migration`` bookkeeping, schema applied."""


def render_step(
    version: int, direction: Direction, schema: str | None, *, record: bool = True
) -> Step:
    """Render one version's SQL, with the row it adds to or removes from river_migration.

    The bookkeeping statement runs in the same transaction as the DDL: a version
    is recorded exactly when its objects exist. Before version 5 the table has no
    ``line`` column, so those rows are written and deleted without it (River's
    ``MigrationInsertManyAssumingMain`` does the same). Without `record`, only
    the DDL (what River's ``migrate-get`` prints).
    """
    migration = _BY_VERSION[version]
    if not record:
        book = ""
    elif direction == "up":
        if version < LINE_COLUMN_VERSION:
            book = f"INSERT INTO /*schema*/river_migration (version) VALUES ({version});"
        else:
            book = (
                "INSERT INTO /*schema*/river_migration (line, version) "
                f"VALUES ('{LINE}', {version});"
            )
    elif version == 1:
        book = ""  # the table itself is gone
    elif version <= LINE_COLUMN_VERSION:
        book = f"DELETE FROM /*schema*/river_migration WHERE version = {version};"
    else:
        book = (
            f"DELETE FROM /*schema*/river_migration WHERE line = '{LINE}' AND version = {version};"
        )
    return render(migration, direction, schema, f"River {LINE}", book)


def render(
    migration: Migration, direction: Direction, schema: str | None, line: str, book: str
) -> Step:
    """A version's step of either line: a header naming `line`, the DDL, then `book`
    (its ``river_migration`` statement, or nothing)."""
    ddl = migration.up if direction == "up" else migration.down
    header = f"-- {line} migration {migration.version:03d} [{direction}]: {migration.name}"
    sql = "\n".join(part for part in (header, ddl.strip(), book) if part) + "\n"
    return Step(migration.version, migration.name, direction, qualify(sql, schema))


def script(steps: Iterable[Step]) -> str:
    """The SQL text that runs `steps`: one explicit transaction per version."""
    return "".join(f"BEGIN;\n{step.sql}COMMIT;\n\n" for step in steps)


def check_request(direction: str, target_version: int | None) -> None:
    """Reject arguments that are wrong whatever the database holds.

    Raises:
        ConfigError: `direction` or `target_version` is invalid; the message says why.
    """
    if direction not in ("up", "down"):
        raise ConfigError(f"direction must be 'up' or 'down', not {direction!r}")
    check_target(direction, target_version, LATEST_VERSION, "a migration version")


def check_target(direction: str, target_version: int | None, latest: int, what: str) -> None:
    """Reject a target version a line does not have (None: no target).

    Raises:
        ConfigError: Not an int, or not from 1 (up) or 0 (down) to `latest`; the
            message says the target is not `what` and gives the range.
    """
    if target_version is None:
        return
    if isinstance(target_version, bool) or not isinstance(target_version, int):
        raise ConfigError(f"target_version must be an int, not {target_version!r}")
    low = 1 if direction == "up" else 0
    if not low <= target_version <= latest:
        raise ConfigError(
            f"target_version {target_version} is not {what}: "
            f"{direction} accepts {low} to {latest}"
            + (" (0 removes every version)" if direction == "down" else "")
        )


def plan(applied: Sequence[int], direction: Direction, target_version: int | None) -> list[int]:
    """Choose the versions to run, in order, with River's semantics.

    Up: every known version not applied yet, ascending, through `target_version`
    (default: the latest); a target already applied makes it a no-op, as in
    River. Down: applied versions, descending; one step by default, else down to
    `target_version` exclusive (it must be applied, or 0 to remove everything).

    Versions recorded by a newer River release, unknown here, are left alone
    both ways (River's migrator does the same): up never runs them, down reverts
    only the known versions below them.

    Raises:
        MigrationError: A down target is not applied.
    """
    check_request(direction, target_version)
    return plan_versions(_BY_VERSION, applied, direction, target_version, "")


def plan_versions(
    known: Iterable[int],
    applied: Sequence[int],
    direction: Direction,
    target_version: int | None,
    line: str,
) -> list[int]:
    """`plan`'s rules for a line whose versions are `known` (`line`: its name and a
    space, for messages; empty for ``main``), the target already checked.

    Raises:
        MigrationError: A down target is not applied.
    """
    known = set(known)
    done = set(applied)
    if direction == "up":
        pending = sorted(known - done)
        if target_version is None:
            return pending
        if target_version in done:
            return []
        return [v for v in pending if v <= target_version]
    existing = sorted(done & known, reverse=True)
    if target_version is None:
        return existing[:1]
    if target_version == 0:
        return existing
    if target_version not in done:
        raise MigrationError(
            f"cannot migrate {line}down to version {target_version}: it is not applied "
            f"(applied: {_fmt(applied)})"
        )
    return [v for v in existing if v > target_version]


def unknown_versions(applied: Iterable[int]) -> list[int]:
    """The recorded versions this code does not know (a newer River applied them)."""
    return sorted(set(applied) - set(_BY_VERSION))


def _fmt(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in versions) or "none"


async def read_state(conn: asyncpg.Connection, schema: str | None) -> SchemaState:
    """Read which versions a schema has, from either shape of ``river_migration``.

    A schema River migrated (at any version, with or without the ``line`` column)
    reads the same as one rivertrio migrated.

    Raises:
        MigrationError: The named schema does not exist, or rivertrio's tables exist
            without ``river_migration`` (another tool manages this schema).
    """
    prefix = "" if schema is None else quote_ident(schema) + "."
    row = await conn.fetchrow(
        """
        SELECT coalesce($1::text, current_schema()) AS schema,
               $1::text IS NULL OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)
                   AS schema_exists,
               to_regclass($2) IS NOT NULL AS has_migration_table,
               EXISTS (
                   SELECT 1 FROM pg_attribute
                   WHERE attrelid = to_regclass($2) AND attname = 'line' AND NOT attisdropped
               ) AS has_line_column,
               to_regclass($3) IS NOT NULL AS has_job_table
        """,
        schema,
        prefix + "river_migration",
        prefix + "river_job",
    )
    assert row is not None
    resolved: str | None = row["schema"]
    if resolved is None:
        raise MigrationError("the search path names no schema; pass a schema")
    if not row["schema_exists"]:
        raise MigrationError(f"schema {schema!r} does not exist; create it first")
    if not row["has_migration_table"]:
        if row["has_job_table"]:
            raise MigrationError(
                f"schema {resolved!r} has river_job but no river_migration: its River "
                "tables are managed by another migration tool"
            )
        return SchemaState(resolved, (), has_line_column=False)
    if row["has_line_column"]:
        rows = await conn.fetch(
            f"SELECT version FROM {prefix}river_migration WHERE line = $1 ORDER BY version",
            LINE,
        )
    else:
        rows = await conn.fetch(f"SELECT version FROM {prefix}river_migration ORDER BY version")
    applied = tuple(int(r["version"]) for r in rows)
    return SchemaState(resolved, applied, has_line_column=bool(row["has_line_column"]))


async def run_migrations(
    conn: asyncpg.Connection,
    schema: str | None,
    direction: Direction,
    target_version: int | None,
    *,
    dry_run: bool = False,
) -> tuple[SchemaState, list[Step]]:
    """Read the schema's state, plan, and run the plan (unless `dry_run`).

    The whole plan goes to the server as one script of per-version transactions:
    one round trip however many versions run. Migrators of the same schema are
    serialised by a session advisory lock, so two processes migrating at once
    apply each version once. A dry run takes no lock and changes nothing.

    Returns:
        The state before running, and the steps run (or that would run).

    Raises:
        MigrationError: See `plan` and `read_state`.
        DatabaseError: A migration failed; it is rolled back, and the versions
            before it in the plan stay applied. The message names the version.
    """
    if dry_run:
        state = await read_state(conn, schema)
        return state, _steps(state, direction, target_version, schema)
    async with migrators_lock(conn, schema):
        state = await read_state(conn, schema)
        steps = _steps(state, direction, target_version, schema)
        if steps:
            try:
                await conn.execute(script(steps))
            except asyncpg.PostgresError as exc:
                raise await _failed(conn, schema, state, steps, exc) from exc
        return state, steps


@contextlib.asynccontextmanager
async def migrators_lock(conn: asyncpg.Connection, schema: str | None) -> AsyncIterator[None]:
    """Hold the migrators' session lock of `schema`: migrators of a schema, on either
    line and in any process, take turns, so each version is applied once."""
    await conn.execute(
        "SELECT pg_advisory_lock($1, hashtext(coalesce($2::text, current_schema())))",
        _LOCK_CLASS,
        schema,
    )
    try:
        yield
    finally:
        # Best effort: if the connection broke, the server already released the
        # lock, and the pool's reset on release unlocks everything anyway. This is
        # asyncio code: cancellation is edge-triggered, so these awaits are not
        # re-cancelled and need no shield (ASYNC102 assumes Trio).
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            await conn.execute(
                "SELECT pg_advisory_unlock($1, hashtext(coalesce($2::text, current_schema())))",
                _LOCK_CLASS,
                schema,
            )


def failed_step(steps: list[Step], applied: set[int]) -> Step:
    """The step a failed script stopped at, given the versions applied after it.

    The script stops at the first error, inside that version's transaction; the
    versions before it committed.
    """
    return next((s for s in steps if (s.version in applied) == (s.direction == "down")), steps[0])


def _steps(
    state: SchemaState, direction: Direction, target_version: int | None, schema: str | None
) -> list[Step]:
    return [
        render_step(v, direction, schema) for v in plan(state.applied, direction, target_version)
    ]


async def _failed(
    conn: asyncpg.Connection,
    schema: str | None,
    state: SchemaState,
    steps: list[Step],
    exc: asyncpg.PostgresError,
) -> DatabaseError:
    # Re-read the state to name the culprit.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
    try:
        applied = set((await read_state(conn, schema)).applied)
    except (asyncpg.PostgresError, MigrationError):
        what = f"migration {steps[0].direction} failed"
    else:
        failed = failed_step(steps, applied)
        what = (
            f"migration {failed.version:03d} [{failed.direction}] ({failed.name}) failed and "
            "was rolled back"
        )
    message = f"{what}: {exc.sqlstate}: {exc}"
    unknown = unknown_versions(state.applied)
    if unknown and steps[0].direction == "down":
        # Objects of those versions may depend on what this version removes.
        message += (
            f" (river_migration also records versions {_fmt(unknown)}, which a newer River "
            f"release applied and rivertrio does not know: migrate them down first with "
            "that release's migrator, e.g. `river migrate-down`)"
        )
    return DatabaseError(message, sqlstate=exc.sqlstate)


async def migrate_up_all(conn: asyncpg.Connection, schema: str | None) -> list[int]:
    """Apply every pending version to `schema` (None: the search path's). Asyncio side.

    For test fixtures and tools that already hold a connection; run it with
    ``await driver.run(migrate_up_all, schema)``. Returns the versions applied.
    """
    _, steps = await run_migrations(conn, schema, "up", None)
    return [s.version for s in steps]
