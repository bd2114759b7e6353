"""River's own Python insert client (PyPI riverqueue) inserting jobs that rivertrio works."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import riverqueue
import sqlalchemy
import trio
from riverqueue.driver import riversqlalchemy

import rivertrio


# --8<-- [start:riverqueue]
@dataclass
class SendWelcomeArgs:
    """riverqueue's job args: a kind and a to_json()."""

    user_id: int
    kind: str = "send_welcome"

    def to_json(self) -> str:
        return json.dumps({"user_id": self.user_id})


def enqueue(engine: sqlalchemy.Engine, user_id: int) -> int:
    client = riverqueue.Client(riversqlalchemy.Driver(engine))
    # A plain insert: fine. Unique options would fail on this schema (see below).
    return client.insert(SendWelcomeArgs(user_id=user_id)).job.id


# --8<-- [end:riverqueue]


@dataclass
class SendWelcome(rivertrio.JobArgs, kind="send_welcome"):
    user_id: int


def sync_program(database_url: str, schema: str | None) -> int:
    options = f"-c search_path={schema}" if schema else ""
    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": options},
    )
    try:
        return enqueue(engine, 42)
    finally:
        engine.dispose()


async def main(database_url: str | None = None, schema: str | None = None) -> int:
    """Insert with riverqueue in a thread; return the user id the rivertrio worker saw."""
    url = database_url or os.environ["RIVERTRIO_DATABASE_URL"]
    await trio.to_thread.run_sync(sync_program, url, schema)
    workers = rivertrio.Workers()
    seen: list[int] = []

    @workers.register(SendWelcome)
    async def send(job: rivertrio.Job[SendWelcome]) -> None:
        seen.append(job.args.user_id)

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # riverqueue sends no notification: the worker finds the job at its next poll.
        await events.receive()
    return seen[0]


if __name__ == "__main__":
    print(trio.run(main))
