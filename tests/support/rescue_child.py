"""Child process of test_rescue_multiprocess: a worker that dies while holding jobs.

Usage: python rescue_child.py URL SCHEMA CLIENT_ID MAX_WORKERS [lead]

It starts a client (which takes its liveness lock, its id carrying the marker)
on the queue "doomed" whose jobs never finish, prints "ready", then
"running <id>" as each job starts (with `lead`: "leader" once it leads). The
test SIGKILLs or interrupts it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Hang(rivertrio.JobArgs, kind="hang"):
    n: int = 0


async def main(url: str, schema: str, client_id: str, max_workers: int, lead: bool) -> None:
    workers = rivertrio.Workers()

    @workers.register(Hang)
    async def hang(job: rivertrio.Job[Hang]) -> None:
        print(f"running {job.id}", flush=True)
        await trio.sleep_forever()

    cfg = rivertrio.Config(
        schema=schema,
        id=client_id,
        queues={"doomed": rivertrio.QueueConfig(max_workers=max_workers)},
        workers=workers,
        job_timeout=None,
        fetch_poll_interval=0.1,
        fetch_cooldown=0.01,
    )
    async with rivertrio.open_client(cfg, database_url=url) as client:
        print("ready", flush=True)
        if lead:
            await client._tree.maintainer.terms.wait_for(1)
            print("leader", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "lead" in sys.argv[5:])
