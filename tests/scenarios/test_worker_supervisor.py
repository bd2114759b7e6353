"""``rivertrio worker MODULE:ATTR --processes N``: a supervisor and its worker processes.

The supervisor passes the first and second SIGINT/SIGTERM on to every worker
process (soft stop, then hard stop), restarts one that dies unexpectedly, and
exits with status 0 only when every one stopped cleanly. The processes are real
(``sys.executable -m rivertrio worker``); every step is read from their output
or from the database's notifications, never guessed with sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from support.cli import WorkerProcess
from support.load import (
    TESTS_DIR,
    Sleepy,
    completion_counter,
    create_runs_table,
    worker_env,
)

pytestmark = pytest.mark.timeout(150)

# Each job prints when it starts, then waits until the test writes a word into
# a FIFO named after it: the test decides when each job ends.
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


def _released(path: str) -> str:
    with open(path) as fifo:  # blocks until the test opens it to write
        return fifo.read().strip()


@workers.register(Hold)
async def hold(job: rivertrio.Job[Hold]) -> None:
    path = os.path.join(os.environ["HOLD_DIR"], str(job.id))
    os.mkfifo(path)
    print(f"JOB STARTED {job.id} pid {os.getpid()}", flush=True)
    word = await trio.to_thread.run_sync(_released, path, abandon_on_cancel=True)
    print(f"JOB RELEASED {job.id} {word}", flush=True)


def config() -> rivertrio.Config:
    return rivertrio.Config(
        schema=os.environ["TEST_SCHEMA"],
        queues={"default": rivertrio.QueueConfig(max_workers=1)},
        workers=workers,
    )
"""


@dataclass
class Hold(rivertrio.JobArgs, kind="hold"):
    pass


STARTED = re.compile(r"worker process (\d+) of (\d+) started \(pid (\d+)\)")


@asynccontextmanager
async def supervisor(
    args: list[str], env: dict[str, str], cwd: Path
) -> AsyncIterator[WorkerProcess]:
    """``rivertrio worker ARGS`` with stdout and stderr merged; killed with its group if left."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rivertrio", "worker", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    try:
        yield WorkerProcess(process)
    finally:
        if process.returncode is None:
            process.kill()  # its children then stop by themselves: their lifeline is cut
            with trio.move_on_after(10, shield=True):
                await process.wait()


async def started_pids(sup: WorkerProcess, count: int) -> dict[int, int]:
    """Wait until `count` worker processes are up; their pids by slot number."""
    pids: dict[int, int] = {}
    while len(pids) < count:
        match = STARTED.search(await sup.wait_for("started (pid"))
        assert match is not None
        pids[int(match[1])] = int(match[3])
    for _ in range(count):
        await sup.wait_for("rivertrio worker started", within=60)
    return pids


def release(hold_dir: Path, job_id: int, word: str) -> None:
    with open(hold_dir / str(job_id), "w") as fifo:
        fifo.write(word + "\n")


async def insert_holds(database_url: str, schema: str, count: int) -> list[int]:
    async with rivertrio.open_client(
        rivertrio.Config(schema=schema), database_url=database_url
    ) as client:
        results = await client.insert_many([Hold() for _ in range(count)])
    return [r.job.id for r in results]


def hold_app(tmp_path: Path, database_url: str, schema: str) -> dict[str, str]:
    (tmp_path / "hold_app.py").write_text(APP)
    (tmp_path / "holds").mkdir()
    return {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "RIVERTRIO_DATABASE_URL": database_url,
        "TEST_SCHEMA": schema,
        "HOLD_DIR": str(tmp_path / "holds"),
    }


async def job_states(driver: Driver, ids: list[int]) -> list[str]:
    recs = await driver.fetch(
        "SELECT state::text FROM /*schema*/river_job WHERE id = any($1::bigint[]) ORDER BY id",
        ids,
    )
    return [r["state"] for r in recs]


async def test_the_first_signal_is_passed_on_as_a_soft_stop(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    env = hold_app(tmp_path, database_url, migrated_schema)
    async with supervisor(["hold_app:config", "--processes", "2"], env, tmp_path) as sup:
        pids = await started_pids(sup, 2)
        assert any("rivertrio supervisor started: 2 worker processes" in x for x in sup.lines)
        ids = await insert_holds(database_url, migrated_schema, 2)
        # One job in each process (each works one at a time).
        running = {await sup.wait_for("JOB STARTED") for _ in ids}
        assert {line.rsplit(" ", 1)[1] for line in running} == {str(p) for p in pids.values()}

        sup.process.send_signal(signal.SIGTERM)
        await sup.wait_for("SIGTERM: soft stop: passed on to every worker process")
        for _ in ids:
            await sup.wait_for("SIGTERM: soft stop: fetching no new jobs")
        # Soft: the running jobs go on until they are done.
        assert await job_states(driver, ids) == ["running", "running"]
        for job_id in ids:
            await trio.to_thread.run_sync(release, tmp_path / "holds", job_id, "done")
        assert await sup.exit_status() == 0

    output = "\n".join(sup.lines)
    assert "Traceback" not in output
    assert output.count("rivertrio worker stopped (soft stop)") == 2
    assert "every worker process stopped cleanly" in output
    assert await job_states(driver, ids) == ["completed", "completed"]


async def test_the_second_signal_is_passed_on_as_a_hard_stop(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    env = hold_app(tmp_path, database_url, migrated_schema)
    async with supervisor(["hold_app:config", "--processes", "2"], env, tmp_path) as sup:
        await started_pids(sup, 2)
        ids = await insert_holds(database_url, migrated_schema, 2)
        for _ in ids:
            await sup.wait_for("JOB STARTED")

        sup.process.send_signal(signal.SIGINT)
        for _ in ids:
            await sup.wait_for("SIGINT: soft stop: fetching no new jobs")
        sup.process.send_signal(signal.SIGINT)
        await sup.wait_for("SIGINT: hard stop: passed on to every worker process")
        for _ in ids:
            await sup.wait_for("SIGINT: hard stop: interrupting running jobs")
        assert await sup.exit_status() == 0

    output = "\n".join(sup.lines)
    assert "Traceback" not in output
    assert "JOB RELEASED" not in output
    assert output.count("rivertrio worker stopped (hard stop)") == 2
    # Interrupted: back to available, the attempt given back.
    assert await job_states(driver, ids) == ["available", "available"]


async def test_a_sigkilled_worker_process_is_restarted_and_no_job_is_lost(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    jobs = 3000
    await create_runs_table(driver)
    env = worker_env(
        database_url=database_url,
        schema=migrated_schema,
        mode="killed",
        # The marker (.rt): a liveness lock, so the leader rescues a dead one's jobs fast.
        client_id=f"sup-{{pid}}-{uuid.uuid4().hex[:8]}.rt",
        queues=1,
        max_workers=20,
    )
    args = ["support.load:config", "--processes", "2"]
    async with (
        completion_counter(driver) as counter,
        supervisor(args, env, TESTS_DIR) as sup,
    ):
        pids = await started_pids(sup, 2)
        async with rivertrio.open_client(
            rivertrio.Config(schema=migrated_schema), database_url=database_url
        ) as inserter:
            await inserter.insert_many_fast([Sleepy(ms=10 + (i * 7) % 41) for i in range(jobs)])
        with trio.fail_after(60):
            await counter.wait_for(jobs // 4)

        os.kill(pids[1], signal.SIGKILL)
        await sup.wait_for(f"worker process 1 (pid {pids[1]}) ended unexpectedly")
        replaced = await started_pids(sup, 1)
        assert set(replaced) == {1} and replaced[1] != pids[1]

        with trio.fail_after(90):
            await counter.wait_for(jobs)
        sup.process.send_signal(signal.SIGTERM)
        assert await sup.exit_status() == 0

    output = "\n".join(sup.lines)
    assert "(killed by SIGKILL): restarting it in 0.5 s" in output
    assert "every worker process stopped cleanly" in output
    states = await driver.fetch(
        "SELECT state::text, count(*) FROM /*schema*/river_job GROUP BY state"
    )
    assert {r["state"]: r["count"] for r in states} == {"completed": jobs}
    ran = await driver.fetchrow(
        "SELECT count(DISTINCT job_id) AS jobs, count(DISTINCT pid) AS pids FROM /*schema*/runs"
    )
    assert ran is not None
    assert ran["jobs"] == jobs, "every job ran"
    twice = await driver.fetch(
        "SELECT job_id FROM /*schema*/runs GROUP BY job_id HAVING count(*) > 1"
    )
    ran_in_killed = await driver.fetch(
        "SELECT DISTINCT job_id FROM /*schema*/runs WHERE pid = $1", pids[1]
    )
    # Only jobs the killed process had worked may have run twice (their completion
    # was not yet persisted): at least once, never more.
    assert {r["job_id"] for r in twice} <= {r["job_id"] for r in ran_in_killed}
    print(
        f"\nsupervisor: {jobs} jobs, {ran['pids']} processes worked them (the killed one, "
        f"its replacement {replaced[1]} and the other), {len(twice)} ran twice"
    )


async def test_worker_processes_stop_by_themselves_when_the_supervisor_is_killed(
    tmp_path: Path, database_url: str, migrated_schema: str
) -> None:
    env = hold_app(tmp_path, database_url, migrated_schema)
    async with supervisor(["hold_app:config", "--processes", "2"], env, tmp_path) as sup:
        pids = await started_pids(sup, 2)
        sup.process.kill()  # SIGKILL: it passes nothing on
        for _ in pids:
            await sup.wait_for("supervisor gone: soft stop")
        for _ in pids:
            await sup.wait_for("rivertrio worker stopped (soft stop)")
        # The children shared the supervisor's output: it ends when both have exited.
        assert await sup.exit_status() == -signal.SIGKILL
    with trio.fail_after(10):
        for pid in pids.values():
            await exited(pid)


async def exited(pid: int) -> None:
    """Return once a process (not necessarily a child of ours) has exited (Linux: a pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
