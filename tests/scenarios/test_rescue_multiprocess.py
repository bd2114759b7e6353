"""Fast rescue across processes: a worker process is SIGKILLed while its jobs run.

The leader (a client in this process, with production intervals) must put the
dead process's jobs back within 10 s, while its own long job, older than the
grace period, is never rescued early. Both are real clients: each holds its
liveness lock because its id carries the marker.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._liveness import CLIENT_ID_MARKER
from rivertrio._maintenance import JobRescuer, MaintenanceSettings
from rivertrio._maintenance._rescuer import RESCUED_ERROR
from support.common import row
from support.maintenance import make_job

pytestmark = pytest.mark.timeout(90)

CHILD = Path(__file__).resolve().parent.parent / "support" / "rescue_child.py"
JOBS = 3


@dataclass
class Long(rivertrio.JobArgs, kind="long"):
    pass


class Lines:
    """Reads a process's stdout line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError(f"the child exited; it printed {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


async def test_dead_process_jobs_are_rescued_within_seconds(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    suffix = uuid.uuid4().hex[:8]
    dead_id = f"doomed-{suffix}{CLIENT_ID_MARKER}"
    live_id = f"alive-{suffix}{CLIENT_ID_MARKER}"
    settings = MaintenanceSettings()  # production rescue: grace 5 s, a check every second

    # A live client in this process, working one long job on its own queue. It
    # starts first, so it becomes the leader and runs the rescuer.
    release = trio.Event()
    long_started = trio.Event()
    workers = rivertrio.Workers()

    @workers.register(Long)
    async def long(job: rivertrio.Job[Long]) -> None:
        long_started.set()
        await release.wait()

    live_cfg = rivertrio.Config(
        schema=migrated_schema,
        id=live_id,
        queues={"slow": rivertrio.QueueConfig(max_workers=1)},
        workers=workers,
        job_timeout=None,
    )

    with trio.fail_after(60):
        async with rivertrio.open_client(live_cfg, database_url=database_url) as live:
            await live._tree.maintainer.terms.wait_for(1)  # leader
            rescuer = live._tree.maintainer.service(JobRescuer)
            long_job = (await live.insert(Long(), rivertrio.InsertOpts(queue="slow"))).job
            await long_started.wait()

            proc = await trio.lowlevel.open_process(
                [sys.executable, str(CHILD), database_url, migrated_schema, dead_id, str(JOBS)],
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                lines = Lines(proc.stdout)
                assert await lines.next() == "ready"
                doomed = [await make_job(driver, kind="hang", queue="doomed") for _ in range(JOBS)]
                running = {await lines.next() for _ in range(JOBS)}
                assert running == {f"running {job_id}" for job_id in doomed}
                proc.kill()  # SIGKILL: no cleanup of any kind
                killed_at = trio.current_time()
                await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with trio.move_on_after(5, shield=True):
                        await proc.wait()

            while True:
                states = {(await row(driver, job_id)).state for job_id in doomed}
                if rivertrio.JobState.RUNNING not in states:
                    break
                await rescuer.passes.wait_for(rescuer.passes.value + 1)
            took = trio.current_time() - killed_at
            print(f"\nthe dead process's {JOBS} jobs were rescued {took:.2f} s after SIGKILL")

            # By now the live client's job is older than the grace: it stays.
            long_row = await row(driver, long_job.id)
            assert long_row.state == rivertrio.JobState.RUNNING
            assert long_row.attempted_at is not None
            release.set()

    assert took < 10, f"rescued only after {took:.2f} s"
    assert took >= settings.orphan_grace
    for job_id in doomed:
        r = await row(driver, job_id)
        assert r.state in (rivertrio.JobState.RETRYABLE, rivertrio.JobState.AVAILABLE)
        (err,) = r.errors
        assert err.error.startswith(RESCUED_ERROR) and dead_id in err.error
    assert (await row(driver, long_job.id)).state == rivertrio.JobState.COMPLETED
