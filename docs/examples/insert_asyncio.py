"""Inserting from asyncio (FastAPI and the like): rivertrio.aio.AsyncInsertClient."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import asyncpg
import trio

import rivertrio
import rivertrio.aio


@dataclass
class SendWelcome(rivertrio.JobArgs, kind="send_welcome"):
    user_id: int


# --8<-- [start:app]
async def sign_up(pool: asyncpg.Pool, jobs: rivertrio.aio.AsyncInsertClient, email: str) -> int:
    """A request handler's work: the user and the welcome job commit together."""
    async with pool.acquire() as conn, conn.transaction():
        user_id: int = await conn.fetchval(
            "INSERT INTO users (email) VALUES ($1) RETURNING id", email
        )
        await jobs.insert_tx(conn, SendWelcome(user_id=user_id))
    return user_id


# --8<-- [end:app]


async def asyncio_program(database_url: str, schema: str | None) -> int:
    """What the asyncio application does: open its pool, serve a sign-up."""
    # --8<-- [start:setup]
    # River's tables are found through search_path, as the application's own are.
    settings = {"search_path": schema} if schema else {}
    pool = await asyncpg.create_pool(database_url, server_settings=settings)
    jobs = rivertrio.aio.AsyncInsertClient(pool)
    # --8<-- [end:setup]
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS users (id bigserial, email text)")
        user_id = await sign_up(pool, jobs, "ada@example.com")
        # --8<-- [start:plain]
        # Outside a transaction: committed when the call returns.
        await jobs.insert(SendWelcome(user_id=user_id), rivertrio.InsertOpts(priority=2))
        await jobs.insert_many_fast([SendWelcome(user_id=n) for n in range(100, 110)])
        # --8<-- [end:plain]
        return user_id
    finally:
        await pool.close()


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Run the asyncio program in its own thread, then work its jobs with rivertrio."""
    url = database_url or os.environ["RIVERTRIO_DATABASE_URL"]
    await trio.to_thread.run_sync(asyncio.run, asyncio_program(url, schema))
    workers = rivertrio.Workers()

    @workers.register(SendWelcome)
    async def send(job: rivertrio.Job[SendWelcome]) -> None:
        pass

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        done = [await events.receive() for _ in range(12)]
    return sorted({e.kind.value for e in done})


if __name__ == "__main__":
    print(trio.run(main))
