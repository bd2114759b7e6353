"""The scheduler: due ``scheduled`` and ``retryable`` jobs become ``available``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._driver._maintenance import schedule_jobs
from .._driver._topics import INSERT_TOPIC
from .._exceptions import ConfigError
from .._validate import integer
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["JobScheduler", "SchedulerResult"]


@dataclass(frozen=True, slots=True)
class SchedulerResult:
    """What one scheduler pass did."""

    made_available: int
    discarded: int
    queues: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.made_available or self.discarded)


class JobScheduler(IntervalService):
    """Moves due ``scheduled``/``retryable`` jobs to ``available``, in batches.

    A unique job whose key another job already holds (in a state that job's
    unique states cover) is ``discarded`` with ``metadata.unique_key_conflict =
    "scheduler_discarded"`` instead. Each batch sends one ``river_insert``
    notification per queue that got available jobs, in the same statement.

    Args:
        driver: The database.
        interval: Seconds between passes (River: 5).
        batch_size: Rows per statement.
        notify: Send insert notifications (False for ``poll_only``).
        on_available: Called with the queues that got available jobs after each
            batch, to wake local producers at once; must not block.
    """

    name = "scheduler"

    def __init__(
        self,
        driver: Driver,
        *,
        interval: float = 5.0,
        batch_size: int = 10_000,
        notify: bool = True,
        on_available: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        super().__init__(interval=interval)
        self._driver = driver
        self._batch_size = integer("batch_size", batch_size, ConfigError)
        self._notify = notify
        self._on_available = on_available

    async def run_once(self) -> SchedulerResult:
        """Schedule every due job, one batch per statement; a checkpoint.

        Cancel-safe: each batch is one statement, committed or not as a whole.
        """
        channel = self._driver.channel(INSERT_TOPIC) if self._notify else None
        made_available = discarded = 0
        queues: set[str] = set()
        while True:
            res = await run_bounded(
                self._driver,
                schedule_jobs,
                self._driver.configured_schema,
                self._batch_size,
                channel,
            )
            made_available += res.handled - res.discarded
            discarded += res.discarded
            queues |= res.queues
            if res.queues and self._on_available is not None:
                self._on_available(res.queues)
            if res.handled < self._batch_size:
                return SchedulerResult(made_available, discarded, frozenset(queues))
