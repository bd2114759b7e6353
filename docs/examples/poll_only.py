"""poll_only: no LISTEN/NOTIFY, for PgBouncer in transaction-pooling mode."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Audit(rivertrio.JobArgs, kind="audit"):
    entry: str


async def main(database_url: str | None = None, schema: str | None = None) -> str:
    """Work one job with polling only; return its final state."""
    workers = rivertrio.Workers()

    @workers.register(Audit)
    async def audit(job: rivertrio.Job[Audit]) -> None:
        pass

    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=20)},
        workers=workers,
        poll_only=True,  # no LISTEN connection, no server-side prepared statements
        fetch_poll_interval=0.2,  # new jobs start within about this long
        schema=schema,
    )
    # --8<-- [end:config]
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        await client.insert(Audit(entry="login"))
        event = await events.receive()
        assert event.job is not None
        return event.job.state


if __name__ == "__main__":
    print(trio.run(main))
