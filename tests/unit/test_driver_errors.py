"""The driver against a server nothing listens on: the error names the address."""

from __future__ import annotations

import pytest

from rivertrio import DatabaseConnectionError
from rivertrio._driver import open_driver


async def test_unreachable_database_names_host_and_port() -> None:
    with pytest.raises(DatabaseConnectionError, match=r"127\.0\.0\.1:1\b"):
        async with open_driver("postgresql://postgres@127.0.0.1:1/postgres"):
            pass
