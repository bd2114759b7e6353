"""Every code example of the documentation runs against Postgres and does what the docs say.

Each file under docs/examples/ exposes ``async def main(database_url, schema)``
and returns what it did; the docs include the files (pymdownx.snippets), so
the code a reader sees is the code tested here. That every example is run and
shown is checked without a database, in tests/unit/test_docs_examples_listed.py.
"""

from __future__ import annotations

import pytest
import trio

from support.docs_examples import EXPECTED, RESULTS, load


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example(name: str, database_url: str, migrated_schema: str) -> None:
    module = load(name)
    with trio.fail_after(60):
        result = await module.main(database_url, migrated_schema)
    assert EXPECTED[name](result) == RESULTS[name]
