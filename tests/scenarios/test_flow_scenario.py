"""Flow control across processes, through failures, cancellations and crashes.

Four worker processes of 10 workers per queue (support.flow_scenario) work a
concurrency-limited queue (3 at once, 1 per tenant), a rate-limited one, a
sequenced one and workflows, while this process inserts jobs in waves,
cancels some at random, and kills worker processes (SIGKILL, and jobs that
bring their own process down), starting new ones in their place. The leader
(whichever worker holds the term) rescues the dead processes' jobs.

Then, from the log the workers wrote (support.flow) and the rows as they
ended, every rule is checked: no limit ever exceeded, no sequence ran two
jobs at once or out of order, no workflow task started before its
dependencies finished, no job ran twice at once or after it was finished, and
nothing was lost or left stuck: every job finished.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import InsertOpts, JobState, Workflow, Workflows
from rivertrio._driver import Driver
from rivertrio._job import JobRow
from rivertrio._liveness import CLIENT_ID_MARKER
from support.flow import FLOW_LOG_DDL, Run, max_overlap, most_starts_in_a_window, read_runs
from support.flow_scenario import (
    CRASH_EXIT_CODE,
    LIMIT,
    LIMITED,
    RATE,
    RATED,
    SEQUENCED,
    Chore,
    flow_rules,
)

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parent.parent
PROCESSES = 4


class Workers:
    """The worker processes: started, killed, and replaced when one dies."""

    def __init__(self, url: str, schema: str, nursery: trio.Nursery) -> None:
        self._url = url
        self._schema = schema
        self._nursery = nursery
        self._count = itertools.count()
        self.running: dict[str, trio.Process] = {}
        self.deaths = 0
        self.stopping = False

    async def start(self) -> None:
        path = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        while True:
            client_id = f"flow-{next(self._count)}-{uuid.uuid4().hex[:6]}{CLIENT_ID_MARKER}"
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "support.flow_scenario", self._url, self._schema, client_id],
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            with trio.fail_after(30):
                out = b""
                while b"ready\n" not in out:
                    chunk = await proc.stdout.receive_some()
                    if not chunk:
                        break
                    out += chunk
                if b"ready\n" in out:
                    break
                # A worker's producers start before it says "ready", so a crashing job
                # can take it down first: that is a death like any other.
                code = await proc.wait()
            assert code == CRASH_EXIT_CODE, f"worker {client_id} exited {code} before it was ready"
            self.deaths += 1
        self.running[client_id] = proc
        self._nursery.start_soon(self._watch, client_id, proc)

    async def _watch(self, client_id: str, proc: trio.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.receive_some():
            pass
        await proc.wait()
        del self.running[client_id]
        if not self.stopping:
            # Crashed (a job took it down) or killed: another takes its place.
            self.deaths += 1
            await self.start()

    def kill_one(self, rng: random.Random) -> None:
        client_id = rng.choice(sorted(self.running))
        self.running[client_id].send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        self.stopping = True
        for proc in list(self.running.values()):
            proc.send_signal(signal.SIGKILL)
        with trio.move_on_after(10, shield=True):
            for proc in list(self.running.values()):
                await proc.wait()


def _chores(rng: random.Random, queue: str, count: int, keys: int) -> list[Any]:
    params: list[Any] = []
    for i in range(count):
        roll = rng.random()
        args = Chore(key=f"k{i % keys}", work_ms=rng.randint(1, 20))
        opts = InsertOpts(queue=queue, max_attempts=3)
        if roll < 0.08:
            args.fail_attempts = 9  # discarded after its 3 attempts
        elif roll < 0.2:
            args.fail_attempts = 1
        params.append((args, opts))
    return params


def _workflow(rng: random.Random, n: int) -> Workflow:
    wf = Workflow(f"wf{n}", on_dependency_failure="run" if n % 4 == 0 else "cancel")
    root = wf.add("root", Chore(work_ms=rng.randint(1, 10)))
    a = wf.add("a", Chore(work_ms=rng.randint(1, 10)), deps=[root])
    # Some workflows lose task b for good: what waits for it is cancelled (or
    # runs anyway, in the workflows that say so).
    b = wf.add(
        "b",
        Chore(work_ms=rng.randint(1, 10), fail_attempts=9 if rng.random() < 0.4 else 0),
        InsertOpts(max_attempts=2),
        deps=[root],
    )
    c = wf.add("c", Chore(work_ms=rng.randint(1, 10)), deps=[a, b])
    wf.add("d", Chore(work_ms=rng.randint(1, 10)), deps=[c])
    wf.add("e", Chore(work_ms=rng.randint(1, 10)), deps=[root])
    return wf


async def _unfinished(driver: Driver) -> int:
    return int(
        await driver.fetchval("SELECT count(*) FROM /*schema*/river_job WHERE finalized_at IS NULL")
    )


async def _wait_finished(driver: Driver, within: float) -> None:
    with trio.fail_after(within):
        while await _unfinished(driver):  # noqa: ASYNC110 - server state, no event to wait on
            await trio.sleep(0.25)


async def test_flow_control_holds_across_processes_through_crashes(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    seed = int(os.environ.get("FLOW_SCENARIO_SEED", random.randrange(2**32)))
    print(f"\nflow scenario seed {seed} (FLOW_SCENARIO_SEED={seed} to replay)")
    rng = random.Random(seed)
    await driver.execute(FLOW_LOG_DDL)
    inserter_config = rivertrio.Config(schema=migrated_schema, flow=flow_rules())
    workflows: list[Workflow] = []
    crashes: list[int] = []
    cancelled = 0
    async with (
        rivertrio.open_client(inserter_config, database_url=database_url) as client,
        trio.open_nursery() as nursery,
    ):
        procs = Workers(database_url, migrated_schema, nursery)
        try:
            for _ in range(PROCESSES):
                await procs.start()
            for wave in range(4):
                params = (
                    _chores(rng, LIMITED, 40, keys=6)
                    + _chores(rng, RATED, 10, keys=1)
                    + _chores(rng, SEQUENCED, 40, keys=6)
                )
                crash = None
                if wave in (1, 2):
                    # A job that takes its process down on its first attempt.
                    crash, _ = rng.choice(params)
                    crash.crash_attempt = 1
                    crash.fail_attempts = 0
                rng.shuffle(params)
                inserted = await client.insert_many(params)
                jobs = [
                    r.job
                    for (args, _), r in zip(params, inserted, strict=True)
                    if args is not crash
                ]
                crashes += [
                    r.job.id for (args, _), r in zip(params, inserted, strict=True) if args is crash
                ]
                for _ in range(3):
                    wf = _workflow(rng, len(workflows))
                    await Workflows(client).insert(wf)
                    workflows.append(wf)
                # Cancel a few, whatever they are doing; kill a process now and then.
                for job in rng.sample(jobs, 4):
                    await client.job_cancel(job.id)
                    cancelled += 1
                if wave in (0, 2):
                    procs.kill_one(rng)
                # Let the wave get under way before the next one.
                with trio.fail_after(120):
                    while await _unfinished(driver) > 60:  # noqa: ASYNC110 - server state
                        await trio.sleep(0.1)
            await _wait_finished(driver, within=180)
        finally:
            await procs.stop()
        deaths = procs.deaths

    rows = {
        r.id: r
        for r in (
            JobRow.from_record(rec)
            for rec in await driver.fetch("SELECT * FROM /*schema*/river_job ORDER BY id")
        )
    }
    runs = await read_runs(driver)
    ends = _ends(runs, rows)
    print(
        f"{len(rows)} jobs, {len(runs)} runs, {deaths} worker processes died, "
        f"{cancelled} cancellations; final states: "
        + ", ".join(f"{s}={n}" for s, n in sorted(_count(r.state for r in rows.values()).items()))
    )
    # The two kills, and the two jobs that crash their process (one may have been
    # in a process killed first: its first attempt died all the same).
    assert deaths >= 3
    for job_id in crashes:
        first = [r for r in runs if r.job_id == job_id and r.attempt == 1]
        assert first and first[0].end is None, f"job {job_id} did not crash its process"

    # Nothing lost or stuck: every job finished.
    assert all(r.state.finalized for r in rows.values())
    _check_runs_of_each_job(runs, ends, rows)
    _check_limited(runs, ends, rows)
    _check_rated(runs, rows)
    _check_sequences(runs, ends, rows)
    _check_workflows(runs, rows, workflows)


def _count(values: Any) -> dict[Any, int]:
    counts: dict[Any, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def _ends(runs: list[Run], rows: dict[int, JobRow]) -> dict[tuple[int, int], datetime]:
    """When each run ended: as logged, or, for a run whose process died, when the
    rescuer took the job back (recorded with the attempt in the job's errors)."""
    ends: dict[tuple[int, int], datetime] = {}
    for run in runs:
        if run.end is not None:
            ends[run.job_id, run.attempt] = run.end
            continue
        rescued = [e.at for e in rows[run.job_id].errors if e.attempt == run.attempt]
        assert rescued, f"job {run.job_id} attempt {run.attempt}: no end and never rescued"
        ends[run.job_id, run.attempt] = rescued[0]
    return ends


def _ended(runs: list[Run], ends: dict[tuple[int, int], datetime]) -> list[Run]:
    return [
        Run(r.job_id, r.attempt, r.start, ends[r.job_id, r.attempt], r.attempted_at) for r in runs
    ]


def _of(runs: list[Run], rows: dict[int, JobRow], queue: str) -> list[Run]:
    return [r for r in runs if rows[r.job_id].queue == queue]


def _key(rows: dict[int, JobRow]) -> Callable[[Run], str]:
    return lambda run: str(json.loads(rows[run.job_id].encoded_args)["key"])


def _check_runs_of_each_job(
    runs: list[Run], ends: dict[tuple[int, int], datetime], rows: dict[int, JobRow]
) -> None:
    ended = _ended(runs, ends)
    assert set(max_overlap(ended, key=lambda r: r.job_id).values()) <= {1}
    for run in ended:
        finalized = rows[run.job_id].finalized_at
        assert finalized is not None and run.start <= finalized, run


def _check_limited(
    runs: list[Run], ends: dict[tuple[int, int], datetime], rows: dict[int, JobRow]
) -> None:
    limited = _ended(_of(runs, rows, LIMITED), ends)
    overall = max_overlap(limited)[None]
    per_tenant = max_overlap(limited, key=_key(rows))
    print(
        f"{LIMITED}: at most {overall} running at once, "
        f"at most {max(per_tenant.values())} per tenant"
    )
    assert overall <= LIMIT
    assert set(per_tenant.values()) == {1}


def _check_rated(runs: list[Run], rows: dict[int, JobRow]) -> None:
    most = most_starts_in_a_window(_of(runs, rows, RATED), RATE.period)[None]
    print(f"{RATED}: at most {most} starts in {RATE.period:g} s")
    assert most <= RATE.limit


def _check_sequences(
    runs: list[Run], ends: dict[tuple[int, int], datetime], rows: dict[int, JobRow]
) -> None:
    sequenced = _ended(_of(runs, rows, SEQUENCED), ends)
    assert set(max_overlap(sequenced, key=_key(rows)).values()) == {1}
    first_start: dict[int, datetime] = {}
    last_end: dict[int, datetime] = {}
    for run in sequenced:
        first_start.setdefault(run.job_id, run.start)
        assert run.end is not None
        last_end[run.job_id] = max(last_end.get(run.job_id, run.end), run.end)
    by_key: dict[str, list[JobRow]] = defaultdict(list)
    key = _key(rows)
    for job in rows.values():
        if job.queue == SEQUENCED:
            by_key[key(Run(job.id, 0, job.created_at, None, job.created_at))].append(job)
    for jobs in by_key.values():
        jobs.sort(key=lambda j: j.id)
        for earlier, later in itertools.pairwise(jobs):
            if later.id not in first_start:
                continue
            # In insert order: the job before had finished, every run of it over.
            assert earlier.finalized_at is not None
            assert earlier.finalized_at <= first_start[later.id], (earlier.id, later.id)
            if earlier.id in last_end:
                assert last_end[earlier.id] <= first_start[later.id], (earlier.id, later.id)


def _check_workflows(runs: list[Run], rows: dict[int, JobRow], workflows: list[Workflow]) -> None:
    first_start: dict[int, datetime] = {}
    for run in runs:
        first_start.setdefault(run.job_id, run.start)
    by_task = {
        (j.metadata.get("rivertrio:workflow"), j.metadata.get("rivertrio:task")): j
        for j in rows.values()
        if "rivertrio:workflow" in j.metadata
    }
    cancelled_by_dependency = 0
    for wf in workflows:
        for task in wf.tasks:
            job = by_task[wf.id, task.name]
            deps = [by_task[wf.id, d] for d in task.deps]
            failed = [d for d in deps if d.state is not JobState.COMPLETED]
            if job.id in first_start:
                for dep in deps:
                    assert dep.finalized_at is not None
                    assert dep.finalized_at <= first_start[job.id], (wf.name, task.name)
                if task.on_dependency_failure == "cancel":
                    assert not failed, (wf.name, task.name)
            elif failed and task.on_dependency_failure == "cancel":
                assert job.state is JobState.CANCELLED, (wf.name, task.name)
                cancelled_by_dependency += 1
    print(f"workflows: {len(workflows)}, {cancelled_by_dependency} tasks cancelled by a dependency")
