"""Unique jobs: options, the ``unique_key`` hash and the ``unique_states`` bitmask.

The key is River's, byte for byte (SCHEMA.md, "Unique jobs"), so that River and
rivertrio inserting the same unique job into one database see the same key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ._exceptions import InvalidInputError
from ._job import JobState

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "REQUIRED_UNIQUE_STATES",
    "UniqueOpts",
    "sorted_args_json",
    "truncate_to_period",
    "unique_key",
    "unique_key_string",
    "unique_states_bitmask",
]

# Bit of each state in the bit(8) column, counted from the right (the byte's
# value); SCHEMA.md numbers them from the left as Postgres' get_bit does.
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
    states: set[JobState] = set()
    for item in value:
        try:
            states.add(JobState(item))
        except ValueError:
            raise InvalidInputError(
                f"UniqueOpts.by_state holds {item!r}, which is not a job state "
                f"(states: {', '.join(sorted(JobState))})"
            ) from None
    return frozenset(states)


@dataclass(frozen=True, slots=True)
class UniqueOpts:
    """Makes an insert unique: a job with the same key in one of `by_state` blocks it.

    As in River, options with nothing set (``UniqueOpts()``) make no uniqueness.

    Args:
        by_args: Include the args (top-level keys sorted) in the key.
        by_period: Unique within periods of this many seconds (at least 1),
            counted from the insert time rounded down to the period.
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
        period = self.by_period
        if period is not None:
            if isinstance(period, bool) or not isinstance(period, int | float):
                raise InvalidInputError(
                    f"UniqueOpts.by_period must be a number of seconds, not {type(period).__name__}"
                )
            seconds = float(period)
            if not math.isfinite(seconds) or seconds < MIN_PERIOD:
                raise InvalidInputError(
                    f"UniqueOpts.by_period must be at least 1 second, got {period!r}"
                )
            object.__setattr__(self, "by_period", seconds)
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


def _compact_json(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_GO_ESCAPES)


def sorted_args_json(encoded_args: str) -> str:
    """The args JSON object with its top-level keys sorted, compact (as River hashes it).

    Nested values keep their own key order, as in River. Strings are written as
    Go's encoder writes them (UTF-8, with ``<``, ``>`` and ``&`` escaped), so River
    and rivertrio agree on the key of the same args; floats are written Python's
    way (``1.0`` where Go writes ``1``).
    """
    data = json.loads(encoded_args)
    if not isinstance(data, dict):
        raise InvalidInputError("job args must encode to a JSON object")
    parts = [_compact_json(key) + ":" + _compact_json(data[key]) for key in sorted(data)]
    return "{" + ",".join(parts) + "}"


def truncate_to_period(when: datetime, period: float) -> datetime:
    """Round `when` down to a multiple of `period` seconds, as Go's ``Time.Truncate`` does."""
    if when.tzinfo is None:
        raise InvalidInputError("the unique period's time must be timezone-aware")
    period_us = round(period * 1_000_000)
    elapsed_us = (when.astimezone(UTC) - _GO_ZERO_TIME) // _MICROSECOND
    return _GO_ZERO_TIME + timedelta(microseconds=elapsed_us - elapsed_us % period_us)


def unique_key_string(
    opts: UniqueOpts, *, kind: str, encoded_args: str, queue: str, now: datetime
) -> str:
    """The string whose sha256 is the unique key (SCHEMA.md, "Unique jobs")."""
    parts: list[str] = []
    if not opts.exclude_kind:
        parts.append("&kind=" + kind)
    if opts.by_args:
        parts.append("&args=" + sorted_args_json(encoded_args))
    if opts.by_period is not None:
        bound = truncate_to_period(now, opts.by_period)
        # RFC 3339 in UTC without fractions, as Go's time.RFC3339 formats it.
        parts.append("&period=" + bound.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if opts.by_queue:
        parts.append("&queue=" + queue)
    return "".join(parts)


def unique_key(
    opts: UniqueOpts, *, kind: str, encoded_args: str, queue: str, now: datetime
) -> bytes:
    """The 32-byte ``unique_key`` of a job; `now` is the insert time (timezone-aware)."""
    text = unique_key_string(opts, kind=kind, encoded_args=encoded_args, queue=queue, now=now)
    return hashlib.sha256(text.encode()).digest()
