"""Settings of the leader's maintenance: periodic jobs and the reindexer's schedule.

Checked when they are built, as the rest of `Config` is; `Config` holds them
(``periodic_jobs``, ``reindexer_*``) and the maintenance services read them.
"""

from __future__ import annotations

import importlib
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, TypeAlias

from ._exceptions import ConfigError
from ._validate import duration, schema_name_problem

if TYPE_CHECKING:
    from ._args import InsertParams

__all__ = [
    "REINDEXER_INDEX_NAMES_DEFAULT",
    "REINDEXER_SCHEDULE_DEFAULT",
    "PeriodicJob",
    "PeriodicJobConstructor",
    "reindexer_settings",
]

#: River's reindexer schedule: daily at midnight UTC.
REINDEXER_SCHEDULE_DEFAULT = "0 0 * * *"

#: The indexes of ``river_job`` that River's reindexer rebuilds by default:
#: those that bloat as jobs churn through the table.
REINDEXER_INDEX_NAMES_DEFAULT: tuple[str, ...] = (
    "river_job_args_index",
    "river_job_kind",
    "river_job_metadata_index",
    "river_job_pkey",
    "river_job_prioritized_fetching_index",
    "river_job_state_and_finalized_at_index",
    "river_job_unique_idx",
)

#: Builds a periodic job's args (optionally with insert options), or None to skip a firing.
PeriodicJobConstructor: TypeAlias = Callable[[], "InsertParams | None"]


def _cron_is_valid(expression: str) -> bool:
    # Imported by name: croniter ships no type information (types-croniter is a
    # separate package), and this is the only use of it here.
    croniter: Any = importlib.import_module("croniter").croniter
    return bool(croniter.is_valid(expression))


def reindexer_settings(
    schedule: object, index_names: object, timeout: object
) -> tuple[float | str | None, tuple[str, ...], float | None]:
    """The reindexer's settings checked and normalised: (schedule, index names, timeout).

    None index names become River's default list.

    Raises:
        ConfigError: A setting is invalid; the message names it.
    """
    when: float | str | None
    if isinstance(schedule, str):
        if not _cron_is_valid(schedule):
            raise ConfigError(f"reindexer_schedule {schedule!r} is not a valid cron expression")
        when = schedule
    else:
        when = duration(
            "reindexer_schedule",
            schedule,
            ConfigError,
            none="to turn the reindexer off",
            hint=" (a cron expression string is also accepted)",
        )
    if index_names is None:
        names = REINDEXER_INDEX_NAMES_DEFAULT
    elif isinstance(index_names, str | bytes) or not isinstance(index_names, Sequence):
        raise ConfigError("reindexer_index_names must be a list of index names, or None")
    else:
        names = tuple(index_names)
        for name in names:
            # An index name is an identifier, as a schema name is: the same rule.
            problem = schema_name_problem(name)
            if problem is not None:
                raise ConfigError(
                    "reindexer_index_names: " + problem.replace("schema name", "index name")
                )
    seconds = duration("reindexer_timeout", timeout, ConfigError, none="for no limit")
    return when, names, seconds


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """A job inserted on a schedule by the leader.

    Args:
        schedule: An interval in seconds (> 0), or a cron expression such as
            ``"*/15 * * * *"`` (as croniter accepts it).
        constructor: Returns the job's args, ``(args, InsertOpts)``, or None to
            skip this firing.
        run_on_start: Also insert once when the client (as leader) starts.
        id: A stable identifier, 1 to 128 characters; unique among a client's
            periodic jobs. It removes the job at run time
            (``client.periodic_jobs.remove_by_id``), and the jobs inserted
            carry it in metadata as ``river:periodic_job_id``, as River's do.
        timezone: The time zone a cron expression is read in: an IANA name
            such as ``"America/New_York"`` or a `tzinfo`; default UTC. Across
            a DST change each wall-clock time fires once: a time the clocks
            skip fires at the end of the gap, a time they repeat at its first
            occurrence.

    Raises:
        ConfigError: A value is invalid; the message names the field.
    """

    schedule: float | str
    constructor: PeriodicJobConstructor
    run_on_start: bool = False
    id: str | None = None
    timezone: str | tzinfo | None = None

    def __post_init__(self) -> None:
        schedule = self.schedule
        if isinstance(schedule, str):
            if not _cron_is_valid(schedule):
                raise ConfigError(
                    f"PeriodicJob.schedule {schedule!r} is not a valid cron expression"
                )
        else:
            interval = duration("PeriodicJob.schedule", schedule, ConfigError)
            object.__setattr__(self, "schedule", interval)
        if not callable(self.constructor):
            raise ConfigError(
                f"PeriodicJob.constructor must be callable, not {type(self.constructor).__name__}"
            )
        if not isinstance(self.run_on_start, bool):
            raise ConfigError("PeriodicJob.run_on_start must be a bool")
        if self.id is not None and (not isinstance(self.id, str) or not 1 <= len(self.id) <= 128):
            raise ConfigError(
                f"PeriodicJob.id must be a string of 1 to 128 characters, got {self.id!r}"
            )
        zone = self.timezone
        if zone is not None:
            if not isinstance(schedule, str):
                raise ConfigError(
                    "PeriodicJob.timezone applies to cron expressions only; an interval "
                    "schedule is counted in seconds whatever the zone"
                )
            if isinstance(zone, str):
                try:
                    zone = zoneinfo.ZoneInfo(zone)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    raise ConfigError(
                        f"PeriodicJob.timezone {self.timezone!r} is not a known time zone "
                        "(an IANA name such as 'America/New_York')"
                    ) from None
            elif not isinstance(zone, tzinfo):
                raise ConfigError(
                    f"PeriodicJob.timezone must be a time zone name or a tzinfo, not "
                    f"{type(zone).__name__}"
                )
            object.__setattr__(self, "timezone", zone)
