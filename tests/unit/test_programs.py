"""The ``requires_program`` mark: skip where a system program is missing, fail under CI."""

from __future__ import annotations

import dataclasses

import pytest

from support import programs

MARKED_TESTS = """
import pytest

@pytest.mark.requires_program("rt-absent")
def test_needs_the_absent_one():
    pass

@pytest.mark.requires_program("rt-present")
def test_needs_the_present_one():
    pass
"""


@pytest.fixture
def marked(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A test file needing one absent and one present program, neither run as a server."""
    absent = programs.Program("rt-absent", lambda: None, "apt-get install -y rt-absent", False)
    present = programs.Program("rt-present", lambda: "/bin/sh", "apt-get install -y sh", False)
    monkeypatch.setitem(programs.PROGRAMS, "rt-absent", absent)
    monkeypatch.setitem(programs.PROGRAMS, "rt-present", present)
    pytester.makepyfile(MARKED_TESTS)
    return pytester


def test_a_missing_program_skips_with_the_install_command(
    marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(programs.REQUIRE_ENV, raising=False)
    result = marked.runpytest("-p", "support.programs", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * rt-absent not found: apt-get install -y rt-absent"])


def test_under_ci_a_missing_program_fails_instead(
    marked: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(programs.REQUIRE_ENV, "1")
    result = marked.runpytest("-p", "support.programs")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [f"*rt-absent not found: apt-get install -y rt-absent ({programs.REQUIRE_ENV}=1*"]
    )


@pytest.mark.parametrize("name", sorted(programs.PROGRAMS))
def test_each_program_is_named_with_its_install_command(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = programs.PROGRAMS[name]
    monkeypatch.setitem(programs.PROGRAMS, name, dataclasses.replace(real, find=lambda: None))
    reason = programs.missing(name)
    assert reason is not None
    assert reason.startswith(f"{real.what} not found: apt-get install -y ")
