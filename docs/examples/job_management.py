"""Managing jobs: get, list with filters and pages, retry, delete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Reindex(rivertrio.JobArgs, kind="reindex"):
    table: str


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Insert, list, retry and delete jobs with an insert-only client."""
    async with rivertrio.open_client(
        rivertrio.Config(schema=schema), database_url=database_url
    ) as client:
        await client.insert_many([Reindex(table=f"t{n}") for n in range(25)])
        # --8<-- [start:manage]
        job = (await client.insert(Reindex(table="users"))).job
        same = await client.job_get(job.id)  # NotFoundError if there is none

        # Filter, and walk the pages with a keyset cursor.
        params = rivertrio.JobListParams(kinds=["reindex"], states=["available"], limit=10)
        seen = 0
        page = await client.job_list(params)
        while page.jobs:
            seen += len(page.jobs)
            params = dataclasses.replace(params, after=page.last_cursor)
            page = await client.job_list(params)

        retried = await client.job_retry(job.id)  # available now (no-op if running)
        deleted = await client.job_delete(job.id)  # JobRunningError if it runs
        # --8<-- [end:manage]
    return {"same": same.id == job.id, "seen": seen, "retried": retried.state, "gone": deleted.id}


if __name__ == "__main__":
    print(trio.run(main))
