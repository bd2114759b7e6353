"""Unique jobs: a second insert within the period returns the first job."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class RefreshFeed(rivertrio.JobArgs, kind="refresh_feed"):
    feed_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> list[bool]:
    """Insert the same refresh twice and another feed's once; return the duplicate flags."""
    async with rivertrio.open_client(
        rivertrio.Config(schema=schema), database_url=database_url
    ) as client:
        # --8<-- [start:unique]
        # At most one refresh per feed per hour, whatever its state (except
        # cancelled and discarded, the default by_state).
        opts = rivertrio.InsertOpts(unique=rivertrio.UniqueOpts(by_args=True, by_period=3600))
        first = await client.insert(RefreshFeed(feed_id=1), opts)
        second = await client.insert(RefreshFeed(feed_id=1), opts)
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        other = await client.insert(RefreshFeed(feed_id=2), opts)  # other args: a new job
        # --8<-- [end:unique]
    return [r.unique_skipped_as_duplicate for r in (first, second, other)]


if __name__ == "__main__":
    print(trio.run(main))
