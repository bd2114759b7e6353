"""Small helpers shared across modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

__all__ = ["collapse_single_groups"]


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
