"""The executor's retry decision, case by case from the table the rescuer shares."""

from __future__ import annotations

import logging

import pytest

import rivertrio
from rivertrio.testing import work_job
from support.retry import CaseWorker, Failing, RetryCase, case_policy, cases


@cases
async def test_a_failed_job_retries_as_the_table_says(
    case: RetryCase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rivertrio")
    result = await work_job(
        CaseWorker(), Failing(case=case.name), config=rivertrio.Config(retry_policy=case_policy)
    )
    assert result.kind == "failed"
    case.check(at=result.retry_at, delay=result.retry_delay)
    case.check_logs(caplog)
