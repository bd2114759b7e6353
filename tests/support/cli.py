"""Helpers for the command-line tests: run ``rivertrio`` as a shell would, read its errors.

`WorkerProcess` reads a real ``rivertrio worker`` process's output line by line.
"""

from __future__ import annotations

import functools

import trio
from click.testing import CliRunner, Result

from rivertrio._cli import cli

#: A Postgres URL nothing listens on.
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


class WorkerProcess:
    """A running ``rivertrio worker`` with its stdout and stderr merged, read by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = process.stdout
        self._buffer = b""
        self.lines: list[str] = []

    async def wait_for(self, text: str, within: float = 30) -> str:
        """The first unread line containing `text`, within `within` seconds; fails if the
        process ends first."""
        with trio.move_on_after(within):
            while True:
                while b"\n" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\n", 1)
                    line = raw.decode()
                    self.lines.append(line)
                    if text in line:
                        return line
                chunk = await self._stdout.receive_some()
                if not chunk:
                    raise AssertionError(
                        f"the worker ended before printing {text!r}:\n" + "\n".join(self.lines)
                    )
                self._buffer += chunk
        # Only the deadline ends the loop: say what the process printed instead.
        raise AssertionError(
            f"no line containing {text!r} within {within:g} s; the output so far:\n"
            + "\n".join([*self.lines, self._buffer.decode(errors="replace")])
        )

    async def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def exit_status(self) -> int:
        with trio.fail_after(30):
            code = await self.process.wait()
            # Whatever it printed last, for the assertions and failure messages.
            while chunk := await self._stdout.receive_some():
                self._buffer += chunk
        self.lines.extend(self._buffer.decode().splitlines())
        self._buffer = b""
        return code


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
