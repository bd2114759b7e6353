"""A Postgres schema of a test's own: created empty, dropped when the test is done."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rivertrio._driver import open_driver, quote_ident

__all__ = ["new_schema"]


@asynccontextmanager
async def new_schema(database_url: str, name: str | None = None) -> AsyncIterator[str]:
    """A new, empty schema named `name` (default ``rt_`` and random hex); dropped with all it
    holds when the block ends."""
    name = name or f"rt_{uuid.uuid4().hex[:16]}"
    async with open_driver(database_url) as admin:
        await admin.execute(f"CREATE SCHEMA {quote_ident(name)}")
    try:
        yield name
    finally:
        async with open_driver(database_url) as admin:
            # Bounded: a connection a failed test left behind must not hang the teardown.
            await admin.execute(
                f"SET lock_timeout = '10s'; DROP SCHEMA {quote_ident(name)} CASCADE"
            )
