"""Cancelling a job from outside, while it runs."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class ExportAccount(rivertrio.JobArgs, kind="export_account"):
    account_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Start a long export, cancel it; return its state when cancelled and at the end."""
    workers = rivertrio.Workers()
    started = trio.Event()

    @workers.register(ExportAccount)
    async def export_account(job: rivertrio.Job[ExportAccount]) -> None:
        started.set()
        await trio.sleep_forever()  # cancellation arrives as trio.Cancelled here

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        schema=schema,
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_CANCELLED) as events,
    ):
        result = await client.insert(ExportAccount(account_id=5))
        await started.wait()
        # --8<-- [start:cancel]
        # Works from any client on the database: the client running the job is
        # told (a notification), cancels its task, and the job ends `cancelled`.
        row = await client.job_cancel(result.job.id)
        print(row.state)  # still `running` until the running client has stopped it
        # --8<-- [end:cancel]
        event = await events.receive()
        assert event.job is not None
        return [row.state, event.job.state]


if __name__ == "__main__":
    print(trio.run(main))
