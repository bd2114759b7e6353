"""Queues: several queues with their own concurrency, and a queue added at runtime."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Transcode(rivertrio.JobArgs, kind="transcode"):
    video_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Work jobs in two configured queues and one added later; return their queues."""
    workers = rivertrio.Workers()

    @workers.register(Transcode)
    async def transcode(job: rivertrio.Job[Transcode]) -> None:
        pass

    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={
            "default": rivertrio.QueueConfig(max_workers=100),
            # Heavy jobs: at most 4 at once in this process.
            "video": rivertrio.QueueConfig(max_workers=4, fetch_poll_interval=5.0),
        },
        workers=workers,
        schema=schema,
    )
    # --8<-- [end:config]
    queues: list[str] = []
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # --8<-- [start:add]
        await client.queues.add("video-hd", rivertrio.QueueConfig(max_workers=1))
        # ... and later: waits for its running jobs, then stops working it.
        # await client.queues.remove("video-hd")
        # --8<-- [end:add]
        for queue in ("default", "video", "video-hd"):
            await client.insert(Transcode(video_id=1), rivertrio.InsertOpts(queue=queue))
        async for event in events:
            assert event.job is not None
            queues.append(event.job.queue)
            if len(queues) == 3:
                break
        await client.queues.remove("video-hd")
    return sorted(queues)


if __name__ == "__main__":
    print(trio.run(main))
