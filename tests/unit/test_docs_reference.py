"""The API reference lists every public member of `Client` (its page names them one by one)."""

from __future__ import annotations

import re
from pathlib import Path

import rivertrio

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"


def listed_client_members() -> list[str]:
    block = API_PAGE.read_text().split("::: rivertrio.Client\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^ +- (\w+)$", block, re.MULTILINE)


def test_the_reference_lists_every_public_member_of_client() -> None:
    listed = listed_client_members()
    public = {name for name in dir(rivertrio.Client) if not name.startswith("_")}
    public |= {name for name in rivertrio.Client.__annotations__ if not name.startswith("_")}
    assert len(listed) == len(set(listed)), "a member is listed twice"
    assert set(listed) == public, (
        f"missing from docs/reference/api.md: {sorted(public - set(listed))}; "
        f"listed but not members: {sorted(set(listed) - public)}"
    )
