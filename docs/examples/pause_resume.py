"""Pausing and resuming a queue, for every client working it."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Sync(rivertrio.JobArgs, kind="sync_crm"):
    contact_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Pause the queue, insert, resume; return the events seen in order."""
    workers = rivertrio.Workers()

    @workers.register(Sync)
    async def sync(job: rivertrio.Job[Sync]) -> None:
        pass

    config = rivertrio.Config(
        queues={"crm": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        schema=schema,
    )
    seen: list[str] = []
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(*rivertrio.EventKind) as events,
    ):
        # --8<-- [start:pause]
        await client.queue_pause("crm")  # every client stops fetching from "crm"
        await client.insert(Sync(contact_id=1), rivertrio.InsertOpts(queue="crm"))
        queue = await client.queue_get("crm")
        print(queue.paused_at)  # set while paused
        await client.queue_resume("crm")  # ... and they fetch again
        # --8<-- [end:pause]
        async for event in events:
            seen.append(event.kind)
            if event.kind == rivertrio.EventKind.JOB_COMPLETED:
                break
    return seen


if __name__ == "__main__":
    print(trio.run(main))
