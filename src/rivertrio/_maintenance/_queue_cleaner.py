"""The queue cleaner: deletes ``river_queue`` rows that no client has touched for a day."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._driver._maintenance import delete_idle_queues
from .._exceptions import ConfigError
from .._validate import duration, integer
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["QueueCleaner"]

log = logging.getLogger("rivertrio.maintenance")


class QueueCleaner(IntervalService):
    """Deletes queue rows whose ``updated_at`` is older than `retention`.

    Running producers refresh their queue's row, so only queues no client works
    any more go away (with their paused state).

    Args:
        driver: The database.
        retention: Seconds a queue row may go without an update (River: 24 h).
        interval: Seconds between passes (River: 60).
        batch_size: Rows deleted per statement.
    """

    name = "queue cleaner"

    def __init__(
        self,
        driver: Driver,
        *,
        retention: float = 24 * 3600.0,
        interval: float = 60.0,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(interval=interval)
        self._driver = driver
        self._retention = duration("queue retention", retention, ConfigError)
        self._batch_size = integer("batch_size", batch_size, ConfigError)

    async def run_once(self) -> list[str]:
        """Delete every idle queue row, in batches; returns their names. A checkpoint."""
        names: list[str] = []
        while True:
            batch = await run_bounded(
                self._driver,
                delete_idle_queues,
                self._driver.configured_schema,
                self._retention,
                self._batch_size,
            )
            names.extend(batch)
            if len(batch) < self._batch_size:
                if names:
                    log.info("queue cleaner: deleted idle queues %s", ", ".join(names))
                return names
