"""Job output and progress: a worker reports how far it got and stores its result with the job."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class ResizeAlbum(rivertrio.JobArgs, kind="resize_album"):
    album_id: int
    photos: int


async def resize_photo(album_id: int, n: int) -> None:
    await trio.lowlevel.checkpoint()  # the real work


# --8<-- [start:worker]
async def resize_album(job: rivertrio.Job[ResizeAlbum]) -> None:
    total = job.args.photos
    for done in range(1, total + 1):
        await resize_photo(job.args.album_id, done)
        # Stored at most once a second; the last report always with the outcome.
        await rivertrio.report_progress(100 * done / total, f"{done} of {total} photos")
    # Kept in the job's metadata under "output" (River's key), whatever the outcome.
    rivertrio.record_output({"album": job.args.album_id, "thumbnails": total})


# --8<-- [end:worker]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Resize an album; return the stored output, the last progress, and a metadata update."""
    workers = rivertrio.Workers()
    workers.register(ResizeAlbum)(resize_album)
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=2)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        inserted = await client.insert(ResizeAlbum(album_id=7, photos=12))
        with trio.fail_after(30):
            await events.receive()
        # --8<-- [start:read]
        job = await client.job_get(inserted.job.id)
        print(job.output)  # {'album': 7, 'thumbnails': 12}
        print(job.progress)  # JobProgress(value=100.0, message='12 of 12 photos', at=...)

        # Merge keys into a job's metadata from anywhere (the others stay).
        job = await client.job_update(job.id, metadata={"reviewed_by": "ann"})
        # --8<-- [end:read]
    assert job.progress is not None
    return {
        "output": job.output,
        "progress": (job.progress.value, job.progress.message),
        "reviewed_by": job.metadata["reviewed_by"],
    }


if __name__ == "__main__":
    print(trio.run(main))
