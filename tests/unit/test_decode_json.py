"""`decode_json`: json.loads for the text Postgres hands back, faster, with the same answers."""

from __future__ import annotations

import json

import pytest

from rivertrio._job import decode_json

CASES = [
    "{}",
    '{"a": 1, "b": [1, 2.5, "x"], "c": {"d": null}, "e": true}',
    '"text"',
    "[1]",
    "1e5",
    "NaN",
    " {}",  # whitespace around a value: json.loads reads it too
    "{} ",
    '{"é": "\\u00e9"}',
]


@pytest.mark.parametrize("text", CASES)
def test_same_value_as_json_loads(text: str) -> None:
    value = decode_json(text)
    assert value == json.loads(text) or (value != value and text == "NaN")


@pytest.mark.parametrize("text", ["", "{", '{"a":', "nope", "{} x", "[1,]"])
def test_same_error_as_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        decode_json(text)
    assert str(got.value) == str(expected.value)


def test_deep_nesting_fails_as_json_loads_does() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        decode_json(deep)
