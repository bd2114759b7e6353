"""The queue measurer: the leader measures each queue's depth and lag for middleware to report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from .._driver._stats import queue_stats
from .._hooks import Middleware, QueueStats
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["QueueMeasurer"]

log = logging.getLogger("rivertrio.maintenance")


class QueueMeasurer(IntervalService):
    """Every `interval`, counts each queue's available jobs and the age of its oldest.

    Runs on the leader only (a maintenance service), so a fleet of clients runs
    one query, and hands the measurement to each observer's ``observe_queues``
    (the OpenTelemetry middleware turns it into gauges). When the service stops
    (leadership ended) the observers get an empty list: a client that no longer
    leads reports nothing rather than stale values.

    Args:
        driver: The database.
        observers: Middleware whose ``observe_queues`` takes the measurements.
        interval: Seconds between measurements.
    """

    name = "queue measurer"

    def __init__(self, driver: Driver, observers: Sequence[Middleware], *, interval: float) -> None:
        super().__init__(interval=interval)
        self._driver = driver
        self._observers = tuple(observers)
        self.last: tuple[QueueStats, ...] = ()
        """The latest measurement."""

    async def run_once(self) -> str:
        records = await run_bounded(self._driver, queue_stats, self._driver.configured_schema)
        self.last = tuple(QueueStats(r["queue"], r["available"], r["oldest_age"]) for r in records)
        self._publish(self.last)
        return f"measured {len(self.last)} queues"

    def _publish(self, stats: tuple[QueueStats, ...]) -> None:
        for observer in self._observers:
            try:
                observer.observe_queues(stats)
            except Exception:
                log.exception("%r.observe_queues raised; its queue metrics may be stale", observer)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            await super()._serve(task_status)
        finally:
            self.last = ()
            self._publish(())
