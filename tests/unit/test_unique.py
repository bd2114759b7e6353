"""Unique options, the unique key and the unique-states bitmask, byte for byte River's."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rivertrio import InvalidInputError
from rivertrio._job import JobState
from rivertrio._unique import (
    DEFAULT_UNIQUE_STATES,
    UniqueOpts,
    sorted_args_json,
    truncate_to_period,
    unique_key,
    unique_key_string,
    unique_states_bitmask,
)

NOW = datetime(2026, 11, 28, 10, 17, 42, 123456, tzinfo=UTC)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_hex(opts: UniqueOpts, *, kind: str, args: str, queue: str, now: datetime = NOW) -> str:
    return unique_key(opts, kind=kind, encoded_args=args, queue=queue, now=now).hex()


# --- golden keys: the expected bytes come from the spec's string, hashed here ---


def test_golden_key_kind_only() -> None:
    # Only by_state set: the key is the kind alone.
    opts = UniqueOpts(by_state=DEFAULT_UNIQUE_STATES)
    expected = sha256_hex("&kind=email")
    assert expected == "1346252621dedb23f1053d0294b4c2615783fbe08a74336bce229f4f45624097"
    assert key_hex(opts, kind="email", args='{"to":"a"}', queue="default") == expected


def test_golden_key_every_part_in_order() -> None:
    opts = UniqueOpts(by_args=True, by_period=3600, by_queue=True)
    args = '{"c":{"z":1,"y":2},"b":[2,1],"a":1}'
    expected = sha256_hex(
        '&kind=email&args={"a":1,"b":[2,1],"c":{"z":1,"y":2}}'
        "&period=2026-11-28T10:00:00Z&queue=mail"
    )
    assert expected == "2b745024d9a79fffaef62859ff1e2d69613010ffb481de673e4d98715fb6d974"
    assert key_hex(opts, kind="email", args=args, queue="mail") == expected


def test_golden_key_excluding_kind() -> None:
    opts = UniqueOpts(by_args=True, exclude_kind=True)
    expected = sha256_hex('&args={"to":"x@y.z"}')
    assert expected == "b3b960c9a6c4dac9d757ba89613593ef98c3dd46de1502e503ea149f821b9532"
    assert key_hex(opts, kind="email", args='{"to":"x@y.z"}', queue="q") == expected


def test_golden_key_period_counts_from_go_zero_time() -> None:
    # River truncates with Go's Time.Truncate, which counts periods from year 1,
    # not from the Unix epoch: for 7 h periods, 10:17 falls in the one from 06:00
    # (it would be 08:00 counted from 1970).
    go_zero_to_unix = 62135596800
    unix = int(datetime(2026, 11, 28, 10, 17, tzinfo=UTC).timestamp())
    since_zero = unix + go_zero_to_unix
    bound = datetime.fromtimestamp(since_zero - since_zero % 25200 - go_zero_to_unix, UTC)
    assert bound == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    opts = UniqueOpts(by_period=7 * 3600)
    assert key_hex(opts, kind="report", args="{}", queue="default") == sha256_hex(
        "&kind=report&period=2026-11-28T06:00:00Z"
    )
    opts4 = UniqueOpts(by_period=4 * 3600)
    assert key_hex(opts4, kind="report", args="{}", queue="default") == (
        "a6e8a0c9db01e758d91f69f0aaea39da5337822179e42123e5c38a6ea025afe3"
    )


def test_golden_key_writes_strings_as_go_does() -> None:
    # River's args come from Go's json.Marshal: UTF-8 as is, < > & escaped.
    opts = UniqueOpts(by_args=True)
    args = json.dumps({"b": "<a&b>", "a": "été"})  # as encode_args writes it: ASCII only
    assert '"\\u00e9t\\u00e9"' in args
    expected = sha256_hex('&kind=k&args={"a":"été","b":"\\u003ca\\u0026b\\u003e"}')
    assert key_hex(opts, kind="k", args=args, queue="q") == expected


def test_key_string_parts() -> None:
    opts = UniqueOpts(by_args=True, by_period=60, by_queue=True)
    text = unique_key_string(opts, kind="k", encoded_args='{"b":1,"a":2}', queue="q", now=NOW)
    assert text == '&kind=k&args={"a":2,"b":1}&period=2026-11-28T10:17:00Z&queue=q'


def test_period_uses_utc_whatever_the_zone() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    opts = UniqueOpts(by_period=3600)
    assert unique_key_string(opts, kind="k", encoded_args="{}", queue="q", now=local) == (
        "&kind=k&period=2026-11-28T10:00:00Z"
    )


def test_period_bounds() -> None:
    assert truncate_to_period(NOW, 1) == NOW.replace(microsecond=0)
    assert truncate_to_period(NOW, 86400) == datetime(2026, 11, 28, tzinfo=UTC)
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        truncate_to_period(NOW.replace(tzinfo=None), 60)


# --- args sorted at the top level; periods under 1 s rejected ---


def test_by_args_sorts_top_level_keys_only() -> None:
    assert sorted_args_json('{"b":{"y":1,"x":2},"a":[3,1]}') == '{"a":[3,1],"b":{"y":1,"x":2}}'
    assert sorted_args_json("{}") == "{}"
    with pytest.raises(InvalidInputError, match="JSON object"):
        sorted_args_json("[1]")


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)),
        max_size=6,
    ),
    st.randoms(),
)
def test_by_args_key_ignores_top_level_order(data: dict[str, object], rnd: object) -> None:
    items = list(data.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    shuffled = json.dumps(dict(items), separators=(",", ":"))
    original = json.dumps(data, separators=(",", ":"))
    opts = UniqueOpts(by_args=True)
    assert key_hex(opts, kind="k", args=shuffled, queue="q") == key_hex(
        opts, kind="k", args=original, queue="q"
    )
    text = unique_key_string(opts, kind="k", encoded_args=original, queue="q", now=NOW)
    assert unique_key(opts, kind="k", encoded_args=original, queue="q", now=NOW) == (
        hashlib.sha256(text.encode()).digest()
    )


def test_by_args_distinguishes_values() -> None:
    opts = UniqueOpts(by_args=True)
    assert key_hex(opts, kind="k", args='{"a":1}', queue="q") != key_hex(
        opts, kind="k", args='{"a":2}', queue="q"
    )


@pytest.mark.parametrize("period", [0.999, 0, -5, float("nan"), float("-inf")])
def test_by_period_under_one_second_is_rejected(period: float) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^UniqueOpts\.by_period must be a finite number of seconds, at least 1",
    ):
        UniqueOpts(by_period=period)


def test_by_period_of_wrong_type_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="by_period must be a finite number of seconds"):
        UniqueOpts(by_period="60")  # type: ignore[arg-type]
    assert UniqueOpts(by_period=1).by_period == 1.0


# --- unique states: the required ones, the bitmask ---


def test_default_unique_states_are_0xf5() -> None:
    assert UniqueOpts(by_args=True).states_bitmask == 0xF5
    assert unique_states_bitmask(DEFAULT_UNIQUE_STATES) == 0xF5
    assert format(0xF5, "08b") == "11110101"


@pytest.mark.parametrize(
    ("extra", "mask"),
    [
        (set(), 0x01 | 0x10 | 0x40 | 0x80),
        ({JobState.CANCELLED}, 0xD1 | 0x02),
        ({JobState.COMPLETED}, 0xD1 | 0x04),
        ({JobState.DISCARDED}, 0xD1 | 0x08),
        ({JobState.RETRYABLE}, 0xD1 | 0x20),
        (set(JobState), 0xFF),
    ],
)
def test_custom_unique_states_map_per_schema(extra: set[JobState], mask: int) -> None:
    required = {JobState.AVAILABLE, JobState.PENDING, JobState.RUNNING, JobState.SCHEDULED}
    assert UniqueOpts(by_state=required | extra).states_bitmask == mask


def test_by_state_accepts_state_names() -> None:
    opts = UniqueOpts(by_state=["available", "pending", "running", "scheduled", "completed"])
    assert opts.by_state == frozenset(
        {
            JobState.AVAILABLE,
            JobState.PENDING,
            JobState.RUNNING,
            JobState.SCHEDULED,
            JobState.COMPLETED,
        }
    )
    assert opts.states_bitmask == 0xD5


def test_by_state_missing_required_states_names_them() -> None:
    with pytest.raises(InvalidInputError, match=r"missing: pending, running$"):
        UniqueOpts(by_state=[JobState.AVAILABLE, JobState.SCHEDULED, JobState.COMPLETED])
    with pytest.raises(InvalidInputError, match="missing: available, pending, running, scheduled"):
        UniqueOpts(by_state=[])


def test_by_state_rejects_non_states() -> None:
    with pytest.raises(InvalidInputError, match=r"UniqueOpts\.by_state: 'done' is not a job state"):
        UniqueOpts(by_state=["available", "pending", "running", "scheduled", "done"])
    with pytest.raises(InvalidInputError, match="collection of job states"):
        UniqueOpts(by_state="available")


def test_empty_options_make_no_uniqueness() -> None:
    assert UniqueOpts().is_empty
    assert not UniqueOpts(exclude_kind=True).is_empty
    assert not UniqueOpts(by_state=DEFAULT_UNIQUE_STATES).is_empty


def test_flags_must_be_bools() -> None:
    with pytest.raises(InvalidInputError, match="by_args must be a bool"):
        UniqueOpts(by_args=1)  # type: ignore[arg-type]
