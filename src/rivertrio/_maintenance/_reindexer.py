"""The reindexer: the leader rebuilds River's bloat-prone indexes on a schedule.

Jobs churn through ``river_job``: inserted, updated a few times, deleted by
the cleaner. B-tree and GIN indexes on such a table keep the space of dead
entries and grow, so River rebuilds its indexes with ``REINDEX INDEX
CONCURRENTLY`` (writes carry on during the rebuild) every day at midnight UTC.
This service does the same, with River's defaults and rules:

- one index at a time, in the order configured, each within a timeout;
- an index that does not exist is passed over (it may not be created yet);
- an index with leftovers of an earlier rebuild (``_ccnew``/``_ccold``
  indexes, see `rivertrio._driver._reindexer`) is skipped with a warning: a
  rebuild that did not finish in time before will likely not now either, and
  retrying daily would pile up failed builds. Drop the leftovers (the warning
  says how) to have it rebuilt again;
- a rebuild cut short because the service stops (the client stops or loses
  leadership) drops its own leftovers, so it does not block later runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import trio

from .._driver._reindexer import drop_leftovers, index_states, reindex
from .._exceptions import ConfigError, DatabaseConnectionError, DatabaseError
from .._maintenance_config import (
    REINDEXER_INDEX_NAMES_DEFAULT,
    REINDEXER_SCHEDULE_DEFAULT,
    reindexer_settings,
)
from .._service import Counter, Service, cancel_on
from ._base import run_bounded
from ._periodic import next_run_time

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["ReindexRun", "Reindexer"]

log = logging.getLogger("rivertrio.maintenance")

# How long a stopping rebuild may take to drop its leftovers (River's 15 s).
_CLEANUP_TIMEOUT = 15.0
# Beyond the server-side timeout, how long to wait for its answer before taking
# the connection for dark.
_ANSWER_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class ReindexRun:
    """What one run of the reindexer did, index by index."""

    reindexed: tuple[str, ...] = ()
    skipped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Indexes not rebuilt because of leftovers of an earlier rebuild: name -> leftovers."""
    missing: tuple[str, ...] = ()
    """Indexes that do not exist in the schema."""
    failed: dict[str, str] = field(default_factory=dict)
    """Indexes whose rebuild failed: name -> the error."""

    def __bool__(self) -> bool:
        return bool(self.reindexed or self.skipped or self.missing or self.failed)


class Reindexer(Service):
    """Rebuilds indexes with ``REINDEX INDEX CONCURRENTLY`` on a schedule, one at a time.

    The first run is at the schedule's first time after the service starts (not
    at start: rebuilding is for quiet hours), then at each next one.

    Args:
        driver: The database.
        schedule: A cron expression (evaluated in UTC) or an interval in
            seconds. River's: daily at midnight UTC.
        index_names: The indexes to rebuild, in order. River's list by default.
        timeout: Longest one rebuild may take, in seconds; None for no limit.

    Raises:
        ConfigError: A setting is invalid; the message names it.
    """

    name = "reindexer"

    def __init__(
        self,
        driver: Driver,
        *,
        schedule: float | str = REINDEXER_SCHEDULE_DEFAULT,
        index_names: Sequence[str] = REINDEXER_INDEX_NAMES_DEFAULT,
        timeout: float | None = 60.0,
    ) -> None:
        super().__init__()
        when, names, seconds = reindexer_settings(schedule, index_names, timeout)
        if when is None:
            raise ConfigError("reindexer_schedule is None: leave the Reindexer out instead")
        self._driver = driver
        self.schedule: float | str = when
        self.index_names = names
        self.timeout = seconds
        self.runs = Counter()
        """Runs finished (each one over every configured index)."""
        self.last_run: ReindexRun | None = None

    async def run_once(self) -> ReindexRun:
        """Rebuild each configured index in turn; a checkpoint.

        Stopping (cancelling) it mid-rebuild drops that rebuild's leftovers,
        shielded, for up to 15 seconds.

        Raises:
            DatabaseError: The indexes could not be looked up (the database is
                unreachable). A rebuild that fails is logged and reported in the
                result instead, and the next index is rebuilt all the same.
        """
        schema = self._driver.configured_schema
        states = await run_bounded(self._driver, index_states, schema, self.index_names)
        reindexed: list[str] = []
        skipped: dict[str, tuple[str, ...]] = {}
        missing: list[str] = []
        failed: dict[str, str] = {}
        for state in states:
            if not state.exists:
                missing.append(state.name)
                continue
            if state.leftovers:
                skipped[state.name] = state.leftovers
                log.warning(
                    "reindexer: not rebuilding %s: an earlier rebuild left %s behind (it "
                    "likely ran out of time). Drop them (DROP INDEX CONCURRENTLY ...) to have "
                    "it rebuilt again, with a longer reindexer_timeout if it keeps timing out",
                    state.name,
                    ", ".join(state.leftovers),
                )
                continue
            try:
                await self._rebuild(schema, state.name)
            except DatabaseError as exc:
                failed[state.name] = str(exc)
                log.error("reindexer: rebuilding %s failed: %s", state.name, exc)
            else:
                reindexed.append(state.name)
                log.info("reindexer: rebuilt %s", state.name)
        return ReindexRun(tuple(reindexed), skipped, tuple(missing), failed)

    async def _rebuild(self, schema: str | None, name: str) -> None:
        guard = math.inf if self.timeout is None else self.timeout + _ANSWER_MARGIN
        try:
            with trio.fail_after(guard):
                await self._driver.run(reindex, schema, name, self.timeout)
        except trio.TooSlowError:
            raise DatabaseConnectionError(
                f"rebuilding {name}: no answer from {self._driver.where} within {guard:g} s"
            ) from None
        except trio.Cancelled:
            with trio.move_on_after(_CLEANUP_TIMEOUT, shield=True) as scope:
                try:
                    dropped = await self._driver.run(drop_leftovers, schema, name)
                except DatabaseError as exc:
                    log.error(
                        "reindexer: dropping what the stopped rebuild of %s left: %s", name, exc
                    )
                else:
                    if dropped:
                        log.info(
                            "reindexer: stopped while rebuilding %s; dropped %s",
                            name,
                            ", ".join(dropped),
                        )
            if scope.cancelled_caught:
                log.error(
                    "reindexer: stopped while rebuilding %s, and could not drop its leftovers "
                    "within %g s; later runs skip it until they are dropped",
                    name,
                    _CLEANUP_TIMEOUT,
                )
            raise

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
            task_status.started()
            now = datetime.now(UTC)
            due = next_run_time(self.schedule, now, now)
            while True:
                log.debug("reindexer: next run at %s", due.isoformat())
                await trio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
                try:
                    run = await self.run_once()
                except DatabaseError as exc:
                    log.warning(
                        "reindexer: run failed, retrying at the next scheduled time: %s", exc
                    )
                else:
                    self.last_run = run
                self.runs.increment()
                due = next_run_time(self.schedule, due, datetime.now(UTC))
