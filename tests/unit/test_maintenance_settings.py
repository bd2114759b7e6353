"""Leadership and maintenance without a database: settings, the periodic registry, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

import rivertrio
from rivertrio._driver import Driver
from rivertrio._elector import Elector
from rivertrio._exceptions import ConfigError, NotFoundError
from rivertrio._maintenance import (
    JobCleaner,
    JobScheduler,
    MaintenanceSettings,
    PeriodicJobs,
)
from rivertrio._maintenance._periodic import next_run_time
from support.common import Noop


def test_elector_rejects_a_ttl_not_above_the_interval() -> None:
    no_database = cast(Driver, None)  # validation happens before any I/O
    with pytest.raises(ConfigError, match="ttl"):
        Elector(no_database, "x", elect_interval=5, ttl=5)
    with pytest.raises(ConfigError, match="elect_interval"):
        Elector(no_database, "x", elect_interval=0)
    with pytest.raises(ConfigError, match="does not end with"):
        Elector(no_database, "go-client", liveness_lock=True)


def test_bad_settings_raise_config_errors() -> None:
    driver = cast(Driver, None)  # validation happens before any I/O
    with pytest.raises(ConfigError, match="batch_size"):
        JobScheduler(driver, batch_size=0)
    with pytest.raises(ConfigError, match="interval"):
        JobCleaner(driver, interval=-1)
    with pytest.raises(ConfigError, match="completed_retention"):
        JobCleaner(driver, completed_retention=float("nan"))
    with pytest.raises(ConfigError, match="orphan_grace"):
        MaintenanceSettings(orphan_grace=-1)


def test_registry_rejects_bad_jobs_and_unknown_ids() -> None:
    registry = PeriodicJobs([rivertrio.PeriodicJob(1, lambda: Noop(), id="a")])
    with pytest.raises(ConfigError, match="already added"):
        registry.add(rivertrio.PeriodicJob(1, lambda: Noop(), id="a"))
    with pytest.raises(ConfigError, match="PeriodicJob"):
        registry.add("every minute")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="nope"):
        registry.remove("nope")
    auto = registry.add(rivertrio.PeriodicJob(1, lambda: Noop()))
    assert auto != "a" and len(registry) == 2
    assert [k for k, _ in registry.items()] == ["a", auto]


def test_next_run_time_keeps_an_intervals_phase_and_skips_missed_firings() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert next_run_time(10.0, t0, t0) == t0 + timedelta(seconds=10)
    assert next_run_time(10.0, t0, t0 + timedelta(seconds=3)) == t0 + timedelta(seconds=10)
    # Late by 25 s: the firings at +10 and +20 are not made up.
    assert next_run_time(10.0, t0, t0 + timedelta(seconds=25)) == t0 + timedelta(seconds=30)


def test_next_run_time_of_a_cron_expression() -> None:
    now = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC)
    assert next_run_time("*/15 * * * *", now, now) == datetime(2026, 1, 1, 12, 15, tzinfo=UTC)
    assert next_run_time("0 0 * * *", now, now) == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
