"""Hypothesis settings profiles for the service checks: one for CI, one for nightly runs."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, Phase, settings

__all__ = ["CI_PROFILE", "LONG_PROFILE", "register_profiles"]

CI_PROFILE = "rivertrio-ci"
"""Name of the CI profile: 100 examples of up to 20 steps, a 1 s deadline."""

LONG_PROFILE = "rivertrio-long"
"""Name of the nightly profile: 5,000 examples of up to 50 steps, no deadline."""


def register_profiles() -> None:
    """Register the Hypothesis profiles ``"rivertrio-ci"`` and ``"rivertrio-long"``.

    Both print the ``@reproduce_failure(...)`` line of a failure (``print_blob``), so
    a failure seen in CI replays on your machine; neither complains about slow
    data generation (each step of a service check runs real Trio code), and neither
    runs Hypothesis's explain phase (for these machines it only points at Trio's
    thread plumbing).

    - ``"rivertrio-ci"``: 100 examples of up to 20 steps each; a 1 s deadline. For
      a state machine Hypothesis times the machine's creation and teardown, not
      its steps; the machines bound each step themselves.
    - ``"rivertrio-long"``: 5,000 examples of up to 50 steps each, no deadline
      (nightly machines are often loaded).

    Load one in ``conftest.py`` (``settings.load_profile("rivertrio-ci")``) or pick
    one per run with ``pytest --hypothesis-profile=rivertrio-long``. Registering
    again is harmless.
    """
    quiet = [HealthCheck.too_slow]
    # No explain phase: for a state machine whose steps run in a Trio thread it
    # only points at Trio's thread plumbing, under the story that matters.
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
    settings.register_profile(
        CI_PROFILE,
        max_examples=100,
        stateful_step_count=20,
        deadline=timedelta(seconds=1),
        print_blob=True,
        suppress_health_check=quiet,
        phases=phases,
    )
    settings.register_profile(
        LONG_PROFILE,
        max_examples=5000,
        stateful_step_count=50,
        deadline=None,
        print_blob=True,
        suppress_health_check=quiet,
        phases=phases,
    )
