"""The rescuer's retry decision, case by case from the table the executor shares."""

from __future__ import annotations

import logging

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._maintenance import JobRescuer
from support.common import row
from support.maintenance import make_job
from support.retry import RetryCase, case_policy, case_workers, cases

pytestmark = pytest.mark.timeout(60)


@cases
async def test_a_rescued_job_retries_as_the_table_says(
    case: RetryCase, driver: Driver, migrated_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rivertrio")
    cfg = rivertrio.Config(
        schema=migrated_schema,
        workers=case_workers(),
        retry_policy=case_policy,
        rescue_stuck_jobs_after=60,
        job_timeout=30,
    )
    job_id = await make_job(
        driver,
        state="running",
        kind="retry_case",
        args={"case": case.name},
        attempt=1,
        attempted_ago=120,
    )
    with trio.fail_after(10):
        result = await JobRescuer(driver, cfg).run_once(stuck=True, orphans=False)
    assert result.retried == 1
    rescued = await row(driver, job_id)
    assert rescued.state == rivertrio.JobState.RETRYABLE
    # A rescue's delay counts from the rescue itself (its error's time), not
    # from the attempt, which is long past.
    decided_at = rescued.errors[-1].at
    case.check(
        at=rescued.scheduled_at,
        delay=(rescued.scheduled_at - decided_at).total_seconds(),
    )
    case.check_logs(caplog)
