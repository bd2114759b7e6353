"""Small helpers shared across modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import NoReturn

__all__ = ["collapse_single_groups", "relative_time"]


def relative_time(value: datetime, now: datetime) -> str:
    """`value` relative to `now`, in whole units: ``3m ago``, ``in 2h``, ``just now``.

    The dashboard and the command line both write times this way.
    """
    delta = (value - now).total_seconds()
    span = abs(delta)
    if span < 1:
        return "just now"
    if span < 60:
        text = f"{span:.0f}s"
    elif span < 3600:
        text = f"{span // 60:.0f}m"
    elif span < 86400:
        text = f"{span // 3600:.0f}h"
    else:
        text = f"{span // 86400:.0f}d"
    return f"in {text}" if delta > 0 else f"{text} ago"


@contextmanager
def collapse_single_groups() -> Iterator[None]:
    """Re-raise an exception that arrives alone inside (nested) exception groups, bare.

    For nurseries that are an implementation detail: an error from the user's
    block, or our own error, should reach the user as itself. Groups that really
    hold several exceptions pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if isinstance(exc, BaseExceptionGroup):
            raise
        _reraise(exc)


def _reraise(exc: BaseException) -> NoReturn:
    # Raising inside `except` would chain the group as __context__; keep the
    # exception's own chain instead.
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__, exc.__suppress_context__ = cause, context, suppress
        del exc
