"""The migrated schema, read back from the catalogs, against River's.

Every expected value below is spec data: River's schema at each version of its
``main`` migration line, written out by hand (version 7 from River's version-7
migration) in the normalised form Postgres prints it. Version 8 changes nothing
in Postgres (River's Postgres files for it are no-ops; the change is SQLite's),
so the schema at 8 is the schema at 7. Nothing is derived from our DDL, so a
drift from River's schema fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from rivertrio import migrate, migrate_list
from rivertrio._driver import Driver, open_driver, qualify
from rivertrio._driver._migrations import LATEST_VERSION, MIGRATIONS
from support.catalog import read_catalog

# --- Columns: (name, type, not null, default), in table order. ----------------

TS = "timestamp with time zone"

RIVER_JOB_COLUMNS = [
    ("id", "bigint", True, "nextval('river_job_id_seq'::regclass)"),  # bigserial
    ("state", "river_job_state", True, "'available'::river_job_state"),
    ("attempt", "smallint", True, "0"),
    ("max_attempts", "smallint", True, "25"),
    ("attempted_at", TS, False, None),
    ("created_at", TS, True, "now()"),
    ("finalized_at", TS, False, None),
    ("scheduled_at", TS, True, "now()"),
    ("priority", "smallint", True, "1"),
    ("args", "jsonb", True, None),
    ("attempted_by", "text[]", False, None),
    ("errors", "jsonb[]", False, None),
    ("kind", "text", True, None),
    ("metadata", "jsonb", True, "'{}'::jsonb"),
    ("queue", "text", True, "'default'::text"),
    ("tags", "character varying(255)[]", True, "'{}'::character varying[]"),
    ("unique_key", "bytea", False, None),
    ("unique_states", "bit(8)", False, None),
]

RIVER_MIGRATION_COLUMNS = [
    ("line", "text", True, None),
    ("version", "bigint", True, None),
    ("created_at", TS, True, "now()"),
]

RIVER_LEADER_COLUMNS = [
    ("elected_at", TS, True, None),
    ("expires_at", TS, True, None),
    ("leader_id", "text", True, None),
    ("name", "text", True, "'default'::text"),
]

# updated_at has no default up to version 6; version 7, which sets two defaults,
# gives it CURRENT_TIMESTAMP (the other one is max_attempts' 25).
RIVER_QUEUE_COLUMNS = [
    ("name", "text", True, None),
    ("created_at", TS, True, "now()"),
    ("metadata", "jsonb", True, "'{}'::jsonb"),
    ("paused_at", TS, False, None),
    ("updated_at", TS, True, "CURRENT_TIMESTAMP"),
]

# Version 7's table, unused by Postgres clients; shape from River's migration 007.
RIVER_NOTIFICATION_COLUMNS = [
    ("id", "bigint", True, "nextval('river_notification_id_seq'::regclass)"),
    ("created_at", TS, True, "now()"),
    ("payload", "text", True, None),
    ("topic", "text", True, None),
]

# --- Indexes: name -> pg_get_indexdef. ------------------------------------------

INDEXES = {
    "river_job": {
        "river_job_pkey": "CREATE UNIQUE INDEX river_job_pkey ON river_job USING btree (id)",
        "river_job_kind": "CREATE INDEX river_job_kind ON river_job USING btree (kind)",
        "river_job_state_and_finalized_at_index": (
            "CREATE INDEX river_job_state_and_finalized_at_index ON river_job "
            "USING btree (state, finalized_at) WHERE (finalized_at IS NOT NULL)"
        ),
        "river_job_prioritized_fetching_index": (
            "CREATE INDEX river_job_prioritized_fetching_index ON river_job "
            "USING btree (state, queue, priority, scheduled_at, id)"
        ),
        "river_job_args_index": "CREATE INDEX river_job_args_index ON river_job USING gin (args)",
        "river_job_metadata_index": (
            "CREATE INDEX river_job_metadata_index ON river_job USING gin (metadata)"
        ),
        "river_job_unique_idx": (
            "CREATE UNIQUE INDEX river_job_unique_idx ON river_job USING btree (unique_key) "
            "WHERE ((unique_key IS NOT NULL) AND (unique_states IS NOT NULL) "
            "AND river_job_state_in_bitmask(unique_states, state))"
        ),
    },
    # River rebuilds river_migration at version 5 by renaming the old table and
    # creating a new one while the old primary key still holds the name
    # river_migration_pkey, so Postgres names the new one river_migration_pkey1,
    # in River's databases as in ours.
    "river_migration": {
        "river_migration_pkey1": (
            "CREATE UNIQUE INDEX river_migration_pkey1 ON river_migration "
            "USING btree (line, version)"
        ),
    },
    "river_leader": {
        "river_leader_pkey": (
            "CREATE UNIQUE INDEX river_leader_pkey ON river_leader USING btree (name)"
        ),
    },
    "river_queue": {
        "river_queue_pkey": (
            "CREATE UNIQUE INDEX river_queue_pkey ON river_queue USING btree (name)"
        ),
    },
    "river_notification": {
        "river_notification_pkey": (
            "CREATE UNIQUE INDEX river_notification_pkey ON river_notification USING btree (id)"
        ),
        "river_notification_created_at_idx": (
            "CREATE INDEX river_notification_created_at_idx ON river_notification "
            "USING btree (created_at)"
        ),
        "river_notification_topic_id_idx": (
            "CREATE INDEX river_notification_topic_id_idx ON river_notification "
            "USING btree (topic, id)"
        ),
    },
}

# Primary keys, as constraints: table -> columns.
PRIMARY_KEYS = {
    "river_job": "PRIMARY KEY (id)",
    "river_migration": "PRIMARY KEY (line, version)",
    "river_leader": "PRIMARY KEY (name)",
    "river_queue": "PRIMARY KEY (name)",
    "river_notification": "PRIMARY KEY (id)",
}

# --- Check constraints: table -> name -> pg_get_constraintdef. ------------------

_FINALIZED = (
    "ARRAY['cancelled'::river_job_state, 'completed'::river_job_state, "
    "'discarded'::river_job_state]"
)

CHECKS = {
    "river_job": {
        # finalized_at is set exactly when the state is cancelled, completed or discarded.
        "finalized_or_finalized_at_null": (
            f"CHECK ((((finalized_at IS NULL) AND (state <> ALL ({_FINALIZED}))) "
            f"OR ((finalized_at IS NOT NULL) AND (state = ANY ({_FINALIZED})))))"
        ),
        "max_attempts_is_positive": "CHECK ((max_attempts > 0))",
        "priority_in_range": "CHECK (((priority >= 1) AND (priority <= 4)))",
        "kind_length": "CHECK (((char_length(kind) > 0) AND (char_length(kind) < 128)))",
        "queue_length": "CHECK (((char_length(queue) > 0) AND (char_length(queue) < 128)))",
    },
    "river_migration": {
        "line_length": "CHECK (((char_length(line) > 0) AND (char_length(line) < 128)))",
        "version_gte_1": "CHECK ((version >= 1))",
    },
    "river_leader": {
        "leader_id_length": (
            "CHECK (((char_length(leader_id) > 0) AND (char_length(leader_id) < 128)))"
        ),
        "name_length": "CHECK ((name = 'default'::text))",
    },
    "river_queue": {},
    "river_notification": {
        "topic_length": "CHECK (((length(topic) > 0) AND (length(topic) < 128)))",
    },
}

ENUM_VALUES = [
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
]

# River's unique-states bitmask read as a byte.
STATE_BYTE = {
    "available": 0x01,
    "cancelled": 0x02,
    "completed": 0x04,
    "discarded": 0x08,
    "pending": 0x10,
    "retryable": 0x20,
    "running": 0x40,
    "scheduled": 0x80,
}

# The same positions as get_bit numbers them, from the left.
STATE_GET_BIT = {
    "available": 7,
    "cancelled": 6,
    "completed": 5,
    "discarded": 4,
    "pending": 3,
    "retryable": 2,
    "running": 1,
    "scheduled": 0,
}

# --- Fixtures. -------------------------------------------------------------------


@pytest.fixture
async def catalog(database_url: str, empty_schema: str) -> dict[str, Any]:
    # River's line alone: rivertrio's own line adds objects of its own (its test
    # checks that removing them leaves exactly this catalog).
    await migrate(database_url, schema=empty_schema, line="main")
    async with open_driver(database_url, schema=empty_schema) as driver:
        return await driver.run(read_catalog, empty_schema)


@pytest.fixture
async def schema_driver(database_url: str, empty_schema: str):  # type: ignore[no-untyped-def]
    await migrate(database_url, schema=empty_schema)
    async with open_driver(database_url, schema=empty_schema) as driver:
        yield driver


# --- Tests. ------------------------------------------------------------------------


def test_the_line_ends_at_rivers_latest_version() -> None:
    # River's main line, as its repository has it today: 008 is the newest.
    assert LATEST_VERSION == 8
    assert [(m.version, m.name) for m in MIGRATIONS][-2:] == [
        (7, "notification outbox sqlite jsonb and sql cleanup"),
        (8, "job id autoincrement"),
    ]


async def test_version_8_is_recorded_and_changes_nothing(
    database_url: str, empty_schema: str
) -> None:
    await migrate(database_url, schema=empty_schema, target_version=7)
    async with open_driver(database_url, schema=empty_schema) as driver:
        at_seven = await driver.run(read_catalog, empty_schema)
        result = await migrate(database_url, schema=empty_schema, line="main")
        assert result.version_numbers == (8,)
        assert await driver.run(read_catalog, empty_schema) == at_seven
        rows = await driver.fetch(
            "SELECT line, version FROM /*schema*/river_migration ORDER BY version"
        )
    assert [(r["line"], r["version"]) for r in rows] == [("main", v) for v in range(1, 9)]
    assert (await migrate_list(database_url, schema=empty_schema)).current_version == 8
    # And back: 8's down is as empty as its up.
    assert (await migrate(database_url, schema=empty_schema, direction="down")).version_numbers == (
        8,
    )
    async with open_driver(database_url, schema=empty_schema) as driver:
        assert await driver.run(read_catalog, empty_schema) == at_seven


async def test_tables_and_their_persistence(catalog: dict[str, Any]) -> None:
    # river_leader is UNLOGGED (relpersistence 'u'); everything else is logged ('p').
    assert catalog["tables"] == {
        "river_job": "p",
        "river_leader": "u",
        "river_migration": "p",
        "river_notification": "p",
        "river_queue": "p",
    }
    # Only the sequences behind the two bigserial ids; version 7 dropped the
    # river_client tables that version 5 created.
    assert catalog["other_relations"] == [
        ("river_job_id_seq", "S"),
        ("river_notification_id_seq", "S"),
    ]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("river_job", RIVER_JOB_COLUMNS),
        ("river_migration", RIVER_MIGRATION_COLUMNS),
        ("river_leader", RIVER_LEADER_COLUMNS),
        ("river_queue", RIVER_QUEUE_COLUMNS),
        ("river_notification", RIVER_NOTIFICATION_COLUMNS),
    ],
)
async def test_columns(
    catalog: dict[str, Any], table: str, expected: list[tuple[str, str, bool, str | None]]
) -> None:
    assert catalog["columns"][table] == expected


@pytest.mark.parametrize("table", sorted(INDEXES))
async def test_indexes(catalog: dict[str, Any], table: str) -> None:
    assert catalog["indexes"][table] == INDEXES[table]


@pytest.mark.parametrize("table", sorted(PRIMARY_KEYS))
async def test_primary_keys(catalog: dict[str, Any], table: str) -> None:
    assert catalog["primary_keys"][table] == [PRIMARY_KEYS[table]]


@pytest.mark.parametrize("table", sorted(CHECKS))
async def test_check_constraints(catalog: dict[str, Any], table: str) -> None:
    assert catalog["checks"][table] == CHECKS[table]


async def test_enum_and_function(catalog: dict[str, Any]) -> None:
    assert catalog["enums"] == ["river_job_state"]
    assert catalog["enum_values"] == ENUM_VALUES
    # The only function left is the immutable bitmask test; version 4 removed the
    # insert trigger and its function.
    assert catalog["functions"] == [
        ("river_job_state_in_bitmask", "bitmask bit, state river_job_state", "boolean", "i"),
    ]
    assert catalog["triggers"] == 0


MASKS = [0x00, 0xFF, 0xF5, 0x0A, 0x01, 0x80, 0x5A, 0xA5]


async def test_bitmask_function_for_every_state(schema_driver: Driver) -> None:
    async def evaluate(conn: Any) -> dict[tuple[int, str], bool]:
        rows = await conn.fetch(
            qualify(
                "SELECT m, s, /*schema*/river_job_state_in_bitmask("
                "    m::bit(8), s::/*schema*/river_job_state) AS r "
                "FROM unnest($1::int[]) AS m, unnest($2::text[]) AS s",
                schema_driver.configured_schema,
            ),
            MASKS,
            list(STATE_BYTE),
        )
        return {(r["m"], r["s"]): r["r"] for r in rows}

    got = await schema_driver.run(evaluate)
    assert len(got) == len(MASKS) * 8
    for mask in MASKS:
        bits = format(mask, "08b")  # get_bit's numbering: position 0 is the leftmost
        for state, byte in STATE_BYTE.items():
            assert got[(mask, state)] is bool(mask & byte), (hex(mask), state)
            assert got[(mask, state)] is (bits[STATE_GET_BIT[state]] == "1"), (hex(mask), state)
    # The default unique states: everything but cancelled and discarded.
    assert {s for s in STATE_BYTE if got[(0xF5, s)]} == {
        "available",
        "completed",
        "pending",
        "retryable",
        "running",
        "scheduled",
    }


def _job_with(column: str, value: str) -> str:
    if column == "kind":
        return f"INSERT INTO /*schema*/river_job (args, kind) VALUES ('{{}}', {value})"
    return f"INSERT INTO /*schema*/river_job (args, kind, {column}) VALUES ('{{}}', 'k', {value})"


async def test_constraints_reject_bad_rows(schema_driver: Driver) -> None:
    # The catalog comparison above pins the text; this pins what it means.
    attempts = {
        "completed without finalized_at": (
            "INSERT INTO /*schema*/river_job (args, kind, max_attempts, state) "
            "VALUES ('{}', 'k', 1, 'completed')"
        ),
        "available with finalized_at": (
            "INSERT INTO /*schema*/river_job (args, kind, max_attempts, finalized_at) "
            "VALUES ('{}', 'k', 1, now())"
        ),
        "priority 5": _job_with("priority", "5"),
        "priority 0": _job_with("priority", "0"),
        "max_attempts 0": (
            "INSERT INTO /*schema*/river_job (args, kind, max_attempts) VALUES ('{}', 'k', 0)"
        ),
        "empty kind": "INSERT INTO /*schema*/river_job (args, kind) VALUES ('{}', '')",
        "128-char kind": _job_with("kind", f"'{'k' * 128}'"),
        "empty queue": "INSERT INTO /*schema*/river_job (args, kind, queue) VALUES ('{}', 'k', '')",
        "leader not named default": (
            "INSERT INTO /*schema*/river_leader (elected_at, expires_at, leader_id, name) "
            "VALUES (now(), now(), 'me', 'other')"
        ),
        "empty leader_id": (
            "INSERT INTO /*schema*/river_leader (elected_at, expires_at, leader_id) "
            "VALUES (now(), now(), '')"
        ),
        "version 0": "INSERT INTO /*schema*/river_migration (line, version) VALUES ('main', 0)",
        "empty line": "INSERT INTO /*schema*/river_migration (line, version) VALUES ('', 9)",
        "null args": "INSERT INTO /*schema*/river_job (kind) VALUES ('k')",
    }
    sql = {what: qualify(stmt, schema_driver.configured_schema) for what, stmt in attempts.items()}

    async def try_each(conn: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        outer = conn.transaction()
        await outer.start()
        try:
            for what, stmt in sql.items():
                try:
                    async with conn.transaction():  # a savepoint per attempt
                        await conn.execute(stmt)
                    results[what] = None
                except Exception as exc:
                    results[what] = getattr(exc, "sqlstate", repr(exc))
            # A minimal job gets River's column defaults.
            job = await conn.fetchrow(
                qualify(
                    "INSERT INTO /*schema*/river_job (args, kind) VALUES ('{}', 'k') RETURNING *",
                    schema_driver.configured_schema,
                )
            )
            results["defaults"] = {k: job[k] for k in DEFAULTED}
            results["created_is_scheduled"] = job["created_at"] == job["scheduled_at"]
        finally:
            await outer.rollback()  # asyncio side: no shield needed
        return results

    results = await schema_driver.run(try_each)
    check_violation, not_null_violation = "23514", "23502"
    expected = dict.fromkeys(attempts, check_violation)
    expected["null args"] = not_null_violation
    assert {k: results[k] for k in attempts} == expected
    assert results["defaults"] == {
        "state": "available",
        "attempt": 0,
        "max_attempts": 25,
        "priority": 1,
        "queue": "default",
        "metadata": "{}",
        "tags": [],
        "finalized_at": None,
        "unique_key": None,
        "unique_states": None,
    }
    assert results["created_is_scheduled"] is True


DEFAULTED = [
    "state",
    "attempt",
    "max_attempts",
    "priority",
    "queue",
    "metadata",
    "tags",
    "finalized_at",
    "unique_key",
    "unique_states",
]
