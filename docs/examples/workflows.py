"""Workflows: a DAG of jobs, inserted at once; each task reads what its dependencies recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

import rivertrio


@dataclass
class Fetch(rivertrio.JobArgs, kind="album_fetch"):
    album_id: int


@dataclass
class Resize(rivertrio.JobArgs, kind="album_resize"):
    size: int


@dataclass
class Publish(rivertrio.JobArgs, kind="album_publish"):
    pass


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, Any]:
    """Run fetch -> (small, large) -> publish; return what publish read and the final states."""
    published: dict[str, Any] = {}
    workers = rivertrio.Workers()

    @workers.register(Fetch)
    async def fetch(job: rivertrio.Job[Fetch]) -> None:
        rivertrio.record_output({"photos": 12})

    @workers.register(Resize)
    async def resize(job: rivertrio.Job[Resize]) -> None:
        rivertrio.record_output({"size": job.args.size})

    # --8<-- [start:outputs]
    @workers.register(Publish)
    async def publish(job: rivertrio.Job[Publish]) -> None:
        # What each dependency recorded with record_output, by task name.
        outputs = await rivertrio.Workflows(rivertrio.current_client()).outputs(job)
        published.update(outputs)

    # --8<-- [end:outputs]

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # --8<-- [start:build]
        workflow = rivertrio.Workflow("publish album 7")
        fetched = workflow.add("fetch", Fetch(album_id=7))
        small = workflow.add("small", Resize(size=320), deps=[fetched])
        large = workflow.add("large", Resize(size=1920), deps=[fetched])
        workflow.add("publish", Publish(), deps=[small, large])

        workflows = rivertrio.Workflows(client)
        info = await workflows.insert(workflow)  # every task, in one transaction
        # --8<-- [end:build]
        waiting = sorted(name for name, job in info.tasks.items() if job.state == "pending")
        done = 0
        async for _ in events:
            done += 1
            if done == 4:
                break
        # --8<-- [start:manage]
        info = await workflows.get(workflow.id)
        print(info.states)  # Counter({<JobState.COMPLETED: 'completed'>: 4})
        # await workflows.cancel(workflow.id)  # every unfinished task
        # await workflows.retry(workflow.id)   # every discarded or cancelled task
        # --8<-- [end:manage]
    return {
        "waiting_at_first": waiting,
        "publish_read": published,
        "finished": info.finished,
    }


if __name__ == "__main__":
    print(trio.run(main))
