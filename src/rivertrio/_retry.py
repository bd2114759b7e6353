"""When a failed job runs next: retry policies, and the one decision both callers share.

A job fails in two places: its worker raises (the executor), or its client dies
or it overstays ``rescue_stuck_jobs_after`` (the rescuer). Both ask `next_retry`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ._args import Job
    from ._job import JobRow
    from ._worker import Worker

__all__ = ["MAX_RETRY_DELAY", "Retry", "RetryPolicy", "default_retry_policy", "next_retry"]

log = logging.getLogger("rivertrio.retry")

#: A retry policy: given the failed job's row as it was fetched (before this
#: attempt's error is appended), the delay in seconds after its ``attempted_at``
#: (for a job the rescuer retries, after the rescue: its attempt is long past).
RetryPolicy: TypeAlias = Callable[["JobRow"], float]

#: The longest retry delay (ten years), whatever the policy says. Without a cap
#: a job with thousands of attempts would be scheduled past Postgres' timestamp range.
MAX_RETRY_DELAY = 10 * 365 * 24 * 3600.0

_JITTER = 0.1


def default_retry_policy(job: JobRow) -> float:
    """River's default policy: ``n ** 4`` seconds after the n-th error, +-10% jitter.

    ``n`` is the number of errors the row already holds plus one (the attempt that
    just failed): 1, 16, 81, 256, ... seconds; 25 attempts span about three weeks.
    Not a checkpoint.

    Args:
        job: The failed job's row as fetched, before this attempt's error is added.

    Returns:
        The delay in seconds, at most `MAX_RETRY_DELAY`.
    """
    n = len(job.errors) + 1
    base = min(float(n) ** 4, MAX_RETRY_DELAY)
    # Jitter spreads a burst of jobs failing together so they do not retry together.
    return min(base * (1.0 + random.uniform(-_JITTER, _JITTER)), MAX_RETRY_DELAY)


@dataclass(frozen=True, slots=True)
class Retry:
    """When a failed job runs next: at `at`, or after `delay` seconds.

    Exactly one is set. The statement that stores it counts the delay from the
    row's ``attempted_at`` for a failed attempt (so a slow completion does not
    shorten it), and from the database's now for a rescued job.
    """

    at: datetime | None = None
    delay: float | None = None


def next_retry(
    row: JobRow,
    job: Job[Any] | None,
    worker: Worker[Any] | None,
    policy: RetryPolicy,
    *,
    now: datetime,
) -> Retry:
    """Decide when a failed job runs next; never raises for anything user code returns.

    The worker's ``next_retry(job)`` wins when it gives a timezone-aware
    datetime after `now`. None, or a time not after `now`, falls back to the
    retry policy silently; any other value (a naive datetime, not a datetime)
    or an exception is logged and falls back too. The policy's delay must be a
    finite number of seconds, at least 0, and is capped at `MAX_RETRY_DELAY`
    (beyond it Postgres' timestamps overflow); a policy that raises or returns
    anything else is logged and `default_retry_policy` decides instead.

    Args:
        row: The failed job's row as fetched, before this attempt's error is added.
        job: The row with its decoded args, or None when they do not decode or no
            worker handles the kind: then only the policy is asked.
        worker: The job kind's worker, or None.
        policy: The client's retry policy.
        now: The time a worker's answer must be after (the caller's clock: the
            process's for the executor, the database's for the rescuer).
    """
    if job is not None and worker is not None:
        try:
            at = worker.next_retry(job)
            if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
                raise TypeError(f"next_retry returned {at!r}, not an aware datetime or None")
            if at is not None and at > now:
                return Retry(at=at)
        except Exception:
            log.exception("next_retry failed for job %d; applying the retry policy", row.id)
    try:
        delay = float(policy(row))
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"the retry policy returned {delay!r} seconds")
    except Exception:
        log.exception("the retry policy failed for job %d; using the default", row.id)
        delay = default_retry_policy(row)
    return Retry(delay=min(delay, MAX_RETRY_DELAY))
