"""What the service checks report: one exception class per kind of failure.

They are ``AssertionError`` subclasses, so pytest shows them as test failures, and
distinct classes, so Hypothesis shrinks each kind of failure on its own instead of
wandering from one kind to another.
"""

from __future__ import annotations

__all__ = [
    "DuplicateItemError",
    "HangError",
    "LostItemError",
    "SendOnClosedChannelError",
    "ServiceCheckError",
    "TaskLeftRunningError",
    "UncaughtError",
    "UnexpectedItemError",
]


class ServiceCheckError(AssertionError):
    """A service broke the contract a check holds it to; the message says how."""


class LostItemError(ServiceCheckError):
    """An accepted item did not come out by the time the run had ended."""


class DuplicateItemError(ServiceCheckError):
    """An item came out more than once."""


class UnexpectedItemError(ServiceCheckError):
    """An item came out that was never accepted: never fed, refused, or its feed cancelled."""


class SendOnClosedChannelError(ServiceCheckError):
    """``trio.ClosedResourceError`` or ``trio.BrokenResourceError`` escaped a run.

    The run used a channel after it, or the other side, was closed: typically a
    send after the channel the service owns was closed too early.
    """


class HangError(ServiceCheckError):
    """Something did not finish within its bound: a start, a stop, a feed, a settle."""


class TaskLeftRunningError(ServiceCheckError):
    """A task the service started was still running after its run had ended."""


class UncaughtError(ServiceCheckError):
    """Another exception escaped a run, or a feed raised one that is not a refusal.

    The original exception is the ``__cause__``.
    """


# Shown as rivertrio.testing.LostItemError, not by the private module's name.
for _failure in (
    ServiceCheckError,
    LostItemError,
    DuplicateItemError,
    UnexpectedItemError,
    SendOnClosedChannelError,
    HangError,
    TaskLeftRunningError,
    UncaughtError,
):
    _failure.__module__ = "rivertrio.testing"
