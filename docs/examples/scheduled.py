"""Scheduled jobs: a job that becomes due later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

import rivertrio


@dataclass
class SendReminder(rivertrio.JobArgs, kind="send_reminder"):
    user_id: int


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Schedule a reminder one second ahead; return its state at insert and at the end."""
    workers = rivertrio.Workers()

    @workers.register(SendReminder)
    async def send_reminder(job: rivertrio.Job[SendReminder]) -> None:
        pass

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        schema=schema,
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # --8<-- [start:schedule]
        in_a_second = datetime.now(UTC) + timedelta(seconds=1)
        result = await client.insert(
            SendReminder(user_id=3), rivertrio.InsertOpts(scheduled_at=in_a_second)
        )
        print(result.job.state)  # scheduled: the leader's scheduler makes it available when due
        # --8<-- [end:schedule]
        event = await events.receive()
        assert event.job is not None
        return [result.job.state, event.job.state]


if __name__ == "__main__":
    print(trio.run(main))
