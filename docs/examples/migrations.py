"""Migrations from Python: roll back one version and apply it again."""

from __future__ import annotations

import trio

import rivertrio


async def main(database_url: str | None = None, schema: str | None = None) -> list[int]:
    """Migrate down one version and up again; return the versions each call ran."""
    # --8<-- [start:migrate]
    # Apply every pending version (each in its own transaction); a database
    # that River (Go) migrated is recognised and only missing versions run.
    up = await rivertrio.migrate(database_url, schema=schema)
    print(f"schema {up.schema} is at version {up.to_version}")

    # Preview without changing anything:
    plan = await rivertrio.migrate(database_url, schema=schema, direction="down", dry_run=True)
    print(plan.sql)
    # --8<-- [end:migrate]
    down = await rivertrio.migrate(database_url, schema=schema, direction="down")
    again = await rivertrio.migrate(database_url, schema=schema)
    return [*plan.version_numbers, *down.version_numbers, *again.version_numbers]


if __name__ == "__main__":
    print(trio.run(main))
