"""The ``rivertrio`` command line without a database: help, and bad input as one error line.

Commands run in a worker thread (each under its own ``trio.run``, as from a
shell) through click's CliRunner; a few run as real subprocesses. A command
that would connect is given a URL nothing listens on.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

import rivertrio
from rivertrio._cli._common import describe_error
from rivertrio._cli.bench import percentile
from support.cli import UNREACHABLE, assert_one_line_error, invoke

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


async def test_a_bad_schema_name_is_one_line() -> None:
    # Any name Postgres can hold is taken (and quoted); a longer one it would cut short.
    result = await invoke("jobs", "list", "--schema", "s" * 64)
    assert_one_line_error(result, "--schema", "not a valid Postgres schema name", code=2)


async def test_an_unknown_option_is_one_line() -> None:
    result = await invoke("bench", "--no-such-option")
    assert_one_line_error(result, "--no-such-option", "rivertrio bench --help", code=2)


async def test_a_job_id_that_is_not_a_number_is_one_line() -> None:
    result = await invoke("jobs", "get", "abc")
    assert_one_line_error(result, "'abc' is not a valid integer", code=2)


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


async def test_the_demo_rejects_too_few_jobs() -> None:
    result = await invoke("demo", "--jobs", "3")
    assert result.exit_code == 2
    assert "--jobs" in result.stderr


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 50) == 3.0
    assert percentile([], 50) != percentile([], 50)  # NaN
