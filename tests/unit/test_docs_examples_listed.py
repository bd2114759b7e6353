"""Every documentation example is run by the database tests (or pending) and shown in a page."""

from __future__ import annotations

import re

from support.docs_examples import DOCS, EXAMPLES, EXPECTED, PENDING


def test_every_example_is_run_or_pending() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.py")}
    assert names == set(EXPECTED) | set(PENDING)
    assert not set(EXPECTED) & set(PENDING)


def test_every_example_is_shown_in_the_docs() -> None:
    included: set[str] = set()
    for page in DOCS.rglob("*.md"):
        included.update(re.findall(r'--8<-- "examples/(\w+)\.py', page.read_text()))
    missing = {p.stem for p in EXAMPLES.glob("*.py")} - included
    assert not missing, f"examples no page includes: {sorted(missing)}"
