"""A worker process's module: run it with ``rivertrio worker worker_app:config``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import trio

import rivertrio


# --8<-- [start:app]
@dataclass
class SendEmail(rivertrio.JobArgs, kind="send_email"):
    to: str
    subject: str


workers = rivertrio.Workers()


@workers.register(SendEmail)
async def send_email(job: rivertrio.Job[SendEmail]) -> None: ...


def config() -> rivertrio.Config:
    """Read at start by `rivertrio worker worker_app:config` (a Config works too)."""
    return rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=50)},
        workers=workers,
        schema=os.environ.get("APP_JOBS_SCHEMA"),
    )


# --8<-- [end:app]


async def main(database_url: str | None = None, schema: str | None = None) -> str:
    """What `rivertrio worker` does, minus the signals: run the config, work one job."""
    cfg = dataclasses.replace(config(), schema=schema)
    async with (
        rivertrio.open_client(cfg, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        await client.insert(SendEmail(to="ada@example.com", subject="hello"))
        event = await events.receive()
        assert event.job is not None
        return event.job.state


if __name__ == "__main__":
    print(trio.run(main))
