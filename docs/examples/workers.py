"""Workers: a class-based worker with its own timeout, and a job inserting a follow-up job."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


# --8<-- [start:class]
@dataclass
class ResizeImage(rivertrio.JobArgs, kind="resize_image"):
    image_id: int
    width: int


@dataclass
class NotifyUploader(rivertrio.JobArgs, kind="notify_uploader"):
    image_id: int


class ResizeImageWorker(rivertrio.Worker[ResizeImage]):
    """Resizes an image, then queues a notification for its uploader."""

    async def work(self, job: rivertrio.Job[ResizeImage]) -> None:
        await trio.sleep(0.01)  # the real work: fetch, resize, store
        # The client running this job, to insert follow-up jobs.
        client = rivertrio.current_client()
        await client.insert(NotifyUploader(image_id=job.args.image_id))

    def timeout(self, job: rivertrio.Job[ResizeImage]) -> float | None:
        # Big images get longer than the config's job_timeout.
        return 300.0 if job.args.width > 2000 else 30.0


# --8<-- [end:class]

# --8<-- [start:registry]
workers = rivertrio.Workers()
workers.add(ResizeImageWorker())  # the args class is inferred from Worker[ResizeImage]


@workers.register(NotifyUploader)
async def notify_uploader(job: rivertrio.Job[NotifyUploader]) -> None:
    print(f"image {job.args.image_id} is ready")


# --8<-- [end:registry]


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Resize one image; return the kinds of the jobs completed, in order."""
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        schema=schema,
    )
    completed: list[str] = []
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        await client.insert(ResizeImage(image_id=7, width=640))
        async for event in events:
            assert event.job is not None
            completed.append(event.job.kind)
            if len(completed) == 2:
                break
    return completed


if __name__ == "__main__":
    print(trio.run(main))
