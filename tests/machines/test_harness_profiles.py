"""rivertrio.testing's Hypothesis profiles, and replaying a failure from its printed blob."""

from __future__ import annotations

import ast
import re
from datetime import timedelta

import pytest
from hypothesis import reproduce_failure, settings
from hypothesis.stateful import run_state_machine_as_test
from test_harness_pipeline import LosesItems, RelayMachine, story

from rivertrio.testing import CI_PROFILE, LONG_PROFILE, LostItemError, register_profiles


def test_the_profiles_are_registered() -> None:
    register_profiles()
    register_profiles()  # again: harmless
    ci, long = settings.get_profile(CI_PROFILE), settings.get_profile(LONG_PROFILE)
    assert (ci.max_examples, ci.stateful_step_count, ci.deadline) == (
        100,
        20,
        timedelta(seconds=1),
    )
    assert (long.max_examples, long.stateful_step_count, long.deadline) == (5000, 50, None)
    assert ci.print_blob and long.print_blob


class LosesItemsMachine(RelayMachine):
    relay = LosesItems


def test_a_failure_under_the_ci_profile_prints_a_blob_that_replays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    register_profiles()
    ci = settings(settings.get_profile(CI_PROFILE), database=None, derandomize=True)
    with pytest.raises(LostItemError) as caught:
        run_state_machine_as_test(LosesItemsMachine, settings=ci)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "Explanation" not in notes
    found = re.search(r"@reproduce_failure\('([^']+)', (b'[^']*')\)", notes)
    assert found is not None, notes
    version, blob = found[1], ast.literal_eval(found[2])

    # What the printed line tells a developer to do: decorate the machine with it.
    replay = reproduce_failure(version, blob)(type("Replay", (LosesItemsMachine,), {}))
    capsys.readouterr()
    with pytest.raises(LostItemError, match=re.escape(str(caught.value))):
        run_state_machine_as_test(replay, settings=settings(ci, max_examples=1))
    # A replay prints its steps rather than attaching them to the exception.
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("state.")]
    assert printed == [f"state.{step}" for step in story(caught.value)] + ["state.teardown()"]
