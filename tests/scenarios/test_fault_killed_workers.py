"""A worker process is SIGKILLed mid-run; no job is lost.

Three ``rivertrio worker support.load:config`` processes (real subprocesses,
the CLI) work one queue of jobs that each sleep 10 to 50 ms and then record
their run in the ``runs`` table through ``current_client().transaction()``.
Once 30% of the jobs are completed, one process is SIGKILLed: no cleanup of
any kind, its connections simply drop. Its jobs stay ``running`` until the
leader sees its liveness lock gone and rescues them (fast rescue, seconds, not
``rescue_stuck_jobs_after``); the survivors then work them. When the leader is
the one killed, a survivor replaces it at its next election attempt (its lock
is free), not when its term expires, and then rescues its jobs.

At the end every job is ``completed``, none is lost or left ``running``, and
the only jobs that ran twice are jobs the killed process held (their work was
done but their completion not yet persisted: at-least-once delivery). The test
waits on completion notifications sent by a trigger, never on sleeps, and
prints its figures. ``RIVERTRIO_KILL_JOBS`` changes the number of jobs.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._maintenance._rescuer import RESCUED_ERROR
from support.common import states as job_states
from support.load import (
    Child,
    Sleepy,
    completion_counter,
    create_runs_table,
    stop_gracefully,
    worker_env,
    worker_processes,
)

pytestmark = pytest.mark.timeout(150)

JOBS = int(os.environ.get("RIVERTRIO_KILL_JOBS", "5000"))
PROCESSES = 3
MAX_WORKERS = 50
KILL_AT = 0.3
# Client defaults (Elector): a dead leader's term would last up to TTL s.
ELECT_INTERVAL = 5.0
TTL = 15.0


async def _pick_victim(driver: Driver, children: list[Child], role: str) -> Child:
    leader = await driver.fetchval("SELECT leader_id FROM /*schema*/river_leader")
    for child in children:
        if (child.client_id == leader) == (role == "leader"):
            return child
    raise AssertionError(f"no {role} among the workers (leader: {leader!r})")


async def _stranded(driver: Driver, client_id: str) -> list[int]:
    """Ids of the jobs left running under `client_id`."""
    recs = await driver.fetch(
        "SELECT id FROM /*schema*/river_job"
        " WHERE state = 'running' AND attempted_by[cardinality(attempted_by)] = $1",
        client_id,
    )
    return sorted(r["id"] for r in recs)


@pytest.mark.parametrize("role", ["follower", "leader"])
async def test_sigkilled_worker_process_loses_no_job(
    database_url: str, migrated_schema: str, driver: Driver, role: str
) -> None:
    await create_runs_table(driver)
    suffix = uuid.uuid4().hex[:8]
    envs = []
    for i in range(PROCESSES):
        client_id = f"killed-{i}-{suffix}.rt"  # the marker: a liveness lock, fast rescue
        env = worker_env(
            database_url=database_url,
            schema=migrated_schema,
            mode="killed",
            client_id=client_id,
            queues=1,
            max_workers=MAX_WORKERS,
        )
        envs.append((client_id, env))

    async with completion_counter(driver) as counter, worker_processes(envs) as children:
        started = trio.current_time()
        async with rivertrio.open_client(
            rivertrio.Config(schema=migrated_schema), database_url=database_url
        ) as inserter:
            inserted = await inserter.insert_many_fast(
                [Sleepy(ms=10 + (i * 7) % 41) for i in range(JOBS)]
            )
        assert inserted == JOBS

        with trio.fail_after(60):
            await counter.wait_for(int(JOBS * KILL_AT))
        # The leader is elected at once when the workers start: by now it is known.
        victim = await _pick_victim(driver, children, role)
        victim.process.kill()  # SIGKILL
        killed_at = await driver.fetchval("SELECT clock_timestamp()")
        await victim.process.wait()
        stranded = await _stranded(driver, victim.client_id)
        survivors = [c for c in children if c is not victim]

        with trio.fail_after(90):
            await counter.wait_for(JOBS)
        elapsed = trio.current_time() - started
        # Read before the survivors stop (the leader resigns, deleting its term).
        leader = await driver.fetchrow("SELECT leader_id, elected_at FROM /*schema*/river_leader")
        await stop_gracefully(survivors)

    states = await job_states(driver)
    runs = await driver.fetchrow(
        "SELECT count(*) AS runs, count(DISTINCT job_id) AS jobs FROM /*schema*/runs"
    )
    assert runs is not None
    twice = await driver.fetch(
        "SELECT job_id, count(*) AS n FROM /*schema*/runs GROUP BY job_id HAVING count(*) > 1"
    )
    never_ran = await driver.fetchval(
        "SELECT count(*) FROM /*schema*/river_job j"
        " WHERE NOT EXISTS (SELECT 1 FROM /*schema*/runs r WHERE r.job_id = j.id)"
    )
    # Rescued jobs carry the rescuer's error. (The kill-time snapshot above is only
    # reported: a completion statement in flight when the process died may still
    # have committed a moment later, taking a job off that list.)
    rescued: list[Any] = await driver.fetch(
        """
        SELECT j.id, j.finalized_at, e ->> 'error' AS error, (e ->> 'at')::timestamptz AS at
        FROM /*schema*/river_job j, unnest(j.errors) AS e
        WHERE e ->> 'error' LIKE $1
        """,
        f"{RESCUED_ERROR}%",
    )
    victim_jobs = {
        r["id"]
        for r in await driver.fetch(
            "SELECT id FROM /*schema*/river_job WHERE $1 = ANY(attempted_by)", victim.client_id
        )
    }
    recovery = max((r["at"] - killed_at).total_seconds() for r in rescued) if rescued else 0
    back_done = (
        max((r["finalized_at"] - killed_at).total_seconds() for r in rescued) if rescued else 0
    )
    assert leader is not None, "no leader at the end"
    takeover = (leader["elected_at"] - killed_at).total_seconds()
    moved = f", leadership taken over {takeover:.2f} s after the kill" if role == "leader" else ""
    print(
        f"\nkilled workers ({role} killed): jobs in {JOBS}, "
        f"completed {states.get('completed', 0)}, "
        f"ran twice {len(twice)}, completion events {counter.completed} "
        f"({counter.notifications} notifications), running when killed {len(stranded)}, "
        f"rescued {len(rescued)}, "
        f"time to recover {recovery:.2f} s (all of them completed {back_done:.2f} s after "
        f"the kill){moved}, total {elapsed:.1f} s, processes {PROCESSES} x {MAX_WORKERS} workers"
    )

    assert states == {"completed": JOBS}, f"not all completed: {states}"
    assert counter.completed == JOBS
    assert never_ran == 0
    assert runs["jobs"] == JOBS
    # The kill left jobs behind, and the leader rescued them (each once): only them.
    assert rescued, "no job of the killed process was rescued"
    assert len({r["id"] for r in rescued}) == len(rescued)
    assert all(victim.client_id in r["error"] for r in rescued)
    assert len(rescued) <= len(stranded)
    # Only the killed process's jobs may have run twice: at-least-once, never more.
    assert {r["job_id"] for r in twice} <= victim_jobs
    assert all(r["n"] == 2 for r in twice)
    if role == "leader":
        assert leader["leader_id"] in {c.client_id for c in survivors}
        # Its term (re-elected at most ELECT_INTERVAL s before the kill) would have
        # lasted at least TTL - ELECT_INTERVAL s more: the survivor did not wait for it.
        assert takeover < TTL - ELECT_INTERVAL, f"leader replaced only {takeover:.1f} s after"
    else:
        assert leader["elected_at"] < killed_at  # the leader lived on: the same term
    # Loose (the machine is noisy): orphan grace (5 s) plus, for the leader, one
    # election interval; a dead leader's expiring term alone would take longer.
    assert recovery < TTL, f"rescued only {recovery:.1f} s after the kill"
