"""Events: subscribe to job outcomes as they are persisted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Ping(rivertrio.JobArgs, kind="ping"):
    n: int


# --8<-- [start:subscribe]
async def watch(client: rivertrio.Client, counts: Counter[str]) -> None:
    """Insert ten jobs and print each outcome as it is persisted."""
    async with client.subscribe(
        rivertrio.EventKind.JOB_COMPLETED,
        rivertrio.EventKind.JOB_FAILED,
        buffer=1000,
        overflow="block",  # never drop; "drop" drops (and counts) when the buffer is full
    ) as events:
        await client.insert_many([Ping(n=n) for n in range(10)])
        async for event in events:  # ends when the client stops
            assert event.job is not None and event.stats is not None
            print(event.kind, event.job.id, f"ran {event.stats.run_duration * 1000:.1f} ms")
            counts[event.kind] += 1
            if counts[rivertrio.EventKind.JOB_COMPLETED] == 10:
                return


# --8<-- [end:subscribe]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, int]:
    """Work ten jobs, three of which fail once; count the events by kind."""
    workers = rivertrio.Workers()

    @workers.register(Ping)
    async def ping(job: rivertrio.Job[Ping]) -> None:
        if job.args.n < 3 and job.attempt == 1:
            raise RuntimeError("first attempt fails")

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        retry_policy=lambda job: 0.05,
        fetch_poll_interval=0.1,
        schema=schema,
    )
    counts: Counter[str] = Counter()
    async with rivertrio.open_client(config, database_url=database_url) as client:
        await watch(client, counts)
    return dict(counts)


if __name__ == "__main__":
    print(trio.run(main))
