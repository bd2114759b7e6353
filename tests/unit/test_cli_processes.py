"""``--processes``: a number of worker processes, or ``auto`` for one per available core."""

from __future__ import annotations

import os

import click
import pytest

from rivertrio._cli.worker import MAX_PROCESSES, ProcessCount, available_cores


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("4", 4), (" 2 ", 2), (3, 3)])
def test_a_number_is_taken_as_is(given: object, expected: int) -> None:
    assert ProcessCount().convert(given, None, None) == expected


@pytest.mark.parametrize("given", ["auto", "AUTO", " Auto "])
def test_auto_is_one_per_available_core(given: str) -> None:
    assert ProcessCount().convert(given, None, None) == available_cores()
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0", "0 is not between 1 and"),
        (str(MAX_PROCESSES + 1), "is not between 1 and"),
        ("-2", "is not between 1 and"),
        ("two", "'two' is not a number of processes, nor 'auto'"),
        ("1.5", "is not a number of processes"),
    ],
)
def test_anything_else_is_refused(given: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        ProcessCount().convert(given, None, None)
