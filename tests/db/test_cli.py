"""The ``rivertrio`` command line: help, bad input, and the jobs and queues commands.

Commands run in a worker thread (each under its own ``trio.run``, as from a
shell) through click's CliRunner; a few run as real subprocesses.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio
from click.testing import CliRunner, Result

import rivertrio
from rivertrio._cli import cli
from rivertrio._cli._common import describe_error

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


async def invoke(*args: str) -> Result:
    """Run ``rivertrio ARGS...`` in a thread, as a shell would (also used by other CLI tests)."""
    runner = CliRunner()
    with trio.fail_after(120):
        return await trio.to_thread.run_sync(functools.partial(runner.invoke, cli, list(args)))


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> str:
    """The command failed with `code` and exactly one ``error:`` line naming `fragments`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@dataclass
class Thing(rivertrio.JobArgs, kind="cli_thing"):
    n: int = 0


# --- help --------------------------------------------------------------------

COMMANDS = [
    [],
    ["demo"],
    ["worker"],
    ["bench"],
    ["migrate"],
    ["migrate", "up"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "get"],
    ["jobs", "cancel"],
    ["jobs", "retry"],
    ["jobs", "delete"],
    ["queues"],
    ["queues", "list"],
    ["queues", "pause"],
    ["queues", "resume"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "rivertrio")
async def test_every_command_has_help(command: list[str]) -> None:
    result = await invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: rivertrio")
    # A description, not just the usage line and the options.
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 20, result.output
    if command and command[0] in ("demo", "bench", "jobs", "queues", "worker") and len(command) > 1:
        assert "--database-url" in result.output


async def test_root_help_lists_the_commands_but_not_the_internal_one() -> None:
    result = await invoke("--help")
    for name in ("demo", "worker", "bench", "migrate", "jobs", "queues"):
        assert f"  {name} " in result.output
    assert "bench-child" not in result.output


async def test_python_dash_m_runs_the_cli() -> None:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "rivertrio", "--version"], capture_stdout=True
        )
    assert done.stdout.decode().startswith("rivertrio, version ")


# --- bad input: one line, non-zero exit, no traceback -------------------------


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["queues", "list"], ["bench", "--json"], ["demo"], ["worker", "m:c"]],
    ids=lambda c: c[0],
)
async def test_a_bad_url_is_one_line(command: list[str]) -> None:
    result = await invoke(*command, "--database-url", "mysql://root@localhost/app")
    assert_one_line_error(result, "--database-url", "not a Postgres URL", code=2)


@pytest.mark.parametrize(
    "command",
    [
        ["jobs", "list"],
        ["jobs", "get", "1"],
        ["queues", "pause", "default"],
        ["bench", "--json", "--num-jobs", "10"],
        ["demo", "--jobs", "20"],
        ["migrate", "list"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
async def test_an_unreachable_database_is_one_line(command: list[str]) -> None:
    result = await invoke(*command, "--database-url", UNREACHABLE)
    assert_one_line_error(result, "cannot reach Postgres at 127.0.0.1:1")


async def test_a_missing_database_is_one_line(database_url: str) -> None:
    url = urlunsplit(urlsplit(database_url)._replace(path="/rivertrio_no_such_db"))
    result = await invoke("jobs", "list", "--database-url", url)
    assert_one_line_error(result, "rivertrio_no_such_db", "does not exist")


async def test_a_bad_schema_name_is_one_line() -> None:
    result = await invoke("jobs", "list", "--schema", "no spaces; please")
    assert_one_line_error(result, "--schema", "not a valid Postgres schema name", code=2)


async def test_an_unknown_option_is_one_line() -> None:
    result = await invoke("bench", "--no-such-option")
    assert_one_line_error(result, "--no-such-option", "rivertrio bench --help", code=2)


@pytest.mark.parametrize("verb", ["get", "cancel", "retry", "delete"])
async def test_an_unknown_job_id_is_one_line(
    verb: str, database_url: str, migrated_schema: str
) -> None:
    result = await invoke(
        "jobs", verb, "987654321", "--database-url", database_url, "--schema", migrated_schema
    )
    assert_one_line_error(result, "job 987654321 not found")


async def test_a_job_id_that_is_not_a_number_is_one_line() -> None:
    result = await invoke("jobs", "get", "abc")
    assert_one_line_error(result, "'abc' is not a valid integer", code=2)


async def test_an_unknown_queue_is_one_line(database_url: str, migrated_schema: str) -> None:
    result = await invoke(
        "queues", "pause", "nope", "--database-url", database_url, "--schema", migrated_schema
    )
    assert_one_line_error(result, "queue 'nope' not found")


def _module(tmp_path: Path, source: str) -> str:
    name = f"rt_cli_app_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(source)
    return name


APP = """
import rivertrio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

@dataclass
class A(rivertrio.JobArgs, kind="a"):
    pass

workers = rivertrio.Workers()

@workers.register(A)
async def a(job):
    pass

config = rivertrio.Config(queues={"default": rivertrio.QueueConfig(max_workers=1)}, workers=workers)
not_a_config = 42
def returns_a_string():
    return "config"
insert_only = rivertrio.Config()
"""


@pytest.mark.parametrize(
    ("target", "fragments", "code"),
    [
        ("no_colon_here", ["is not MODULE:ATTR"], 2),
        ("rt_no_such_module_xyz:config", ["no module named 'rt_no_such_module_xyz'"], 2),
        ("{app}:missing", ["has no attribute 'missing'"], 2),
        ("{app}:not_a_config", ["is a int, not a rivertrio.Config"], 2),
        ("{app}:returns_a_string", ["returned a str, not a rivertrio.Config"], 2),
        ("{app}:insert_only", ["has no queues"], 2),
        ("{broken}:config", ["importing module", "raised ZeroDivisionError"], 1),
    ],
    ids=[
        "no-colon",
        "no-module",
        "no-attribute",
        "not-config",
        "bad-return",
        "no-queues",
        "raises",
    ],
)
async def test_a_bad_module_path_is_one_line(
    tmp_path: Path, target: str, fragments: list[str], code: int
) -> None:
    app = _module(tmp_path, APP)
    broken = _module(tmp_path, "x = 1 / 0\n")
    target = target.format(app=app, broken=broken)
    result = await invoke("worker", target, "--app-dir", str(tmp_path))
    assert_one_line_error(result, *fragments, code=code)


def test_describe_error_reports_the_library_message_or_the_type() -> None:
    err = rivertrio.NotFoundError("job 3 not found")
    assert describe_error(err) == "job 3 not found"
    assert describe_error(ExceptionGroup("x", [ExceptionGroup("y", [err])])) == "job 3 not found"
    two = ExceptionGroup("x", [err, rivertrio.DatabaseError("boom")])
    assert describe_error(two) == "job 3 not found (and 1 more error)"
    assert describe_error(KeyError("k")) == "unexpected KeyError: 'k'"


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


def test_the_console_script_is_declared() -> None:
    # pyproject.toml names rivertrio._cli:main; it must exist and be callable.
    from rivertrio._cli import main

    assert callable(main)
    done = subprocess.run(
        [sys.executable, "-c", "from rivertrio._cli import main; main()", "--help"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    assert b"Usage: rivertrio" in done.stdout
