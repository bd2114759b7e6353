"""The flow control scenario's jobs, rules and worker process.

Run as a worker process: ``python -m support.flow_scenario URL SCHEMA CLIENT_ID``
(with ``tests`` on ``PYTHONPATH``). It works every queue of the scenario with
10 workers each, prints ``ready``, and runs until killed. Each job logs its
start and end (support.flow); what it does is in its args, decided by the
test: how long it works, whether an attempt fails, and whether it brings its
whole process down (a crash: ``os._exit``, no cleanup at all).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import trio

import rivertrio
from rivertrio import FlowControl, FlowKey, RateLimit
from rivertrio._driver import Driver, open_driver
from support.flow import log_event

__all__ = [
    "LIMITED",
    "RATE",
    "RATED",
    "SEQUENCED",
    "WORKFLOWS",
    "Chore",
    "flow_rules",
    "worker_config",
]

LIMITED = "limited"
"""At most 3 running, and 1 per tenant."""
RATED = "rated"
"""At most RATE.limit starts per RATE.period."""
SEQUENCED = "sequenced"
"""One at a time per customer, in insert order; a failure lets the line go on."""
WORKFLOWS = "default"
"""Workflow tasks: a plain queue."""

RATE = RateLimit(limit=12, period=1.0)
LIMIT = 3
MAX_WORKERS = 10

#: The exit status of a worker process that a crashing job took down.
CRASH_EXIT_CODE = 70


def flow_rules() -> dict[str, FlowControl]:
    """The scenario's rules, given to every client (inserting and working)."""
    return {
        LIMITED: FlowControl(
            concurrency=LIMIT, partition_by=FlowKey(args=["key"]), partition_concurrency=1
        ),
        RATED: FlowControl(rate=RATE),
        SEQUENCED: FlowControl(sequence_by=FlowKey(args=["key"]), sequence_on_failure="continue"),
    }


@dataclass
class Chore(rivertrio.JobArgs, kind="flow_chore"):
    key: str = ""
    """Tenant, customer: what the queue's rules key on."""
    work_ms: int = 5
    fail_attempts: int = 0
    """Attempts that fail before one succeeds."""
    crash_attempt: int = 0
    """The attempt (if any) that kills its whole process."""


def worker_config(schema: str, client_id: str, driver: Driver) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Chore)
    async def chore(job: rivertrio.Job[Chore]) -> None:
        await log_event(driver, job, "start")
        try:
            if job.attempt == job.args.crash_attempt:
                # The whole process dies, as a segfault or an OOM kill would.
                os._exit(CRASH_EXIT_CODE)
            await trio.sleep(job.args.work_ms / 1000)
        finally:
            # Also when cancelled (job_cancel): the run ended now.
            with trio.CancelScope(shield=True):
                await log_event(driver, job, "end")
        if job.attempt <= job.args.fail_attempts:
            raise RuntimeError(f"attempt {job.attempt} fails on purpose")

    queue = rivertrio.QueueConfig(max_workers=MAX_WORKERS)
    return rivertrio.Config(
        schema=schema,
        id=client_id,
        workers=workers,
        queues={LIMITED: queue, RATED: queue, SEQUENCED: queue, WORKFLOWS: queue},
        flow=flow_rules(),
        retry_policy=lambda job: 0.05,
        fetch_poll_interval=0.1,
        job_timeout=30.0,
    )


async def main(url: str, schema: str, client_id: str) -> None:
    # The log goes through a pool of its own: the client's is for the client.
    async with open_driver(url, schema=schema, max_size=MAX_WORKERS * 4) as log_driver:
        config = worker_config(schema, client_id, log_driver)
        async with rivertrio.open_client(config, database_url=url):
            print("ready", flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
