"""Inserting from synchronous code (Django, Flask, SQLAlchemy, psycopg): render_insert."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
import sqlalchemy
import trio

import rivertrio


@dataclass
class SendWelcome(rivertrio.JobArgs, kind="send_welcome"):
    user_id: int


# --8<-- [start:psycopg]
def sign_up(conn: psycopg.Connection, email: str) -> int:
    with conn.transaction():
        row = conn.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,))
        user_id: int = row.fetchone()[0]  # type: ignore[index]
        # The job, and the notification that wakes a worker, commit with the user.
        sql, params = rivertrio.render_insert(SendWelcome(user_id=user_id))
        conn.execute(sql, params)
    return user_id


# --8<-- [end:psycopg]


# --8<-- [start:sqlalchemy]
def sign_up_with_sqlalchemy(engine: sqlalchemy.Engine, email: str) -> int:
    with engine.begin() as conn:
        user_id: int = conn.execute(
            sqlalchemy.text("INSERT INTO users (email) VALUES (:email) RETURNING id"),
            {"email": email},
        ).scalar_one()
        sql, params = rivertrio.render_insert(SendWelcome(user_id=user_id))
        conn.exec_driver_sql(sql, tuple(params))
    return user_id


# --8<-- [end:sqlalchemy]


def sync_program(database_url: str, schema: str | None) -> list[int]:
    """What the synchronous application does: two sign-ups, one per library."""
    options = f"-c search_path={schema}" if schema else ""
    with psycopg.connect(database_url, options=options, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS users (id bigserial, email text)")
        first = sign_up(conn, "ada@example.com")
    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": options},
    )
    try:
        second = sign_up_with_sqlalchemy(engine, "grace@example.com")
    finally:
        engine.dispose()
    return [first, second]


async def main(database_url: str | None = None, schema: str | None = None) -> list[int]:
    """Run the synchronous program in a thread, then work its jobs with rivertrio."""
    url = database_url or os.environ["RIVERTRIO_DATABASE_URL"]
    users = await trio.to_thread.run_sync(sync_program, url, schema)
    workers = rivertrio.Workers()
    welcomed: list[int] = []

    @workers.register(SendWelcome)
    async def send(job: rivertrio.Job[SendWelcome]) -> None:
        welcomed.append(job.args.user_id)

    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        for _ in users:
            await events.receive()
    assert sorted(welcomed) == sorted(users)
    return users


if __name__ == "__main__":
    print(trio.run(main))
