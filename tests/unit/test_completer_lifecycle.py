"""The completer and its subscription pipeline without a database: settings and lifecycle.

The completer is given a driver that fails the test if it is ever called: these
tests send no outcomes, so nothing may reach the database.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import settings

from rivertrio import ConfigError
from rivertrio._completer import Completer
from rivertrio._subscriptions import SubscriptionManager
from rivertrio.testing import ServiceLifecycleMachine, stress_start_stop
from support.completion import Pipeline


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("backlog", -1),
        ("max_attempts", 0),
        ("flush_interval", 0),
        ("flush_interval", math.nan),
        ("attempt_timeout", -1.0),
        ("final_flush_timeout", math.inf),
        ("retry_backoff", -0.1),
    ],
)
def test_bad_settings_raise_config_error_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        Completer(_NoDatabase(), **{name: value})  # type: ignore[arg-type]


class _NoDatabase:
    """A driver for lifecycle tests that send no outcomes: any call is a test failure."""

    configured_schema = None

    async def run(self, *args: object) -> Any:
        raise AssertionError("no database call expected")


async def test_stress_start_stop_completer() -> None:
    await stress_start_stop(lambda: Completer(_NoDatabase()), tasks=10, rounds=50)


async def test_stress_start_stop_completer_and_manager() -> None:
    await stress_start_stop(
        lambda: Pipeline(Completer(_NoDatabase()), SubscriptionManager()), tasks=10, rounds=30
    )


class CompleterLifecycle(ServiceLifecycleMachine[Completer]):
    stop_timeout = 5.0

    def make_service(self) -> Completer:
        return Completer(_NoDatabase())


class PipelineLifecycle(ServiceLifecycleMachine[Pipeline]):
    stop_timeout = 5.0

    def make_service(self) -> Pipeline:
        return Pipeline(Completer(_NoDatabase()), SubscriptionManager())


TestCompleterLifecycle = CompleterLifecycle.TestCase
TestCompleterLifecycle.settings = settings(max_examples=30, stateful_step_count=15)
TestPipelineLifecycle = PipelineLifecycle.TestCase
TestPipelineLifecycle.settings = settings(max_examples=30, stateful_step_count=15)
