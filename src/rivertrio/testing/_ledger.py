"""The pipeline machine's ledger: every item fed, what became of it, and the failures seen.

`PipelineMachine` feeds numbered items and reads what comes out; the ledger
records each item's fate and turns what should not have happened (an item out
twice, out after its feed was refused, accepted and never out) into the
harness's failure exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._failures import (
    DuplicateItemError,
    SendOnClosedChannelError,
    ServiceCheckError,
    UncaughtError,
    UnexpectedItemError,
)

__all__ = ["Item", "Ledger", "number_list", "split_exception"]


@dataclass(eq=False)
class Item:
    """One item fed to the service."""

    number: int
    run: int
    feed: str = "in flight"
    """"in flight", then "accepted", "refused", "cancelled" or "failed"."""
    out: int = 0
    """How many times it came out."""


class Ledger:
    """The items of one example and the failures found so far."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.problems: list[ServiceCheckError] = []

    def new_item(self, run: int) -> Item:
        """A new item, numbered in feeding order, fed during run `run`."""
        item = Item(len(self.items), run)
        self.items.append(item)
        return item

    def problem(self, failure: ServiceCheckError, cause: BaseException | None = None) -> None:
        """Record a failure, to be raised at the end of the step."""
        failure.__cause__ = cause
        self.problems.append(failure)

    def raise_problems(self) -> None:
        """Raise the first failure recorded, if any."""
        # An exception escaping the run explains what follows from it (items lost
        # or sent twice as it unwound), so it is reported first.
        escaped = (SendOnClosedChannelError, UncaughtError)
        for problem in sorted(self.problems, key=lambda p: not isinstance(p, escaped)):
            raise problem

    def came_out(self, numbers: Iterable[int]) -> None:
        """The items `numbers` came out of the service."""
        for number in numbers:
            in_range = isinstance(number, int) and 0 <= number < len(self.items)
            if not in_range:
                self.problem(UnexpectedItemError(f"{number!r} came out, but no such item was fed"))
                continue
            item = self.items[number]
            item.out += 1
            if item.out > 1:
                self.problem(DuplicateItemError(f"item {number} came out {item.out} times"))
            else:
                self._check_refused_not_out(item)

    def fed(self, item: Item, outcome: str) -> None:
        """The feed of `item` ended with `outcome` (see `Item.feed`)."""
        item.feed = outcome
        self._check_refused_not_out(item)

    def _check_refused_not_out(self, item: Item) -> None:
        if item.out and item.feed in ("refused", "cancelled"):
            why = {
                "refused": "its feed was refused",
                "cancelled": "its feed was cancelled (a cancelled operation did not happen)",
            }[item.feed]
            self.problem(UnexpectedItemError(f"item {item.number} came out, but {why}"))

    def in_flight(self, run: int) -> list[int]:
        """The items of run `run` whose feed has not returned."""
        return [i.number for i in self.items if i.run == run and i.feed == "in flight"]

    def lost(self, run: int) -> list[int]:
        """The items of run `run` accepted (their feed returned) that never came out."""
        return [
            i.number for i in self.items if i.run == run and i.feed == "accepted" and i.out == 0
        ]


def split_exception(
    exc: Exception, types: tuple[type[Exception], ...]
) -> tuple[Exception | None, Exception | None]:
    """The first leaf of ``exc`` of one of ``types``, and the rest of it."""
    if not isinstance(exc, BaseExceptionGroup):
        return (exc, None) if isinstance(exc, types) else (None, exc)
    matched, rest = exc.split(types)
    leaf: BaseException | None = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert leaf is None or isinstance(leaf, Exception)
    assert rest is None or isinstance(rest, Exception)
    return leaf, rest


def number_list(numbers: list[int]) -> str:
    """``1, 2, 3``."""
    return ", ".join(str(n) for n in numbers)
