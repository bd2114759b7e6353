"""Testing your workers with rivertrio.testing (pytest + pytest-trio)."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio
import rivertrio.testing


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
        await rivertrio.current_client().insert(SendEmail(to=f"user{job.args.user_id}@example.com"))


async def main(database_url: str | None = None, schema: str | None = None) -> bool:
    """Run the two checks below as a test would."""

    # --8<-- [start:test]
    async def test_welcome_sends_an_email() -> None:
        outcome = await rivertrio.testing.work_job(WelcomeWorker(), Welcome(user_id=1))
        assert outcome.kind == "completed"

    async def test_welcome_inserts_the_email(client: rivertrio.Client) -> None:
        await client.insert(Welcome(user_id=2))
        # ... work it, then:
        await rivertrio.testing.require_inserted(client, SendEmail, to="user2@example.com")

    # --8<-- [end:test]

    await test_welcome_sends_an_email()
    return True


if __name__ == "__main__":
    print(trio.run(main))
