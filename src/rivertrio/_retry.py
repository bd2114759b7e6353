"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._job import JobRow

__all__ = ["MAX_RETRY_DELAY", "RetryPolicy", "default_retry_policy"]

#: A retry policy: given the failed job's row as it was fetched (before this
#: attempt's error is appended), the delay in seconds after its ``attempted_at``.
RetryPolicy: TypeAlias = Callable[["JobRow"], float]

#: The longest delay the default policy gives (ten years). Without a cap a job
#: with thousands of attempts would be scheduled past Postgres' timestamp range.
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
