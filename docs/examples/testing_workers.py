"""Testing your workers with rivertrio.testing (pytest + pytest-trio)."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio
from rivertrio.testing import (
    RequireInsertedOpts,
    require_inserted,
    require_not_inserted,
    work_job,
)


@dataclass
class Welcome(rivertrio.JobArgs, kind="welcome"):
    user_id: int


@dataclass
class SendEmail(rivertrio.JobArgs, kind="send_email"):
    to: str


class WelcomeWorker(rivertrio.Worker[Welcome]):
    async def work(self, job: rivertrio.Job[Welcome]) -> None:
        if job.args.user_id < 0:
            raise rivertrio.JobCancel("no such user")
        await rivertrio.current_client().insert(
            SendEmail(to=f"user{job.args.user_id}@example.com"),
            rivertrio.InsertOpts(queue="email"),
        )


# --8<-- [start:unit]
async def test_unknown_user_is_cancelled() -> None:
    # No database needed: the worker runs on an in-memory job.
    result = await work_job(WelcomeWorker(), Welcome(user_id=-1))
    assert result.kind == "cancelled"
    assert result.error == "JobCancel: no such user"


# --8<-- [end:unit]


# --8<-- [start:client]
async def test_welcome_sends_an_email(client: rivertrio.Client) -> None:
    # With client=..., rivertrio.current_client() in the worker is this client.
    result = await work_job(WelcomeWorker(), Welcome(user_id=1), client=client)
    assert result.kind == "completed", result
    job = await require_inserted(
        client, SendEmail, to="user1@example.com", opts=RequireInsertedOpts(queue="email")
    )
    assert job.state == "available"


async def test_sign_up_enqueues_a_welcome(client: rivertrio.Client) -> None:
    async with client.transaction() as tx:
        # Your code under test: writes the user and enqueues its welcome job in tx.
        await client.insert_tx(tx, Welcome(user_id=7))
        # Visible inside the transaction before it commits, and only there:
        await require_inserted(tx, Welcome, user_id=7)
        await require_not_inserted(client, Welcome)


# --8<-- [end:client]


async def main(database_url: str | None = None, schema: str | None = None) -> list[str]:
    """Run the tests above as pytest would; return the names of those that passed."""
    passed = []
    await test_unknown_user_is_cancelled()
    passed.append(test_unknown_user_is_cancelled.__name__)
    # An insert-only client (no queues) on the test's own schema.
    config = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        for test in (test_welcome_sends_an_email, test_sign_up_enqueues_a_welcome):
            await test(client)
            passed.append(test.__name__)
    return passed


if __name__ == "__main__":
    print(trio.run(main))
