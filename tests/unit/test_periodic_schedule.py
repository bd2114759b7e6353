"""Cron schedules read in a time zone, across daylight saving changes (no waiting: the
next-run computation itself), and the periodic job's time zone setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import rivertrio
from rivertrio import ConfigError
from rivertrio._maintenance._periodic import next_run_time

NEW_YORK = ZoneInfo("America/New_York")
# 2026's changes in New York: clocks spring forward at 02:00 on 8 March (02:00
# to 02:59 do not exist) and fall back at 02:00 on 1 November (01:00 to 01:59
# happen twice).
SPRING_FORWARD = datetime(2026, 3, 8, tzinfo=NEW_YORK)
FALL_BACK = datetime(2026, 11, 1, tzinfo=NEW_YORK)


def firings(cron: str, start: datetime, days: int, zone: ZoneInfo = NEW_YORK) -> list[datetime]:
    """Every firing from `start` for `days` days, each computed from the previous one."""
    out: list[datetime] = []
    now = start
    end = start + timedelta(days=days)
    while True:
        nxt = next_run_time(cron, now, now, zone)
        if nxt >= end:
            return out
        assert nxt > now
        out.append(nxt)
        now = nxt


def local(when: datetime) -> str:
    return when.astimezone(NEW_YORK).strftime("%m-%d %H:%M %Z")


def test_a_0230_job_fires_once_on_the_spring_forward_day() -> None:
    got = firings("30 2 * * *", SPRING_FORWARD - timedelta(days=1), 3)
    # 02:30 does not exist on 8 March: it fires once, at the end of the gap.
    assert [local(t) for t in got] == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]
    assert got[1] == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_0230_job_fires_once_on_the_fall_back_day() -> None:
    got = firings("30 2 * * *", FALL_BACK - timedelta(days=1), 3)
    assert [local(t) for t in got] == ["10-31 02:30 EDT", "11-01 02:30 EST", "11-02 02:30 EST"]
    # A day of 25 hours between the two firings around the change.
    assert got[1] - got[0] == timedelta(hours=25)


def test_a_repeated_wall_clock_time_fires_only_at_its_first_occurrence() -> None:
    got = firings("30 1 * * *", FALL_BACK - timedelta(days=1), 3)
    assert [local(t) for t in got] == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]
    # Hourly: the repeated 01:00 fires once, so two real hours pass to 02:00.
    hourly = firings("0 * * * *", FALL_BACK, 1)
    assert [local(t) for t in hourly[:3]] == [
        "11-01 01:00 EDT",
        "11-01 02:00 EST",
        "11-01 03:00 EST",
    ]
    assert len(hourly) == 24 - 1  # 25 real hours, 24 wall-clock hours, midnight excluded


def test_the_zone_changes_the_instant() -> None:
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert next_run_time("0 9 * * *", now, now) == datetime(2026, 7, 2, 9, 0, tzinfo=UTC)
    # 09:00 in New York in July is 13:00 UTC, still ahead today.
    assert next_run_time("0 9 * * *", now, now, NEW_YORK) == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert next_run_time("0 9 * * *", now, now, fixed) == datetime(2026, 7, 2, 3, 30, tzinfo=UTC)


def test_periodic_job_time_zone_setting() -> None:
    job = rivertrio.PeriodicJob("30 2 * * *", lambda: None, timezone="America/New_York")
    assert job.timezone == NEW_YORK
    assert rivertrio.PeriodicJob("0 0 * * *", lambda: None, timezone=UTC).timezone is UTC
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not a known time zone"):
        rivertrio.PeriodicJob("0 0 * * *", lambda: None, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="applies to cron expressions only"):
        rivertrio.PeriodicJob(60, lambda: None, timezone="UTC")
    with pytest.raises(ConfigError, match="must be a time zone name or a tzinfo, not int"):
        rivertrio.PeriodicJob("0 0 * * *", lambda: None, timezone=5)  # type: ignore[arg-type]
