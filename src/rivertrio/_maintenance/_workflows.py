"""The workflow releaser: the leader's sweep over workflow tasks waiting for dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._driver._topics import INSERT_TOPIC
from .._driver._workflow import Released, release_tasks
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["WorkflowReleaser"]


class WorkflowReleaser(IntervalService):
    """Releases or cancels every workflow task whose dependencies have settled.

    Clients release a workflow's tasks as soon as they persist the outcome of
    one of its tasks; this sweep catches the rest: a task finished by a River
    client, cancelled or deleted by a person, discarded by the rescuer. On a
    schema without workflows it reads the ``pending`` jobs only (none are
    waiting), through River's own fetching index.

    Args:
        driver: The database.
        interval: Seconds between sweeps.
        notify: Send insert notifications for released tasks (False for ``poll_only``).
        on_available: Called with the queues that got tasks to fetch; must not block.
    """

    name = "workflow releaser"

    def __init__(
        self,
        driver: Driver,
        *,
        interval: float = 5.0,
        notify: bool = True,
        on_available: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        super().__init__(interval=interval)
        self._driver = driver
        self._notify = notify
        self._on_available = on_available

    async def run_once(self) -> Released:
        """One sweep over every waiting task; a checkpoint.

        Cancel-safe: each statement commits on its own, and a task is released
        or cancelled by one statement.
        """
        channel = self._driver.channel(INSERT_TOPIC) if self._notify else None
        result = await run_bounded(
            self._driver, release_tasks, self._driver.configured_schema, None, channel
        )
        if result.queues and self._on_available is not None:
            self._on_available(frozenset(result.queues))
        return result
