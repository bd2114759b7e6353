"""Shared fixtures: every test gets its own Postgres schema.

The server is the one named by RIVERTRIO_DATABASE_URL, else the embedded one.
Tests under tests/unit may not use it. support.programs adds the
``requires_program`` mark, and pytester is there to test such plugins.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import rivertrio
from rivertrio._driver import Driver, open_driver
from rivertrio.embedded import DATABASE_URL_ENV, embedded_url
from support.schemas import new_schema

pytest_plugins = ["pytester", "support.programs"]

UNIT = Path(__file__).parent / "unit"

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=5000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
# `pytest --hypothesis-profile=long` (or HYPOTHESIS_PROFILE=long) for a long
# local run; the plugin loads a profile given on the command line before this
# conftest is imported, so only replace Hypothesis's own default.
if settings.get_current_profile_name() == "default":
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def database_url() -> str:
    """The server under test: RIVERTRIO_DATABASE_URL, else the embedded Postgres."""
    return os.environ.get(DATABASE_URL_ENV) or embedded_url()


@pytest.fixture
async def empty_schema(database_url: str) -> AsyncIterator[str]:
    """A new, empty schema of this test's own; dropped afterwards."""
    async with new_schema(database_url) as name:
        yield name


@pytest.fixture
async def migrated_schema(database_url: str, empty_schema: str) -> str:
    """This test's schema with every migration applied."""
    await rivertrio.migrate(database_url, schema=empty_schema)
    return empty_schema


@pytest.fixture
async def driver(database_url: str, migrated_schema: str) -> AsyncIterator[Driver]:
    """A driver on this test's migrated schema."""
    async with open_driver(database_url, schema=migrated_schema) as d:
        yield d


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The unit shelf runs with no database: a test there that asks for one is misplaced."""
    misplaced = [
        item.nodeid
        for item in items
        if item.path.is_relative_to(UNIT) and "database_url" in getattr(item, "fixturenames", ())
    ]
    if misplaced:
        raise pytest.UsageError(
            "tests under tests/unit use a database (move them to tests/db): " + ", ".join(misplaced)
        )
