"""`Config.insert_coalesce_window`: seconds, 0 (off) up to 1; anything else is refused by name."""

from __future__ import annotations

import math

import pytest

from rivertrio import Config, ConfigError


@pytest.mark.parametrize("window", [0, 0.0, 0.0002, 1])
def test_valid_windows_are_kept(window: float) -> None:
    assert Config(insert_coalesce_window=window).insert_coalesce_window == window


def test_the_default_is_a_few_hundred_microseconds() -> None:
    assert 0 < Config().insert_coalesce_window <= 0.001


@pytest.mark.parametrize("window", [-0.001, math.inf, math.nan, "0.1", None, True])
def test_invalid_windows_are_refused_naming_the_field(window: object) -> None:
    with pytest.raises(ConfigError, match="insert_coalesce_window"):
        Config(insert_coalesce_window=window)  # type: ignore[arg-type]


def test_a_window_over_a_second_is_refused() -> None:
    with pytest.raises(ConfigError, match="insert_coalesce_window must be at most 1 second"):
        Config(insert_coalesce_window=2)
