"""Sequences: one job at a time per key, in insert order; failures hold the line or not.

Order and exclusion are checked against the workers' own log (support.flow).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

import trio

import rivertrio
from rivertrio import FlowControl, FlowKey, InsertOpts
from rivertrio._driver import Driver
from rivertrio._driver._flow import flow_fetch_jobs
from rivertrio._flow import fetch_rules
from rivertrio._job import JobRow
from rivertrio._maintenance import JobRescuer
from support.flow import FLOW_LOG_DDL, Run, counting_events, log_event, max_overlap, read_runs

QUEUE = "webhooks"
DONE = [
    rivertrio.EventKind.JOB_COMPLETED,
    rivertrio.EventKind.JOB_FAILED,
    rivertrio.EventKind.JOB_CANCELLED,
]


@dataclass
class Hook(rivertrio.JobArgs, kind="flow_webhook"):
    customer: int = 0
    n: int = 0
    fail_attempts: int = 0
    """Fail this many attempts, then succeed."""


def _rules(on_failure: Literal["stop", "continue"] = "stop") -> FlowControl:
    return FlowControl(sequence_by=FlowKey(args=["customer"]), sequence_on_failure=on_failure)


def _config(
    schema: str, driver: Driver, rules: FlowControl, *, id: str = "", **fields: Any
) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Hook)
    async def hook(job: rivertrio.Job[Hook]) -> None:
        await log_event(driver, job, "start")
        await trio.sleep(0.003)  # the work itself
        await log_event(driver, job, "end")
        if job.attempt <= job.args.fail_attempts:
            raise RuntimeError(f"attempt {job.attempt} fails")

    fields.setdefault("retry_policy", lambda job: 0.05)
    fields.setdefault("fetch_poll_interval", 0.02)
    return rivertrio.Config(
        schema=schema,
        id=id,
        workers=workers,
        queues={QUEUE: rivertrio.QueueConfig(max_workers=5)},
        flow={QUEUE: rules},
        **fields,
    )


async def _insert(client: rivertrio.Client, jobs: Sequence[Hook], **opts: Any) -> list[JobRow]:
    results = await client.insert_many([(j, InsertOpts(queue=QUEUE, **opts)) for j in jobs])
    return [r.job for r in results]


def _assert_in_order(runs: list[Run], jobs: list[JobRow]) -> None:
    """Per customer: runs never overlap, and each job starts after the one before it ended."""
    customer = {j.id: json.loads(j.encoded_args)["customer"] for j in jobs}
    assert set(max_overlap(runs, key=lambda r: customer[r.job_id]).values()) == {1}
    by_customer: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_customer[customer[run.job_id]].append(run)
    for runs_of_one in by_customer.values():
        # Every attempt of a job, before any attempt of a later job.
        ids = [r.job_id for r in runs_of_one]
        assert ids == sorted(ids), ids
        for before, after in itertools.pairwise(runs_of_one):
            assert before.end is not None and before.end <= after.start


async def test_a_sequence_runs_one_at_a_time_in_insert_order_across_clients(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    rules = _rules()
    configs = [_config(migrated_schema, driver, rules, id=f"seq-client-{i}") for i in range(3)]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(rivertrio.open_client(c, database_url=database_url))
            for c in configs
        ]
        done = await stack.enter_async_context(
            counting_events(clients, [rivertrio.EventKind.JOB_COMPLETED], 40)
        )
        # Job 3 of customer 1 fails its first attempt: customer 1's line waits.
        jobs = await _insert(
            clients[0],
            [Hook(customer=i % 4, n=i, fail_attempts=1 if i == 9 else 0) for i in range(40)],
        )
        with trio.fail_after(30):
            await done.wait()
    runs = await read_runs(driver)
    assert len(runs) == 41  # 40 jobs, one of them twice
    _assert_in_order(runs, jobs)
    assert max(max_overlap(runs).values()) > 1  # the sequences ran side by side


async def _run_until(
    database_url: str,
    config: rivertrio.Config,
    count: int,
    insert: Any = None,
) -> Any:
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        counting_events([client], DONE, count) as done,
    ):
        result = None if insert is None else await insert(client)
        with trio.fail_after(30):
            await done.wait()
    return result


async def _states(driver: Driver, jobs: list[JobRow]) -> list[str]:
    recs = await driver.fetch(
        "SELECT id, state::text FROM /*schema*/river_job WHERE id = ANY($1) ORDER BY id",
        [j.id for j in jobs],
    )
    return [r["state"] for r in recs]


async def test_a_discarded_job_stops_the_line_until_it_is_retried(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    config = _config(migrated_schema, driver, _rules("stop"))

    async def insert(client: rivertrio.Client) -> list[JobRow]:
        first = await _insert(client, [Hook(customer=1, n=0, fail_attempts=1)], max_attempts=1)
        return first + await _insert(client, [Hook(customer=1, n=i) for i in (1, 2)])

    # The first job is discarded; the two behind it wait.
    jobs = await _run_until(database_url, config, 1, insert)
    assert await _states(driver, jobs) == ["discarded", "pending", "pending"]
    fetched = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "x", fetch_rules(_rules("stop")), None
    )
    assert fetched.rows == []  # held for as long as the discarded job stands

    # Retried (and completing this time), it lets the line go on.
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        retried = await admin.job_retry(jobs[0].id)
    assert retried.state is rivertrio.JobState.PENDING  # held, for the flow fetch
    await _run_until(database_url, config, 3)
    assert await _states(driver, jobs) == ["completed", "completed", "completed"]
    _assert_in_order(await read_runs(driver), jobs)


async def test_a_discarded_or_cancelled_job_lets_the_line_continue_when_asked(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    config = _config(migrated_schema, driver, _rules("continue"))
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema, flow={QUEUE: _rules("continue")}),
        database_url=database_url,
    ) as inserter:
        first = await _insert(inserter, [Hook(customer=1, fail_attempts=1)], max_attempts=1)
        cancelled = await _insert(inserter, [Hook(customer=1, n=1)])
        rest = await _insert(inserter, [Hook(customer=1, n=i) for i in (2, 3)])
        await inserter.job_cancel(cancelled[0].id)
    jobs = first + cancelled + rest
    await _run_until(database_url, config, 3)
    assert await _states(driver, jobs) == ["discarded", "cancelled", "completed", "completed"]
    _assert_in_order(await read_runs(driver), jobs)


async def test_the_rescuer_releasing_a_crashed_clients_job_lets_the_sequence_go_on(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    rules = _rules()
    config = _config(migrated_schema, driver, rules)
    # The rescuer's rule, for this one pass: a job running at all is stuck.
    rescue = dataclasses.replace(config, rescue_stuck_jobs_after=0.001, job_timeout=None)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema, flow={QUEUE: rules}), database_url=database_url
    ) as inserter:
        jobs = await _insert(inserter, [Hook(customer=5, n=i) for i in range(3)])
    # A client takes the sequence's head, then dies with it running.
    taken = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "crashed-client", fetch_rules(rules), None
    )
    assert [r["id"] for r in taken.rows] == [jobs[0].id]
    # While it is running, nothing behind it may start.
    again = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "other", fetch_rules(rules), None
    )
    assert again.rows == []
    result = await JobRescuer(driver, rescue).run_once(stuck=True, orphans=False)
    assert result.retried == 1
    # Rescued back into the hold (no River fetch may take it), and the line goes on.
    assert await _states(driver, jobs) == ["pending", "pending", "pending"]
    await _run_until(database_url, config, 3)
    assert await _states(driver, jobs) == ["completed", "completed", "completed"]
    runs = await read_runs(driver)
    assert [(r.job_id, r.attempt) for r in runs] == [
        (jobs[0].id, 2),
        (jobs[1].id, 1),
        (jobs[2].id, 1),
    ]
    _assert_in_order(runs, jobs)
