"""``rivertrio worker MODULE:ATTR`` as a real process: start-up, signals, exit status.

The worker runs ``sys.executable -m rivertrio worker`` on a small module written
into tmp_path. Its job reports on stdout when it starts and waits for a line on
the process's stdin, so the test decides when it ends; readiness and every
step are read from the process's output, never guessed with sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._job import JobRow
from support.cli import WorkerProcess

APP = """
from __future__ import annotations

import os
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Hold(rivertrio.JobArgs, kind="hold"):
    pass


workers = rivertrio.Workers()


@workers.register(Hold)
async def hold(job: rivertrio.Job[Hold]) -> None:
    print(f"JOB STARTED {job.id}", flush=True)
    # os.read, not sys.stdin: jobs read concurrently from threads, and only the raw
    # file descriptor hands each read what one write sent.
    data = await trio.to_thread.run_sync(os.read, 0, 1024, abandon_on_cancel=True)
    print(f"JOB RELEASED {job.id} {data.decode().strip()}", flush=True)


def config() -> rivertrio.Config:
    return rivertrio.Config(
        schema=os.environ["TEST_SCHEMA"],
        queues={"default": rivertrio.QueueConfig(max_workers=2)},
        workers=workers,
    )
"""


@dataclass
class Hold(rivertrio.JobArgs, kind="hold"):
    pass


@asynccontextmanager
async def worker_process(
    tmp_path: Path, database_url: str, schema: str
) -> AsyncIterator[WorkerProcess]:
    (tmp_path / "worker_app.py").write_text(APP)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "RIVERTRIO_DATABASE_URL": database_url,
        "TEST_SCHEMA": schema,
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rivertrio", "worker", "worker_app:config"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        yield WorkerProcess(process)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10, shield=True):
                await process.wait()


async def _insert(database_url: str, schema: str) -> JobRow:
    async with rivertrio.open_client(
        rivertrio.Config(schema=schema), database_url=database_url
    ) as client:
        return (await client.insert(Hold())).job


async def _row(driver: Driver, job_id: int) -> JobRow:
    rec = await driver.fetchrow("SELECT * FROM /*schema*/river_job WHERE id = $1", job_id)
    assert rec is not None
    return JobRow.from_record(rec)


async def test_sigterm_is_a_soft_stop_the_running_job_finishes(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with worker_process(tmp_path, database_url, migrated_schema) as worker:
        started = await worker.wait_for("rivertrio worker started")
        assert "queues default (max_workers 2)" in started
        assert f"schema {migrated_schema}" in started
        job = await _insert(database_url, migrated_schema)
        await worker.wait_for(f"JOB STARTED {job.id}")

        worker.process.send_signal(signal.SIGTERM)
        await worker.wait_for("SIGTERM: soft stop")
        # The soft stop waits for the job: it is still running now.
        assert (await _row(driver, job.id)).state == "running"
        await worker.send_line("finish")
        await worker.wait_for(f"JOB RELEASED {job.id} finish")
        assert await worker.exit_status() == 0

    assert "Traceback" not in "\n".join(worker.lines)
    assert any("rivertrio worker stopped (soft stop)" in line for line in worker.lines)
    row = await _row(driver, job.id)
    assert row.state == "completed"
    assert row.attempt == 1


async def test_a_second_sigint_is_a_hard_stop_the_job_goes_back_to_available(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with worker_process(tmp_path, database_url, migrated_schema) as worker:
        await worker.wait_for("rivertrio worker started")
        job = await _insert(database_url, migrated_schema)
        await worker.wait_for(f"JOB STARTED {job.id}")

        worker.process.send_signal(signal.SIGINT)
        await worker.wait_for("SIGINT: soft stop")
        worker.process.send_signal(signal.SIGINT)
        await worker.wait_for("SIGINT: hard stop")
        assert await worker.exit_status() == 0

    output = "\n".join(worker.lines)
    assert "Traceback" not in output
    assert f"JOB RELEASED {job.id}" not in output
    assert "rivertrio worker stopped (hard stop)" in output
    row = await _row(driver, job.id)
    assert row.state == "available"
    assert row.attempt == 0  # the interrupted attempt is given back
    assert row.errors == []


async def test_the_worker_works_jobs_inserted_by_another_process(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    async with worker_process(tmp_path, database_url, migrated_schema) as worker:
        await worker.wait_for("rivertrio worker started")
        jobs = [await _insert(database_url, migrated_schema) for _ in range(2)]
        for job in jobs:
            await worker.wait_for(f"JOB STARTED {job.id}")
        # One line at a time, each read by one of the two waiting jobs.
        await worker.send_line("one")
        await worker.wait_for("JOB RELEASED")
        await worker.send_line("two")
        await worker.wait_for("JOB RELEASED")
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.exit_status() == 0
    assert [(await _row(driver, j.id)).state for j in jobs] == ["completed", "completed"]


async def test_an_unreachable_database_ends_the_worker_with_one_line(
    tmp_path: Path, migrated_schema: str
) -> None:
    async with worker_process(
        tmp_path, "postgresql://postgres@127.0.0.1:1/postgres", migrated_schema
    ) as worker:
        assert await worker.exit_status() == 1
    assert worker.lines == [
        line for line in worker.lines if line.startswith("error: cannot reach Postgres")
    ]
    assert len(worker.lines) == 1
