"""Several clients sharing one queue: each job is worked once, by one of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Index(rivertrio.JobArgs, kind="index_document"):
    doc_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> int:
    """Two clients (as two processes would) work 200 jobs; return how many were worked."""
    workers = rivertrio.Workers()
    worked: Counter[int] = Counter()
    all_worked = trio.Event()

    @workers.register(Index)
    async def index(job: rivertrio.Job[Index]) -> None:
        worked[job.args.doc_id] += 1
        if len(worked) == 200:
            all_worked.set()

    def config(name: str) -> rivertrio.Config:
        return rivertrio.Config(
            queues={"default": rivertrio.QueueConfig(max_workers=20)},
            workers=workers,
            schema=schema,
            id=name,  # written to attempted_by; default: host name + start time
        )

    async with (
        rivertrio.open_client(config("worker-a"), database_url=database_url) as a,
        rivertrio.open_client(config("worker-b"), database_url=database_url),
    ):
        await a.insert_many([Index(doc_id=n) for n in range(200)])
        await all_worked.wait()
    # Leaving the block stopped both clients softly: every outcome is persisted.
    assert all(count == 1 for count in worked.values()), "a job was worked twice"
    return len(worked)


if __name__ == "__main__":
    print(trio.run(main))
