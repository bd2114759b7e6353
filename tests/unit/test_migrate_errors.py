"""Migrations against a server nothing listens on: the error names the address, in one line."""

from __future__ import annotations

import pytest

from rivertrio import DatabaseConnectionError
from rivertrio._migrate import migrate, migrate_list, migrate_validate
from support.cli import UNREACHABLE, invoke


async def test_unreachable_database_names_host_and_port() -> None:
    with pytest.raises(DatabaseConnectionError, match=r"127\.0\.0\.1:1\b"):
        await migrate(UNREACHABLE)
    with pytest.raises(DatabaseConnectionError, match=r"127\.0\.0\.1:1\b"):
        await migrate_list(UNREACHABLE)
    with pytest.raises(DatabaseConnectionError, match=r"127\.0\.0\.1:1\b"):
        await migrate_validate(UNREACHABLE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--database-url", UNREACHABLE], "127.0.0.1:1"),
        (["list", "--database-url", UNREACHABLE], "127.0.0.1:1"),
        (["validate", "--database-url", UNREACHABLE], "127.0.0.1:1"),
        (["down", "--database-url", UNREACHABLE, "--dry-run"], "127.0.0.1:1"),
    ],
)
async def test_cli_unreachable_database_is_one_line(args: list[str], message: str) -> None:
    res = await invoke("migrate", *args)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: cannot reach Postgres at ")
    assert message in res.stderr
    assert "Traceback" not in res.output
