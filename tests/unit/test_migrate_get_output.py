"""``rivertrio migrate get`` and `migrate_get`: River's migration SQL, printed with no database."""

from __future__ import annotations

import re

import click.testing
import pytest

from rivertrio import ConfigError, migrate_get
from rivertrio._cli.migrate import migrate as migrate_cli
from rivertrio._driver._migrations import LATEST_VERSION

ALL = tuple(range(1, LATEST_VERSION + 1))
HEADER = re.compile(r"^-- River main migration (\d{3}) \[(up|down)\]: .+$", re.MULTILINE)

# Nothing listens here: a command that tried to connect would fail.
NOWHERE = {"RIVERTRIO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


def get(*args: str) -> click.testing.Result:
    return click.testing.CliRunner().invoke(migrate_cli, ["get", *args], env=NOWHERE)


def headers(text: str) -> list[tuple[int, str]]:
    return [(int(v), d) for v, d in HEADER.findall(text)]


def test_one_version_as_river_prints_it_plus_its_record() -> None:
    res = get("--version", "8", "--up")
    assert res.exit_code == 0, res.output
    assert res.stdout == (
        "-- River main migration 008 [up]: job id autoincrement\n"
        "-- No-op: a sequence already never reuses the ids it generated.\n"
        "SELECT 1;\n"
        "INSERT INTO river_migration (line, version) VALUES ('main', 8);\n"
    )
    res = get("--version", "8", "--down", "--no-record")
    assert res.stdout == (
        "-- River main migration 008 [down]: job id autoincrement\n"
        "-- No-op: a sequence already never reuses the ids it generated.\n"
        "SELECT 1;\n"
    )


def test_versions_come_in_the_order_given_separated_by_a_blank_line() -> None:
    res = get("--version", "3,1", "--up")
    assert res.exit_code == 0, res.output
    assert headers(res.stdout) == [(3, "up"), (1, "up")]
    assert "\n\n-- River main migration 001 [up]" in res.stdout
    assert get("--version", "3", "--version", "1", "--up").stdout == res.stdout
    # Before version 5, river_migration has no `line` column.
    assert "INSERT INTO river_migration (version) VALUES (1);" in res.stdout
    assert (
        "DELETE FROM river_migration WHERE version = 3;" in get("--version", "3", "--down").stdout
    )


def test_all_ascends_up_and_descends_down() -> None:
    up = get("--all", "--up")
    down = get("--all", "--down")
    assert headers(up.stdout) == [(v, "up") for v in ALL]
    assert headers(down.stdout) == [(v, "down") for v in reversed(ALL)]
    # Version 1's down drops river_migration itself: nothing is left to delete from.
    assert not down.stdout.rstrip().endswith("WHERE version = 1;")
    excluded = get("--all", "--up", "--exclude-version", "1", "--no-record")
    assert headers(excluded.stdout) == [(v, "up") for v in ALL[1:]]
    assert "river_migration (line" not in excluded.stdout.split("005 [up]")[0]


RECORD = re.compile(
    r"^(INSERT INTO river_migration \((line, )?version\) VALUES|DELETE FROM river_migration WHERE)"
)


@pytest.mark.parametrize("direction", ["--up", "--down"])
def test_no_record_leaves_out_every_river_migration_row(direction: str) -> None:
    recorded = get("--all", direction).stdout.splitlines()
    bare = get("--all", direction, "--no-record").stdout.splitlines()
    records = [line for line in recorded if RECORD.match(line)]
    # One per version (version 1's down has none: its table is gone).
    assert len(records) == LATEST_VERSION - (direction == "--down")
    assert bare == [line for line in recorded if not RECORD.match(line)]


def test_a_schema_qualifies_every_object_quoted() -> None:
    schema = 'Mixed "Case"'
    plain = get("--all", "--up").stdout
    qualified = get("--all", "--up", "--schema", schema).stdout
    assert qualified.count('"Mixed ""Case""".') > 50
    assert qualified.replace('"Mixed ""Case""".', "") == plain


def test_transactions_wrap_each_version() -> None:
    text = get("--all", "--up", "--transactions").stdout
    assert text.count("BEGIN;\n-- River main migration") == LATEST_VERSION
    assert text.count("COMMIT;\n") == LATEST_VERSION
    assert text.startswith("BEGIN;\n") and text.endswith("COMMIT;\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "8"], "give one of --up and --down"),
        (["--version", "8", "--up", "--down"], "give one of --up and --down"),
        (["--up"], "give --version N (1 to 8) or --all"),
        (["--all", "--version", "2", "--up"], "give --version or --all, not both"),
        (["--version", "9", "--up"], "migration 9 not found (available versions: 1, 2, 3"),
        (["--version", "0", "--up"], "migration 0 not found"),
        (["--all", "--up", "--exclude-version", "12"], "migration 12 not found"),
        (["--all", "--up", "--line", "pro"], "migration line does not exist: 'pro'"),
        (["--all", "--up", "--exclude-version", "1"], "version 1 creates river_migration"),
        (["--all", "--up", "--schema", "s" * 64], "is not a valid Postgres schema name"),
    ],
)
def test_bad_arguments_are_one_error_line(args: list[str], message: str) -> None:
    res = get(*args)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert message in res.stderr


def test_a_bad_version_number_is_a_usage_error() -> None:
    res = get("--version", "3,x", "--up")
    assert res.exit_code == 2
    assert "'x' is not a version number" in res.output


def test_the_python_function_matches_the_command() -> None:
    assert migrate_get(8) == get("--version", "8", "--up").stdout
    assert (
        migrate_get(direction="down", schema="A b")
        == get("--all", "--down", "--schema", "A b").stdout
    )
    assert (
        migrate_get([2, 3], record=False) == get("--version", "2,3", "--up", "--no-record").stdout
    )
    assert migrate_get(8, exclude=[8]) == ""
    with pytest.raises(ConfigError, match="direction must be 'up' or 'down'"):
        migrate_get(8, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="migration True not found"):
        migrate_get([True])
    with pytest.raises(ConfigError, match=r"schema 'a\\x00b' \(a str\) is not a valid"):
        migrate_get(schema="a\x00b")
