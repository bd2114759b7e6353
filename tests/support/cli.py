"""Helpers for the command-line tests: run ``rivertrio`` as a shell would, read its errors."""

from __future__ import annotations

import functools

import trio
from click.testing import CliRunner, Result

from rivertrio._cli import cli

#: A Postgres URL nothing listens on.
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


async def invoke(*args: str) -> Result:
    """Run ``rivertrio ARGS...`` in a thread, as a shell would (each under its own trio.run)."""
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
