"""Unique jobs: options, the ``unique_key`` hash and the ``unique_states`` bitmask.

The key is River's, byte for byte, so that River and rivertrio inserting the
same unique job into one database see the same key: the sha256 (32 raw bytes)
of ``&kind=<kind>`` (unless ``exclude_kind``), ``&args=<json>`` (``by_args``),
``&period=<t>`` (``by_period``: the job's ``scheduled_at`` if it has one, else
the insert time, truncated to the period, RFC 3339 UTC) and ``&queue=<queue>``
(``by_queue``), in that order.

With ``by_args`` the JSON is the args with their top-level keys sorted, or, when
the args class marks some fields unique (``field(metadata={"river":
"unique"})`` or ``Annotated[..., rivertrio.Unique]``), only those fields, as
River keeps only the fields tagged ``river:"unique"``. Values are written as
Go's ``encoding/json`` writes them, since River hashes the JSON Go produced.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeAlias

from ._exceptions import InvalidInputError
from ._job import JobState
from ._validate import duration, member

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "REQUIRED_UNIQUE_STATES",
    "UniqueOpts",
    "sorted_args_json",
    "truncate_to_period",
    "unique_fields_json",
    "unique_key",
    "unique_key_string",
    "unique_states_bitmask",
]

# Bit of each state in the bit(8) column, counted from the right (the byte's
# value); Postgres' get_bit numbers the same bits from the left (available is
# bit 7, scheduled bit 0).
_STATE_BITS: dict[JobState, int] = {
    JobState.AVAILABLE: 0x01,
    JobState.CANCELLED: 0x02,
    JobState.COMPLETED: 0x04,
    JobState.DISCARDED: 0x08,
    JobState.PENDING: 0x10,
    JobState.RETRYABLE: 0x20,
    JobState.RUNNING: 0x40,
    JobState.SCHEDULED: 0x80,
}

#: Every state but cancelled and discarded (bitmask 0xF5).
DEFAULT_UNIQUE_STATES: frozenset[JobState] = frozenset(JobState) - {
    JobState.CANCELLED,
    JobState.DISCARDED,
}

#: States a unique job must always be unique in: the states it is inserted in or
#: passes through, or the unique index would let duplicates through.
REQUIRED_UNIQUE_STATES: frozenset[JobState] = frozenset(
    {JobState.AVAILABLE, JobState.PENDING, JobState.RUNNING, JobState.SCHEDULED}
)

MIN_PERIOD = 1.0

# Go's Time.Truncate rounds down to a multiple of the period since Go's zero
# time (year 1), not since the Unix epoch; River builds the key with it, and
# the two differ for periods that do not divide a day.
_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _states(value: object) -> frozenset[JobState]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"UniqueOpts.by_state must be a collection of job states, not {type(value).__name__}"
        )
    return frozenset(
        member("UniqueOpts.by_state", item, JobState, InvalidInputError, what="a job state")
        for item in value
    )


@dataclass(frozen=True, slots=True)
class UniqueOpts:
    """Makes an insert unique: a job with the same key in one of `by_state` blocks it.

    As in River, options with nothing set (``UniqueOpts()``) make no uniqueness.

    Args:
        by_args: Include the args in the key: every top-level key, sorted, or
            only the fields the args class marks unique (`unique_fields`).
        by_period: Unique within periods of this many seconds (at least 1):
            the job's ``scheduled_at`` if set, else the insert time, rounded
            down to the period (as River does).
        by_queue: Include the queue in the key.
        by_state: The states in which an existing job blocks the insert; must
            include available, pending, running and scheduled. Default: every
            state but cancelled and discarded.
        exclude_kind: Leave the kind out of the key (unique across kinds).

    Raises:
        InvalidInputError: `by_period` is under 1 s, or `by_state` misses a required
            state or holds something that is not a state.
    """

    by_args: bool = False
    by_period: float | None = None
    by_queue: bool = False
    by_state: Collection[JobState | str] | None = None
    exclude_kind: bool = False

    def __post_init__(self) -> None:
        for name in ("by_args", "by_queue", "exclude_kind"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"UniqueOpts.{name} must be a bool")
        period = duration(
            "UniqueOpts.by_period",
            self.by_period,
            InvalidInputError,
            at_least=MIN_PERIOD,
            none="for no period",
        )
        object.__setattr__(self, "by_period", period)
        if self.by_state is not None:
            states = _states(self.by_state)
            missing = REQUIRED_UNIQUE_STATES - states
            if missing:
                raise InvalidInputError(
                    "UniqueOpts.by_state must include available, pending, running and "
                    f"scheduled; missing: {', '.join(sorted(missing))}"
                )
            object.__setattr__(self, "by_state", states)

    @property
    def is_empty(self) -> bool:
        """True when nothing is set: such options make no uniqueness (as in River)."""
        return (
            not self.by_args
            and self.by_period is None
            and not self.by_queue
            and self.by_state is None
            and not self.exclude_kind
        )

    @property
    def states_bitmask(self) -> int:
        """The ``unique_states`` byte for these options."""
        return unique_states_bitmask(
            DEFAULT_UNIQUE_STATES if self.by_state is None else self.by_state
        )


def unique_states_bitmask(states: Iterable[JobState | str]) -> int:
    """The ``unique_states`` byte of a set of states (0xF5 for the default set)."""
    mask = 0
    for state in states:
        mask |= _STATE_BITS[JobState(state)]
    return mask


# Go's json.Marshal, which encodes River's args, writes non-ASCII text as is but
# escapes these for HTML safety; writing strings the same way keeps keys equal.
_GO_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GO_ESCAPES)


def _go_float(value: float) -> str:
    # Go writes the shortest digits that read back as the same float, as Python's
    # repr does, but in plain notation from 1e-6 up to 1e21 ("1", not "1.0"), and
    # elsewhere with an exponent, a negative one without a leading zero ("1e-7",
    # "1e+21").
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        return format(Decimal(repr(value)).normalize(), "f")
    mantissa, exponent = repr(value).split("e")
    sign, digits = exponent[0], exponent[1:].lstrip("0")
    if sign == "+" or len(digits) >= 2:
        return f"{mantissa}e{sign}{digits.rjust(2, '0')}"
    return f"{mantissa}e-{digits}"


def _go_json(value: object) -> str:
    """`value` as Go's ``json.Marshal`` writes the same JSON value: compact."""
    if isinstance(value, str):
        return _go_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return "{" + ",".join(_go_string(k) + ":" + _go_json(v) for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    raise InvalidInputError(f"{type(value).__name__} is not a JSON value")


def _object_key(key: str) -> str:
    # River writes the keys of the object it hashes as sjson did: verbatim between
    # quotes, unless one has a control character, a non-ASCII character, a quote
    # or a backslash; only then as Go's encoder writes a string.
    if all(" " <= c <= "\x7f" and c not in '"\\' for c in key):
        return '"' + key + '"'
    return _go_string(key)


def _write_object(pairs: Iterable[tuple[str, object]]) -> str:
    return "{" + ",".join(_object_key(k) + ":" + _go_json(v) for k, v in pairs) + "}"


def _decode_object(encoded_args: str) -> dict[str, object]:
    data = json.loads(encoded_args)
    if not isinstance(data, dict):
        raise InvalidInputError("job args must encode to a JSON object")
    return data


def sorted_args_json(encoded_args: str) -> str:
    """The args JSON object with its top-level keys sorted, compact (as River hashes it).

    Nested values keep their own key order, as in River.
    """
    data = _decode_object(encoded_args)
    return _write_object((key, data[key]) for key in sorted(data))


def unique_fields_json(encoded_args: str, fields: Iterable[tuple[str, ...]]) -> str:
    """The args JSON reduced to the unique fields' paths (in their order), as River builds it.

    A path whose value is missing is left out; with every one missing the text
    is empty (River then hashes ``&args=`` alone).
    """
    data = _decode_object(encoded_args)
    # Each path is set in turn on an object that starts empty, as River sets
    # them one by one: nested objects in insertion order, leaves written as JSON.
    built: _Node = {}
    for path in fields:
        value: object = data
        for name in path:
            if not isinstance(value, dict) or name not in value:
                break
            value = value[name]
        else:
            node = built
            for name in path[:-1]:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise InvalidInputError(f"unique field paths overlap at {'.'.join(path)!r}")
                node = child
            node[path[-1]] = _go_json(value)
    return _write_node(built) if built else ""


_Node: TypeAlias = "dict[str, str | _Node]"


def _write_node(node: _Node) -> str:
    parts = (
        _object_key(k) + ":" + (v if isinstance(v, str) else _write_node(v))
        for k, v in node.items()
    )
    return "{" + ",".join(parts) + "}"


def truncate_to_period(when: datetime, period: float) -> datetime:
    """Round `when` down to a multiple of `period` seconds, as Go's ``Time.Truncate`` does."""
    if when.tzinfo is None:
        raise InvalidInputError("the unique period's time must be timezone-aware")
    period_us = round(period * 1_000_000)
    elapsed_us = (when.astimezone(UTC) - _GO_ZERO_TIME) // _MICROSECOND
    return _GO_ZERO_TIME + timedelta(microseconds=elapsed_us - elapsed_us % period_us)


def unique_key_string(
    opts: UniqueOpts,
    *,
    kind: str,
    encoded_args: str,
    queue: str,
    now: datetime,
    scheduled_at: datetime | None = None,
    fields: Sequence[tuple[str, ...]] = (),
) -> str:
    """The string whose sha256 is the unique key (River's, byte for byte).

    Args:
        opts: The unique options.
        kind: The job's kind.
        encoded_args: The args as stored (a JSON object).
        queue: The job's queue.
        now: The insert time; the period counts from it unless `scheduled_at` is set.
        scheduled_at: The job's requested ``scheduled_at``, if any.
        fields: The paths of the args class's unique fields (see `unique_fields`);
            none: every top-level key counts.
    """
    parts: list[str] = []
    if not opts.exclude_kind:
        parts.append("&kind=" + kind)
    if opts.by_args:
        if fields:
            parts.append("&args=" + unique_fields_json(encoded_args, fields))
        else:
            parts.append("&args=" + sorted_args_json(encoded_args))
    if opts.by_period is not None:
        bound = truncate_to_period(scheduled_at or now, opts.by_period)
        # RFC 3339 in UTC without fractions, as Go's time.RFC3339 formats it.
        parts.append("&period=" + bound.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if opts.by_queue:
        parts.append("&queue=" + queue)
    return "".join(parts)


def unique_key(
    opts: UniqueOpts,
    *,
    kind: str,
    encoded_args: str,
    queue: str,
    now: datetime,
    scheduled_at: datetime | None = None,
    fields: Sequence[tuple[str, ...]] = (),
) -> bytes:
    """The 32-byte ``unique_key`` of a job (see `unique_key_string` for the arguments)."""
    text = unique_key_string(
        opts,
        kind=kind,
        encoded_args=encoded_args,
        queue=queue,
        now=now,
        scheduled_at=scheduled_at,
        fields=fields,
    )
    return hashlib.sha256(text.encode()).digest()
