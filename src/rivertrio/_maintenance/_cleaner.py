"""The cleaner: deletes finalized jobs once their state's retention has passed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._driver._maintenance import delete_finalized_jobs
from .._exceptions import ConfigError
from .._validate import duration, integer
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["JobCleaner"]

# Retentions are capped so `now() - retention` stays inside Postgres' timestamp
# range; a century is "forever" for a job row.
_MAX_RETENTION = 100 * 365 * 24 * 3600.0


def _retention(name: str, value: float | None) -> float | None:
    seconds = duration(name, value, ConfigError, at_least=0, none="to keep them forever")
    return None if seconds is None else min(seconds, _MAX_RETENTION)


class JobCleaner(IntervalService):
    """Deletes ``completed``, ``cancelled`` and ``discarded`` jobs past their retention.

    Args:
        driver: The database.
        completed_retention: Seconds a completed job is kept after ``finalized_at``;
            None keeps it forever. Likewise for the other two.
        cancelled_retention: See above.
        discarded_retention: See above.
        interval: Seconds between passes (River: 30).
        batch_size: Rows deleted per statement.
    """

    name = "cleaner"

    def __init__(
        self,
        driver: Driver,
        *,
        completed_retention: float | None = 86400.0,
        cancelled_retention: float | None = 86400.0,
        discarded_retention: float | None = 604800.0,
        interval: float = 30.0,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(interval=interval)
        self._driver = driver
        self._retentions = (
            _retention("completed_retention", completed_retention),
            _retention("cancelled_retention", cancelled_retention),
            _retention("discarded_retention", discarded_retention),
        )
        self._batch_size = integer("batch_size", batch_size, ConfigError)

    async def run_once(self) -> int:
        """Delete every job past retention, in batches; returns how many. A checkpoint.

        Cancel-safe: each batch is one statement.
        """
        if all(r is None for r in self._retentions):
            await trio.lowlevel.checkpoint()
            return 0
        total = 0
        while True:
            deleted = await run_bounded(
                self._driver,
                delete_finalized_jobs,
                self._driver.configured_schema,
                *self._retentions,
                self._batch_size,
            )
            total += deleted
            if deleted < self._batch_size:
                return total
