"""Times relative to now, as the dashboard and the command line both write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rivertrio._util import relative_time

NOW = datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (0, "just now"),
        (-0.9, "just now"),
        (0.9, "just now"),
        (-1, "1s ago"),
        (-59, "59s ago"),
        (-60, "1m ago"),
        # Whole units, rounded down: 119 s is not yet two minutes.
        (-119, "1m ago"),
        (-3599, "59m ago"),
        (-3600, "1h ago"),
        (7200, "in 2h"),
        (-86399, "23h ago"),
        (-86400, "1d ago"),
        (3 * 86400 + 5, "in 3d"),
    ],
)
def test_relative_time(offset: float, text: str) -> None:
    assert relative_time(NOW + timedelta(seconds=offset), NOW) == text


def test_any_time_zone_reads_the_same() -> None:
    later = (NOW + timedelta(minutes=5)).astimezone(datetime.now().astimezone().tzinfo)
    assert relative_time(later, NOW) == "in 5m"
