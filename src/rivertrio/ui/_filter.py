"""Which jobs a dashboard list, count or bulk action covers: its filter and args search.

A filter comes from a request's parameters (`Filter.parse`) and becomes SQL
conditions on ``river_job`` (`Filter.where`). What the request says is passed
as parameters; only states, checked to be `JobState` values, are written into
the SQL text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._exceptions import InvalidInputError
from .._job import JobState
from .._validate import member

__all__ = ["DISPLAY_STATES", "ArgsMatch", "Filter", "parse_args_query"]

#: The order states are shown in: work to do, then work done.
DISPLAY_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.RUNNING,
    JobState.SCHEDULED,
    JobState.RETRYABLE,
    JobState.PENDING,
    JobState.COMPLETED,
    JobState.DISCARDED,
    JobState.CANCELLED,
)


def _state_list(states: Iterable[JobState]) -> str:
    return ", ".join(f"'{JobState(s).value}'" for s in states)


@dataclass(frozen=True, slots=True)
class ArgsMatch:
    """What the args search box asks for, as one indexed condition on ``args``.

    - ``{"customer": 42}``: a JSON object the args contain (``args @> ...``);
    - ``customer.id=42``: the same, written as a dotted path and a value (the
      value is read as JSON when it is JSON, else as a string);
    - anything else: a value equal to the text anywhere in the args, at any
      depth (``args @? '$.** ? (@ == "text")'``); text that is a number also
      matches that number. Text in double quotes is a JSON string: the value
      it spells (``"a=b"`` for a value the path form would read as a path).

    All three are served by the GIN index on ``args``. Substrings are not
    searched: no index serves them, and scanning a million args is what a
    dashboard must not do.
    """

    text: str
    operator: str
    """``@>`` (containment, the value is jsonb) or ``@?`` (a jsonpath)."""
    value: str


_PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*)\s*=(.*)", re.S)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?")
MAX_ARGS_QUERY = 1000


def parse_args_query(text: str) -> ArgsMatch | None:
    """The condition the args search `text` stands for (see `ArgsMatch`); None if empty.

    Raises:
        InvalidInputError: The text is too long, holds a NUL character, or starts
            with ``{`` or ``"`` and is not a JSON object or string.
    """
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_ARGS_QUERY:
        raise InvalidInputError(
            f"args search: at most {MAX_ARGS_QUERY} characters, got {len(text)}"
        )
    if "\x00" in text:
        raise InvalidInputError("args search: a NUL character cannot be searched for")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"args search: {text!r} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise InvalidInputError("args search: a JSON search must be an object")
        return ArgsMatch(text, "@>", json.dumps(value))
    if text.startswith('"'):
        # A JSON string: the value itself, for text that would read as a path.
        try:
            quoted = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"args search: {text!r} is not a JSON string ({exc})") from None
        if not isinstance(quoted, str):
            raise InvalidInputError(f"args search: {text!r} is not a JSON string")
        return _anywhere(text, quoted)
    path = _PATH.fullmatch(text)
    if path is not None:
        raw = path.group(2).strip()
        try:
            leaf: Any = json.loads(raw)
        except ValueError:
            leaf = raw
        for key in reversed(path.group(1).split(".")):
            leaf = {key: leaf}
        return ArgsMatch(text, "@>", json.dumps(leaf))
    return _anywhere(text, text)


def _anywhere(text: str, value: str) -> ArgsMatch:
    """A match of `value` anywhere in the args (as a number too, if it is one)."""
    # A jsonpath string literal takes JSON's escapes: the value never becomes syntax.
    test = f"@ == {json.dumps(value)}"
    if _NUMBER.fullmatch(value):
        test += f" || @ == {value}"
    return ArgsMatch(text, "@?", f"$.** ? ({test})")


@dataclass(frozen=True, slots=True)
class Filter:
    """Which jobs a list, a count or a bulk action covers; empty fields match all."""

    states: tuple[JobState, ...] = ()
    kinds: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    args: ArgsMatch | None = None

    @classmethod
    def parse(
        cls,
        *,
        states: Sequence[str] = (),
        kinds: Sequence[str] = (),
        queues: Sequence[str] = (),
        args: str = "",
    ) -> Filter:
        """Build from request parameters (blank values are ignored).

        Raises:
            InvalidInputError: An unknown state, or an args search that cannot be read.
        """
        shown = DISPLAY_STATES
        parsed = [
            member("state", s, JobState, InvalidInputError, what="a job state", shown=shown)
            for s in states
            if s
        ]
        return cls(
            states=tuple(dict.fromkeys(parsed)),
            kinds=tuple(dict.fromkeys(k for k in kinds if k)),
            queues=tuple(dict.fromkeys(q for q in queues if q)),
            args=parse_args_query(args),
        )

    @property
    def empty(self) -> bool:
        """Whether nothing is filtered."""
        return not (self.states or self.kinds or self.queues or self.args)

    def params(self) -> list[tuple[str, str]]:
        """The filter as query parameters (``state``, ``kind``, ``queue``, ``q``)."""
        pairs = [("state", s.value) for s in self.states]
        pairs += [("kind", k) for k in self.kinds]
        pairs += [("queue", q) for q in self.queues]
        if self.args is not None:
            pairs.append(("q", self.args.text))
        return pairs

    def where(self, args: list[Any]) -> list[str]:
        """SQL conditions for this filter; their values are appended to `args`."""
        conditions: list[str] = []

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        # States are written into the SQL (they are JobState values, never the
        # request's text): the planner then knows how common each one is from the
        # column's statistics, which it cannot from a cast parameter, and picks the
        # fetching index for a rare state instead of walking the whole primary key.
        if self.states:
            conditions.append(f"state IN ({_state_list(self.states)})")
        elif self.queues:
            # Every state, spelled out: the fetching index leads with state, so
            # this lets a rare queue be found through (state, queue) instead of
            # by scanning the table.
            conditions.append(f"state IN ({_state_list(JobState)})")
        if self.queues:
            conditions.append(f"queue = ANY({param(list(self.queues))}::text[])")
        if self.kinds:
            conditions.append(f"kind = ANY({param(list(self.kinds))}::text[])")
        if self.args is not None:
            cast = "jsonb" if self.args.operator == "@>" else "jsonpath"
            conditions.append(f"args {self.args.operator} {param(self.args.value)}::{cast}")
        return conditions
