"""Rate limits: at most N job starts in any period, for a queue or per partition, across clients.

A start is counted when the flow fetch starts the job, at its ``attempted_at``;
the workers log that value with every attempt (support.flow), and the test
checks every window of the log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import trio

import rivertrio
from rivertrio import FlowControl, FlowKey, InsertOpts, RateLimit
from rivertrio._driver import Driver
from rivertrio._job import JobRow
from support.flow import (
    FLOW_LOG_DDL,
    counting_events,
    log_event,
    most_starts_in_a_window,
    read_runs,
)

QUEUE = "emails"


@dataclass
class Mail(rivertrio.JobArgs, kind="flow_mail"):
    customer: int = 0
    n: int = 0
    fail: bool = False


def _config(schema: str, driver: Driver, rules: FlowControl, id: str) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Mail)
    async def mail(job: rivertrio.Job[Mail]) -> None:
        await log_event(driver, job, "start")
        await log_event(driver, job, "end")
        if job.args.fail and job.attempt == 1:
            raise RuntimeError("first attempt fails")

    return rivertrio.Config(
        schema=schema,
        id=id,
        workers=workers,
        queues={QUEUE: rivertrio.QueueConfig(max_workers=10)},
        flow={QUEUE: rules},
        fetch_poll_interval=0.02,
        retry_policy=lambda job: 0.01,
    )


async def _run(
    database_url: str, driver: Driver, schema: str, rules: FlowControl, jobs: Sequence[Mail]
) -> list[JobRow]:
    await driver.execute(FLOW_LOG_DDL)
    configs = [_config(schema, driver, rules, f"rate-client-{i}") for i in range(3)]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(rivertrio.open_client(c, database_url=database_url))
            for c in configs
        ]
        done = await stack.enter_async_context(
            counting_events(clients, [rivertrio.EventKind.JOB_COMPLETED], len(jobs))
        )
        results = await clients[0].insert_many([(j, InsertOpts(queue=QUEUE)) for j in jobs])
        with trio.fail_after(60):
            await done.wait()
    return [r.job for r in results]


async def test_a_queue_rate_limit_holds_across_clients(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    rules = FlowControl(rate=RateLimit(limit=4, period=0.3))
    jobs = [Mail(n=i, fail=i % 5 == 0) for i in range(16)]
    await _run(database_url, driver, migrated_schema, rules, jobs)
    runs = await read_runs(driver)
    assert len(runs) == 16 + 4  # a retry is a start too
    assert most_starts_in_a_window(runs, 0.3) == {None: 4}
    # Old starts are forgotten as their period passes: the ledger stays small.
    kept = await driver.fetchval("SELECT count(*) FROM /*schema*/rivertrio_flow_start")
    assert kept < len(runs)


async def test_a_rate_limit_per_partition(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    rules = FlowControl(
        partition_by=FlowKey(args=["customer"]),
        rate=RateLimit(limit=2, period=0.3, per_partition=True),
    )
    jobs = await _run(
        database_url,
        driver,
        migrated_schema,
        rules,
        [Mail(customer=i % 3, n=i) for i in range(12)],
    )
    customer: dict[int, Any] = {j.id: json.loads(j.encoded_args)["customer"] for j in jobs}
    runs = await read_runs(driver)
    per_customer = most_starts_in_a_window(runs, 0.3, key=lambda r: customer[r.job_id])
    assert per_customer == {0: 2, 1: 2, 2: 2}
    # The queue as a whole went faster than one customer may.
    assert most_starts_in_a_window(runs, 0.3)[None] > 2
