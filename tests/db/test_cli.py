"""The ``rivertrio`` command line against a database: unknown rows, the jobs and queues commands.

Help, and bad input caught before connecting, are tested in tests/unit/test_cli_usage.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

import rivertrio
from support.cli import assert_one_line_error, invoke


@dataclass
class Thing(rivertrio.JobArgs, kind="cli_thing"):
    n: int = 0


# --- bad input: one line, non-zero exit, no traceback -------------------------


async def test_a_missing_database_is_one_line(database_url: str) -> None:
    url = urlunsplit(urlsplit(database_url)._replace(path="/rivertrio_no_such_db"))
    result = await invoke("jobs", "list", "--database-url", url)
    assert_one_line_error(result, "rivertrio_no_such_db", "does not exist")


@pytest.mark.parametrize("verb", ["get", "cancel", "retry", "delete"])
async def test_an_unknown_job_id_is_one_line(
    verb: str, database_url: str, migrated_schema: str
) -> None:
    result = await invoke(
        "jobs", verb, "987654321", "--database-url", database_url, "--schema", migrated_schema
    )
    assert_one_line_error(result, "job 987654321 not found")


async def test_an_unknown_queue_is_one_line(database_url: str, migrated_schema: str) -> None:
    result = await invoke(
        "queues", "pause", "nope", "--database-url", database_url, "--schema", migrated_schema
    )
    assert_one_line_error(result, "queue 'nope' not found")


# --- jobs --------------------------------------------------------------------


def _opts(database_url: str, schema: str) -> list[str]:
    return ["--database-url", database_url, "--schema", schema]


async def test_jobs_list_get_cancel_retry_delete(database_url: str, migrated_schema: str) -> None:
    opts = _opts(database_url, migrated_schema)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        first = (await client.insert(Thing(n=1))).job
        second = (await client.insert(Thing(n=2), rivertrio.InsertOpts(queue="other"))).job

    listed = await invoke("jobs", "list", "--json", *opts)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == [second.id, first.id]  # newest first
    assert rows[1]["args"] == {"n": 1}
    assert rows[1]["state"] == "available"

    by_queue = await invoke("jobs", "list", "--json", "--queue", "other", *opts)
    assert [json.loads(line)["id"] for line in by_queue.stdout.splitlines()] == [second.id]
    page = await invoke("jobs", "list", "--json", "--after", str(second.id), *opts)
    assert [json.loads(line)["id"] for line in page.stdout.splitlines()] == [first.id]

    table = await invoke("jobs", "list", *opts)
    assert table.exit_code == 0
    assert "cli_thing" in table.stdout
    assert str(first.id) in table.stdout

    got = await invoke("jobs", "get", str(first.id), "--json", *opts)
    assert json.loads(got.stdout)["id"] == first.id

    cancelled = await invoke("jobs", "cancel", str(first.id), *opts)
    assert cancelled.stdout.strip() == f"job {first.id}: cancelled"
    by_state = await invoke("jobs", "list", "--json", "--state", "cancelled", *opts)
    assert [json.loads(line)["id"] for line in by_state.stdout.splitlines()] == [first.id]

    retried = await invoke("jobs", "retry", str(first.id), *opts)
    assert retried.stdout.strip() == f"job {first.id}: available"

    deleted = await invoke("jobs", "delete", str(first.id), *opts)
    assert deleted.stdout.strip() == f"job {first.id}: deleted (was available)"
    gone = await invoke("jobs", "get", str(first.id), *opts)
    assert_one_line_error(gone, f"job {first.id} not found")

    shown = await invoke("jobs", "get", str(second.id), *opts)
    assert shown.exit_code == 0
    assert "other" in shown.stdout


async def test_jobs_delete_refuses_a_running_job_and_cancel_stops_it(
    database_url: str, migrated_schema: str
) -> None:
    opts = _opts(database_url, migrated_schema)
    workers = rivertrio.Workers()
    started = trio.Event()

    @workers.register(Thing)
    async def hold(job: rivertrio.Job[Thing]) -> None:
        started.set()
        await trio.sleep_forever()

    config = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=1)},
        workers=workers,
    )
    with trio.fail_after(60):
        async with (
            rivertrio.open_client(config, database_url=database_url) as client,
            client.subscribe(rivertrio.EventKind.JOB_CANCELLED) as events,
        ):
            job = (await client.insert(Thing())).job
            await started.wait()

            refused = await invoke("jobs", "delete", str(job.id), *opts)
            assert_one_line_error(refused, f"job {job.id} is running")

            # Another client (the CLI's) cancels it: this client hears of it and stops it.
            asked = await invoke("jobs", "cancel", str(job.id), *opts)
            assert asked.exit_code == 0
            assert "cancel requested" in asked.stdout
            event = await events.receive()
            assert event.job is not None
            assert event.job.id == job.id
            assert event.job.state == "cancelled"


# --- queues ------------------------------------------------------------------


async def test_queues_list_pause_resume(database_url: str, migrated_schema: str) -> None:
    opts = _opts(database_url, migrated_schema)
    workers = rivertrio.Workers()

    @workers.register(Thing)
    async def noop(job: rivertrio.Job[Thing]) -> None:
        pass

    config = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=1)},
        workers=workers,
    )
    with trio.fail_after(60):
        async with (
            rivertrio.open_client(config, database_url=database_url) as client,
            client.subscribe(
                rivertrio.EventKind.QUEUE_PAUSED, rivertrio.EventKind.QUEUE_RESUMED
            ) as events,
        ):
            tomorrow = datetime.now(UTC) + timedelta(days=1)
            await client.insert(Thing(), rivertrio.InsertOpts(scheduled_at=tomorrow))
            listed = await invoke("queues", "list", "--json", *opts)
            [queue] = [json.loads(line) for line in listed.stdout.splitlines()]
            assert (queue["name"], queue["paused"], queue["paused_at"]) == ("default", False, None)
            assert queue["jobs"] == {"scheduled": 1}

            paused = await invoke("queues", "pause", "default", *opts)
            assert paused.stdout.strip() == "queue default: paused"
            assert (await events.receive()).kind == rivertrio.EventKind.QUEUE_PAUSED
            assert (await client.queue_get("default")).paused
            table = await invoke("queues", "list", *opts)
            assert "paused" in table.stdout

            resumed = await invoke("queues", "resume", "*", *opts)
            assert resumed.stdout.strip() == "every queue: resumed"
            assert (await events.receive()).kind == rivertrio.EventKind.QUEUE_RESUMED
            assert not (await client.queue_get("default")).paused
