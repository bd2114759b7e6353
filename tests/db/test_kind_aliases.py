"""Kind aliases: a renamed kind's worker also works the jobs queued under its old names."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import rivertrio
from rivertrio import ConfigError, EventKind, JobState
from rivertrio._driver import Driver
from support.common import config, events_until, row, running

pytestmark = pytest.mark.timeout(60)


@dataclass
class OldEmail(rivertrio.JobArgs, kind="send_email"):
    """The args as an earlier release declared them."""

    to: str


@dataclass
class Email(rivertrio.JobArgs, kind="email.send", kind_aliases=("send_email", "mail")):
    to: str


async def test_jobs_of_old_kinds_are_worked_by_the_renamed_worker(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # Queued by the earlier release (an insert-only client knows no workers)...
    async with running(rivertrio.Config(schema=migrated_schema), database_url) as old:
        queued = await old.insert(OldEmail(to="a@example.com"))
    # ... and by a client of another language, under the second alias.
    mail_id = await driver.fetchval(
        "INSERT INTO /*schema*/river_job (args, kind, max_attempts, queue)"
        " VALUES ($1, 'mail', 25, 'default') RETURNING id",
        '{"to":"b@example.com"}',
    )
    assert queued.job.kind == "send_email"

    seen: dict[int, tuple[str, str]] = {}
    workers = rivertrio.Workers()

    @workers.register(Email)
    async def send(job: rivertrio.Job[Email]) -> None:
        assert isinstance(job.args, Email)
        seen[job.id] = (job.kind, job.args.to)

    cfg = config(migrated_schema, workers=workers)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        new = await client.insert(Email(to="c@example.com"))
        got = await events_until(events, 3)
    assert {e.kind for e in got} == {EventKind.JOB_COMPLETED}
    assert seen == {
        queued.job.id: ("send_email", "a@example.com"),
        mail_id: ("mail", "b@example.com"),
        new.job.id: ("email.send", "c@example.com"),
    }
    # New jobs get the new kind; the old rows keep theirs.
    assert new.job.kind == "email.send"
    for job_id in seen:
        assert (await row(driver, job_id)).state == JobState.COMPLETED


def test_an_alias_taken_by_another_worker_is_refused() -> None:
    workers = rivertrio.Workers()

    @workers.register(OldEmail)
    async def old(job: rivertrio.Job[OldEmail]) -> None:
        pass

    with pytest.raises(ConfigError, match="'send_email' is already registered"):
        workers.register(Email)(old_email_worker)
    # Nothing of the refused registration stayed behind.
    assert workers.kinds == {"send_email"}


async def old_email_worker(job: rivertrio.Job[Email]) -> None:
    pass


def test_aliases_are_registered_and_validated() -> None:
    workers = rivertrio.Workers()
    workers.register(Email)(old_email_worker)
    assert workers.kinds == {"email.send", "send_email", "mail"}
    assert workers.get("mail") == workers.get("email.send")
    assert Email.kind_aliases == ("send_email", "mail")

    @dataclass
    class Renamed(Email, kind="email.deliver"):
        pass

    # A new kind does not inherit its base's aliases; keeping the kind keeps them.
    assert Renamed.kind_aliases == ()

    @dataclass
    class Same(Email):
        pass

    assert Same.kind_aliases == ("send_email", "mail")

    with pytest.raises(TypeError, match="kind alias job kind 'bad kind' is invalid"):

        class Bad(rivertrio.JobArgs, kind="ok", kind_aliases=("bad kind",)):
            pass

    with pytest.raises(TypeError, match="kind alias 'ok' repeats a kind it already has"):

        class Repeat(rivertrio.JobArgs, kind="ok", kind_aliases=("ok",)):
            pass

    with pytest.raises(TypeError, match="kind_aliases must be a list of job kinds"):

        class One(rivertrio.JobArgs, kind="ok", kind_aliases="old"):
            pass
