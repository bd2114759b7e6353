"""Quickstart: define a job and its worker, insert one, wait until it is completed."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


# --8<-- [start:define]
@dataclass
class SendEmail(rivertrio.JobArgs, kind="send_email"):
    to: str
    subject: str


workers = rivertrio.Workers()


@workers.register(SendEmail)
async def send_email(job: rivertrio.Job[SendEmail]) -> None:
    print(f"sending {job.args.subject!r} to {job.args.to}")


# --8<-- [end:define]


async def main(database_url: str | None = None, schema: str | None = None) -> rivertrio.JobRow:
    # --8<-- [start:run]
    await rivertrio.migrate(database_url, schema=schema)  # a no-op once migrated
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        schema=schema,
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        result = await client.insert(SendEmail(to="ada@example.com", subject="Welcome"))
        async for event in events:
            assert event.job is not None
            if event.job.id == result.job.id:
                print(f"job {event.job.id} is {event.job.state}")
                return event.job
    # --8<-- [end:run]
    raise RuntimeError("the client stopped before the job completed")


if __name__ == "__main__":
    trio.run(main)
