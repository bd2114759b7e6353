"""The small rules that settings and call arguments follow, each written once.

A duration is a finite number of seconds (an int or a float, never a bool); an
integer is an int (never a bool) within bounds; a queue name follows River's
rule; a schema name is any text Postgres can hold as an identifier (every SQL
statement quotes it). Each checking function
returns the value as the caller stores it, or raises the error class the caller
names (`ConfigError` for configuration, `InvalidInputError` for call input,
`ValueError` for the testing helpers) with a message that names the field and
states the whole rule.

This module imports nothing from the rest of the package, so any module may use it.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar, overload

__all__ = [
    "BIGINT_MAX",
    "MAX_ATTEMPTS",
    "MAX_PRIORITY",
    "MAX_QUEUE_NAME_LENGTH",
    "MIN_PRIORITY",
    "duration",
    "integer",
    "job_id",
    "max_attempts",
    "member",
    "priority",
    "queue_name",
    "queue_name_problem",
    "schema_name_problem",
]

#: How a caller names the error to raise: an exception class taking a message.
ErrorType = Callable[[str], Exception]

E = TypeVar("E", bound=enum.Enum)

#: The largest value of a Postgres bigint: job ids, and the limits sent with them.
BIGINT_MAX = 2**63 - 1
#: river_job.max_attempts is a smallint.
MAX_ATTEMPTS = 32767
MIN_PRIORITY, MAX_PRIORITY = 1, 4
MAX_QUEUE_NAME_LENGTH = 64
_MAX_IDENTIFIER = 63  # bytes: Postgres' NAMEDATALEN - 1

# River documents its rule as ^[a-z0-9]+(?:[_-]?[a-z0-9]+)*$. That form
# backtracks exponentially on a near-miss such as "aaaa...a!"; this one accepts
# exactly the same names (alphanumeric runs joined by single '_' or '-') in
# linear time.
_QUEUE_NAME = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")


def _got(value: object) -> str:
    try:
        shown = repr(value)
    except ValueError:  # an int past Python's limit on digits to print
        shown = "a huge int"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(value, int | float) and not isinstance(value, bool):
        return shown
    return f"{shown} (a {type(value).__name__})"


def _reject(
    name: str, value: object, error: ErrorType, rule: str, none: str | None, hint: str
) -> NoReturn:
    """Raise `error` saying what `name` must be (None too, when `none` allows it)."""
    if none is not None:
        rule += f", or None {none}"
    raise error(f"{name} must be {rule}; got {_got(value)}{hint}")


def _seconds(value: object) -> float | None:
    """`value` as a finite float, or None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return seconds if math.isfinite(seconds) else None


@overload
def duration(
    name: str, value: object, error: ErrorType, *, at_least: float | None = None, hint: str = ""
) -> float: ...


@overload
def duration(
    name: str,
    value: object,
    error: ErrorType,
    *,
    at_least: float | None = None,
    none: str | None,
    hint: str = "",
) -> float | None: ...


def duration(
    name: str,
    value: object,
    error: ErrorType,
    *,
    at_least: float | None = None,
    none: str | None = None,
    hint: str = "",
) -> float | None:
    """Check a duration: a finite number of seconds, greater than 0 by default.

    Args:
        name: The field, as the message names it.
        value: What the caller passed.
        error: The exception class to raise.
        at_least: The smallest value allowed (0 allows zero); None means above 0.
        none: Allow None, which means this (e.g. ``"for no limit"``).
        hint: Appended to the message.

    Returns:
        The duration as a float, or None when `none` allows it.
    """
    if value is None and none is not None:
        return None
    seconds = _seconds(value)
    if seconds is not None and (seconds > 0 if at_least is None else seconds >= at_least):
        return seconds
    if at_least is None:
        bound = "greater than 0"
    elif at_least == 0:
        bound = "0 or more"
    else:
        bound = f"at least {at_least:g}"
    _reject(name, value, error, f"a finite number of seconds, {bound}", none, hint)


@overload
def integer(
    name: str,
    value: object,
    error: ErrorType,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    hint: str = "",
) -> int: ...


@overload
def integer(
    name: str,
    value: object,
    error: ErrorType,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    none: str | None,
    hint: str = "",
) -> int | None: ...


def integer(
    name: str,
    value: object,
    error: ErrorType,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    none: str | None = None,
    hint: str = "",
) -> int | None:
    """Check an integer: an int (not a bool) from `minimum` to `maximum` (if any).

    Args:
        name: The field, as the message names it.
        value: What the caller passed.
        error: The exception class to raise.
        minimum: The smallest value allowed.
        maximum: The largest value allowed; None for no bound.
        none: Allow None, which means this (e.g. ``"for no limit"``).
        hint: Appended to the message.

    Returns:
        The int, or None when `none` allows it.
    """
    if value is None and none is not None:
        return None
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        return value
    if maximum is None:
        rule = f"an int, {minimum:,} or more"
    elif maximum == BIGINT_MAX:
        rule = f"an int from {minimum:,} to 2**63 - 1"
    else:
        rule = f"an int from {minimum:,} to {maximum:,}"
    _reject(name, value, error, rule, none, hint)


def job_id(value: object, error: ErrorType, name: str = "job id") -> int:
    """Check a job id: a positive int that fits river_job.id (a bigint)."""
    return integer(name, value, error, maximum=BIGINT_MAX)


def member(
    name: str,
    value: object,
    kind: type[E],
    error: ErrorType,
    *,
    what: str,
    shown: Iterable[E] | None = None,
) -> E:
    """Check a member of the enum `kind`, given as itself or as its value.

    Args:
        name: The field, as the message names it.
        value: What the caller passed.
        kind: The enum.
        error: The exception class to raise.
        what: What a member is, for the message (``"a job state"``).
        shown: The members the message lists, in that order; default all of them.
    """
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(str(m.value) for m in (kind if shown is None else shown))
        raise error(f"{name}: {value!r} is not {what} (one of {valid})") from None


def priority(value: object, error: ErrorType) -> int:
    """Check a job priority: an int from 1 (first) to 4, as River allows."""
    return integer("priority", value, error, minimum=MIN_PRIORITY, maximum=MAX_PRIORITY)


def max_attempts(value: object, error: ErrorType) -> int:
    """Check a job's max attempts: an int from 1 to 32,767 (a smallint column)."""
    return integer("max_attempts", value, error, maximum=MAX_ATTEMPTS)


def queue_name_problem(value: object) -> str | None:
    """Why `value` is not a valid queue name, or None if it is.

    River's rule: 1 to 64 characters, runs of lowercase letters and digits
    joined by single ``_`` or ``-``.
    """
    if not isinstance(value, str):
        return f"queue name must be a string, not {type(value).__name__}"
    if not value or len(value) > MAX_QUEUE_NAME_LENGTH:
        return (
            f"queue name {value[:80]!r} must be 1 to {MAX_QUEUE_NAME_LENGTH} characters "
            f"(it has {len(value)})"
        )
    if not _QUEUE_NAME.fullmatch(value):
        return (
            f"queue name {value!r} is invalid: it must match ^[a-z0-9]+(?:[_-]?[a-z0-9]+)*$ "
            "(lowercase letters and digits, single '_' or '-' between them)"
        )
    return None


def queue_name(value: object, error: ErrorType, *, where: str = "", hint: str = "") -> str:
    """Check a queue name (see `queue_name_problem`).

    Args:
        value: What the caller passed.
        error: The exception class to raise.
        where: Put before the message (e.g. ``"queue: "``).
        hint: Appended to the message.
    """
    problem = queue_name_problem(value)
    if problem is not None:
        raise error(f"{where}{problem}{hint}")
    return value  # type: ignore[return-value]


def schema_name_problem(value: object) -> str | None:
    """Why `value` is not a schema name rivertrio accepts, or None if it is.

    Any name Postgres can hold, as River accepts them: 1 to 63 bytes of UTF-8
    and no NUL character. Mixed case, spaces, quotes and punctuation are fine:
    every statement quotes the name, so it names exactly that schema and can
    never be read as SQL. A longer name would be cut short by Postgres, and so
    would silently name another schema.
    """
    if isinstance(value, str) and "\x00" not in value:
        try:
            size = len(value.encode())
        except UnicodeEncodeError:  # a lone surrogate: not text Postgres can take
            size = 0
        if 1 <= size <= _MAX_IDENTIFIER:
            return None
    return (
        f"{_got(value)} is not a valid Postgres schema name: 1 to {_MAX_IDENTIFIER} bytes "
        "of UTF-8 text without NUL characters"
    )
