"""The dashboard end to end: ``rivertrio ui`` in its own process, driven in Debian's chromium.

An operator opens the overview, filters to the failed (discarded) jobs, opens
one, retries it and sees it leave the list; a change made elsewhere shows up
without a reload; a queue paused from the overview says so; the periodic jobs
are listed; a workflow cancelled elsewhere is retried from its page. A job
full of markup is shown as text, and nothing in any page runs but the
dashboard's own script. Playwright drives the system's chromium (``apt-get
install -y chromium``; Playwright downloads no browser).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from rivertrio._driver import Driver
from support.ui import diamond, error, job_state, put_job, put_queue, put_workflows
from support.ui_browser import HOSTILE_KIND

pytestmark = pytest.mark.requires_program("chromium")

TESTS = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def ui_server(database_url: str, schema: str) -> AsyncIterator[str]:
    """``rivertrio ui`` on a free port; its URL. Stopped by SIGTERM, which must end it cleanly."""
    command = [sys.executable, "-m", "rivertrio", "ui", "--database-url", database_url]
    command += ["--schema", schema, "--port", "0", "--refresh", "0.3"]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    assert process.stderr is not None
    output = bytearray()
    try:
        with trio.fail_after(30):
            while (found := re.search(rb"serving (http://\S+)", output)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, f"rivertrio ui exited: {output.decode()}"
                output += chunk
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                assert process.stderr is not None
                while chunk := await process.stderr.receive_some():
                    output.extend(chunk)

            nursery.start_soon(drain)
            yield found.group(1).decode()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                code = await process.wait()
            assert code == 0, output.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_operator_retries_a_failed_job_and_pauses_a_queue(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await put_queue(driver, "default")
    await put_queue(driver, "email")
    failed = [
        await put_job(
            driver,
            state="discarded",
            kind="send_email",
            queue="email",
            args={"to": f"user{n}@example.com"},
            errors=[error(1, f"smtp refused #{n}")],
        )
        for n in range(3)
    ]
    await put_job(driver, state="completed", kind="send_email", queue="email")
    await put_job(driver, state="completed", kind="prune_sessions", metadata={"periodic": True})
    hostile = await put_job(
        driver,
        state="discarded",
        kind=HOSTILE_KIND,
        args={"html": "<script>alert('args')</script>"},
        errors=[error(1, "<img src=x onerror=alert('error')>")],
    )
    (workflow,) = await put_workflows(database_url, migrated_schema, [diamond(id="nightly-1")])

    async with ui_server(database_url, migrated_schema) as url:
        # The browser session runs in a process of its own (see support.ui_browser).
        session = await trio.run_process(
            [
                sys.executable,
                "-m",
                "support.ui_browser",
                url,
                json.dumps(failed),
                str(hostile),
                workflow.id,
            ],
            cwd=TESTS,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert session.returncode == 0, (session.stdout + session.stderr).decode()

    assert [await job_state(driver, i) for i in failed] == ["available", "available", "discarded"]
    assert not await driver.fetchval(
        "SELECT paused_at IS NOT NULL FROM /*schema*/river_queue WHERE name = 'email'"
    )
    tasks = [await job_state(driver, job.id) for job in workflow.tasks.values()]
    assert tasks == ["available"] + ["pending"] * 3
