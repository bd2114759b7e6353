"""When a failed job runs next: one table of cases for both places a job fails.

The executor (a worker raised) and the rescuer (a stuck or orphaned job) must
decide alike. Each case gives the worker's ``next_retry`` answer and the retry
policy's, and what the decision must be; the executor's test runs them without
a database, the rescuer's on real rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

import rivertrio
from rivertrio._retry import MAX_RETRY_DELAY

#: A time the worker may ask for; whole seconds, so Postgres stores it exactly.
FUTURE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
POLICY_DELAY = 100.0

Decision = Literal["worker's time", "policy's delay", "default policy", "longest delay"]


def _no_retry_time(now: datetime) -> datetime | None:
    return None


def _raises(what: str) -> Callable[..., object]:
    def fail(*_: object) -> object:
        raise LookupError(f"{what} fails")

    return fail


@dataclass(frozen=True)
class RetryCase:
    """What the worker's ``next_retry`` and the retry policy answer, and what must follow."""

    name: str
    next_retry: Callable[[datetime], object]
    """The worker's answer, given the time now; may raise."""
    policy: Callable[[], object]
    """The retry policy's answer; may raise."""
    decision: Decision
    logged: str | None
    """A text the client logs about the misbehaving answer, if any."""

    def check(self, *, at: datetime | None, delay: float | None) -> None:
        """Assert the decision: the retry time `at`, or `delay` seconds from the decision."""
        if self.decision == "worker's time":
            assert at == FUTURE
        elif self.decision == "policy's delay":
            assert delay == POLICY_DELAY
        elif self.decision == "default policy":
            # The first failure: 1 s, +-10% jitter.
            assert delay is not None and 0.9 <= delay <= 1.1, delay
        else:
            assert delay == MAX_RETRY_DELAY

    def check_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        """Assert the misbehaving answer was logged (and nothing when all is well)."""
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("rivertrio")]
        if self.logged is None:
            assert not [m for m in messages if "failed for job" in m], messages
        else:
            assert any(self.logged in m for m in messages), messages


CASES = [
    RetryCase(
        "aware, in the future", lambda now: FUTURE, lambda: POLICY_DELAY, "worker's time", None
    ),
    RetryCase(
        "naive",
        lambda now: FUTURE.replace(tzinfo=None),
        lambda: POLICY_DELAY,
        "policy's delay",
        "next_retry failed",
    ),
    RetryCase(
        "aware, in the past",
        lambda now: now - timedelta(hours=1),
        lambda: POLICY_DELAY,
        "policy's delay",
        None,
    ),
    RetryCase(
        "not a datetime",
        lambda now: "tomorrow",
        lambda: POLICY_DELAY,
        "policy's delay",
        "next_retry failed",
    ),
    RetryCase(
        "next_retry raises",
        _raises("next_retry"),
        lambda: POLICY_DELAY,
        "policy's delay",
        "next_retry failed",
    ),
    RetryCase(
        "policy: inf", _no_retry_time, lambda: math.inf, "default policy", "retry policy failed"
    ),
    RetryCase(
        "policy: NaN", _no_retry_time, lambda: math.nan, "default policy", "retry policy failed"
    ),
    RetryCase(
        "policy: negative", _no_retry_time, lambda: -5.0, "default policy", "retry policy failed"
    ),
    RetryCase("policy: huge", _no_retry_time, lambda: 1e12, "longest delay", None),
    RetryCase(
        "policy: not a number",
        _no_retry_time,
        lambda: "soon",
        "default policy",
        "retry policy failed",
    ),
    RetryCase(
        "policy raises",
        _no_retry_time,
        _raises("the policy"),
        "default policy",
        "retry policy failed",
    ),
]
_BY_NAME = {case.name: case for case in CASES}

cases = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


@dataclass
class Failing(rivertrio.JobArgs, kind="retry_case"):
    """A job that always fails; `case` is the name of its `RetryCase`."""

    case: str


class CaseWorker(rivertrio.Worker[Failing]):
    """Fails every job, and answers ``next_retry`` as the job's case says."""

    async def work(self, job: rivertrio.Job[Failing]) -> None:
        raise ValueError("fails, to be retried")

    def next_retry(self, job: rivertrio.Job[Failing]) -> datetime | None:
        answer = _BY_NAME[job.args.case].next_retry(datetime.now(UTC))
        return answer  # type: ignore[return-value]  # the cases' answers are hostile on purpose


def case_policy(row: rivertrio.JobRow) -> float:
    """The retry policy: answers as the job's case says."""
    answer = _BY_NAME[json.loads(row.encoded_args)["case"]].policy()
    return answer  # type: ignore[return-value]  # the cases' answers are hostile on purpose


def case_workers() -> rivertrio.Workers:
    workers = rivertrio.Workers()
    workers.add(CaseWorker())
    return workers
