"""Unique by selected args fields: only the marked fields make two jobs the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import trio

import rivertrio


# --8<-- [start:fields]
@dataclass
class SyncCustomer(rivertrio.JobArgs, kind="sync_customer"):
    # Marked unique: part of the key (River's `river:"unique"` tag).
    customer_id: Annotated[int, rivertrio.Unique]
    region: str = field(default="eu", metadata={"river": "unique"})
    # Not marked: two syncs that differ only here are duplicates.
    trace_id: str = ""

    insert_opts = rivertrio.InsertOpts(unique=rivertrio.UniqueOpts(by_args=True))


# --8<-- [end:fields]


async def main(database_url: str | None = None, schema: str | None = None) -> list[bool]:
    """Insert three syncs; return their duplicate flags."""
    async with rivertrio.open_client(
        rivertrio.Config(schema=schema), database_url=database_url
    ) as client:
        # --8<-- [start:insert]
        first = await client.insert(SyncCustomer(customer_id=7, trace_id="a1"))
        again = await client.insert(SyncCustomer(customer_id=7, trace_id="b2"))
        assert again.unique_skipped_as_duplicate  # only trace_id differs
        other = await client.insert(SyncCustomer(customer_id=7, region="us"))
        # --8<-- [end:insert]
    return [r.unique_skipped_as_duplicate for r in (first, again, other)]


if __name__ == "__main__":
    print(trio.run(main))
