"""Support for the multi-process scenarios (killed workers, load).

Two halves:

- The worker module the child processes load: each child runs
  ``python -m rivertrio worker support.load:config`` with this directory on
  ``PYTHONPATH``; `config` reads the scenario from ``LOAD_*`` environment
  variables (see `worker_env`).
- What the test process uses: starting and reading those children, a
  completion counter fed by a trigger's notifications (so the test waits on
  events from the database, not on sleeps), the runs each child recorded, and
  memory figures read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import atexit
import os
import signal
import struct
import subprocess
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

import rivertrio
from rivertrio._driver import Driver, Listener

TESTS_DIR = Path(__file__).resolve().parent.parent

# --- the worker module, as the children load it ---------------------------------


@dataclass
class Sleepy(rivertrio.JobArgs, kind="sleepy"):
    """Killed-workers scenario: sleeps `ms`, then records its run in the ``runs`` table."""

    ms: int = 10


@dataclass
class Quick(rivertrio.JobArgs, kind="quick"):
    """Load scenario: records its run in memory (dumped to a file when the process exits)."""

    n: int = 0


_runs = array("q")


async def _sleepy(job: rivertrio.Job[Sleepy]) -> None:
    await trio.sleep(job.args.ms / 1000)
    # Recorded once the work is done, in a transaction of its own: a job that
    # runs twice (its process died before its completion was persisted) shows
    # up twice in `runs`.
    async with rivertrio.current_client().transaction() as tx:
        await tx.execute(
            "INSERT INTO /*schema*/runs (job_id, pid) VALUES ($1, $2)", job.id, os.getpid()
        )


async def _quick(job: rivertrio.Job[Quick]) -> None:
    _runs.append(job.id)
    await trio.lowlevel.checkpoint()


def _dump_runs(path: str) -> None:
    with open(path, "wb") as f:
        f.write(_runs.tobytes())


def config() -> rivertrio.Config:
    """The child's Config, from ``LOAD_MODE`` (``killed`` or ``load``) and friends."""
    mode = os.environ["LOAD_MODE"]
    workers = rivertrio.Workers()
    if mode == "killed":
        workers.register(Sleepy)(_sleepy)
    elif mode == "load":
        workers.register(Quick)(_quick)
        atexit.register(_dump_runs, os.environ["LOAD_RUNS_FILE"])
    else:
        raise ValueError(f"unknown LOAD_MODE {mode!r}")
    max_workers = int(os.environ["LOAD_MAX_WORKERS"])
    queues = {q: rivertrio.QueueConfig(max_workers=max_workers) for q in queue_names()}
    return rivertrio.Config(
        schema=os.environ["LOAD_SCHEMA"],
        # "{pid}" in it makes the ids of processes that share one environment distinct.
        id=os.environ["LOAD_CLIENT_ID"].replace("{pid}", str(os.getpid())),
        queues=queues,
        workers=workers,
    )


def queue_names(count: int | None = None) -> list[str]:
    """The scenario's queues: ``default`` alone, or ``q0`` ... ``q<count-1>``."""
    n = int(os.environ.get("LOAD_QUEUES", "1")) if count is None else count
    return ["default"] if n == 1 else [f"q{i}" for i in range(n)]


# --- the test process's side ---------------------------------------------------


def worker_env(
    *,
    database_url: str,
    schema: str,
    mode: str,
    client_id: str,
    queues: int,
    max_workers: int,
    runs_file: Path | None = None,
) -> dict[str, str]:
    """The environment of one child (``rivertrio worker support.load:config``)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "RIVERTRIO_DATABASE_URL": database_url,
        "LOAD_SCHEMA": schema,
        "LOAD_MODE": mode,
        "LOAD_CLIENT_ID": client_id,
        "LOAD_QUEUES": str(queues),
        "LOAD_MAX_WORKERS": str(max_workers),
    }
    if runs_file is not None:
        env["LOAD_RUNS_FILE"] = str(runs_file)
    return env


@dataclass
class Child:
    """A ``rivertrio worker`` child; its stderr (the worker's log) is read by a task."""

    client_id: str
    process: trio.Process
    lines: list[str] = field(default_factory=list)
    started: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        try:
            async for chunk in self.process.stderr:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace")
                    self.lines.append(line)
                    if "rivertrio worker started" in line:
                        self.started.set()
        finally:
            if buffer:
                self.lines.append(buffer.decode(errors="replace"))
            self.ended.set()

    async def wait_started(self) -> None:
        """Wait for the worker's start line; fails if the process ends first."""
        async with trio.open_nursery() as nursery:

            async def ended_early() -> None:
                await self.ended.wait()
                raise AssertionError(
                    f"worker {self.client_id} ended before starting:\n" + self.log()
                )

            nursery.start_soon(ended_early)
            await self.started.wait()
            nursery.cancel_scope.cancel()

    def log(self, last: int = 40) -> str:
        return "\n".join(self.lines[-last:])

    def memory(self) -> Memory:
        return read_memory(self.pid)


@asynccontextmanager
async def worker_processes(envs: list[tuple[str, dict[str, str]]]) -> AsyncIterator[list[Child]]:
    """Start one ``rivertrio worker`` child per (client id, env); kill any left at the end.

    Yields once every child has logged its start line.
    """
    command = [sys.executable, "-m", "rivertrio", "worker", "support.load:config"]
    children: list[Child] = []
    async with trio.open_nursery() as nursery:
        try:
            for client_id, env in envs:
                process = await trio.lowlevel.open_process(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=TESTS_DIR,
                )
                child = Child(client_id, process)
                children.append(child)
                nursery.start_soon(child.read_log)
            with trio.fail_after(60):
                for child in children:
                    await child.wait_started()
            yield children
        finally:
            with trio.CancelScope(shield=True):
                for child in children:
                    if child.process.returncode is None:
                        child.process.kill()
                with trio.move_on_after(10):
                    for child in children:
                        await child.process.wait()


async def stop_gracefully(children: list[Child]) -> None:
    """SIGTERM (soft stop) every live child and check each exits with status 0."""
    live = [c for c in children if c.process.returncode is None]
    for child in live:
        child.process.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        for child in live:
            code = await child.process.wait()
            await child.ended.wait()
            assert code == 0, f"worker {child.client_id} exited with {code}:\n{child.log()}"


async def create_runs_table(driver: Driver) -> None:
    await driver.execute(
        "CREATE TABLE /*schema*/runs ("
        " job_id bigint NOT NULL, pid int NOT NULL,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )


COMPLETED_TOPIC = "test_completed"


async def install_completion_trigger(driver: Driver) -> None:
    """Notify ``<schema>.test_completed`` with the number of rows each statement completed.

    Statement level, with transition tables: one notification per completer batch,
    whatever process ran it; the test waits on these instead of polling.
    """
    channel = driver.channel(COMPLETED_TOPIC).replace("'", "''")
    await driver.execute(
        f"""
        CREATE FUNCTION /*schema*/test_notify_completed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE n bigint;
        BEGIN
            SELECT count(*) INTO n FROM new_rows JOIN old_rows USING (id)
            WHERE new_rows.state = 'completed' AND old_rows.state <> 'completed';
            IF n > 0 THEN
                PERFORM pg_notify('{channel}', n::text);
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_notify_completed AFTER UPDATE ON /*schema*/river_job
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION /*schema*/test_notify_completed();
        """
    )


class CompletionCounter:
    """Counts rows completed by any process, from the trigger's notifications."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.completed = 0
        self.notifications = 0
        self._changed = trio.Event()

    async def run(self) -> None:
        async for note in self._listener.receive:
            if note.topic == COMPLETED_TOPIC:
                self.notifications += 1
                self.completed += int(note.payload)
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait until at least `count` rows have been completed."""
        while self.completed < count:
            await self._changed.wait()
        assert self._listener.dropped == 0, "notifications were dropped: counts are unreliable"


@asynccontextmanager
async def completion_counter(driver: Driver) -> AsyncIterator[CompletionCounter]:
    """A running `CompletionCounter` on its own LISTEN connection."""
    await install_completion_trigger(driver)
    listener = await driver.open_listener(buffer=1_000_000)
    try:
        await listener.listen(COMPLETED_TOPIC)
        counter = CompletionCounter(listener)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.run)
            yield counter
            nursery.cancel_scope.cancel()
    finally:
        await listener.aclose()


@dataclass(frozen=True)
class Memory:
    """A process's resident memory now and at its peak, in MiB."""

    rss: float
    peak: float


def read_memory(pid: int) -> Memory:
    """VmRSS and VmHWM of a live process, from ``/proc/<pid>/status`` (Linux)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])


def read_runs(path: Path) -> list[int]:
    """The job ids a load child recorded (native int64s)."""
    data = path.read_bytes()
    return list(struct.unpack(f"{len(data) // 8}q", data))
