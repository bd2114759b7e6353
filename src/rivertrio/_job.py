"""Jobs as stored in ``river_job``: states, rows, args."""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import json
import math
import re
import sys
import types
import typing
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar, Union

from ._exceptions import InvalidInputError, RivertrioError

if TYPE_CHECKING:
    from ._insert import InsertOpts

__all__ = [
    "MAX_JSON_DEPTH",
    "AttemptError",
    "Job",
    "JobArgs",
    "JobDecodeError",
    "JobRow",
    "JobState",
    "json_value_problem",
    "metadata_problem",
]

#: Deepest nesting of arrays and objects accepted in args and metadata. Python's
#: json module recurses once per level and fails near its recursion limit
#: (1,000), so deeper values could be stored (Postgres takes them) but never
#: decoded by a worker.
MAX_JSON_DEPTH = 256


class JobDecodeError(RivertrioError, ValueError):
    """A fetched job's args or metadata cannot be decoded: the job fails without running.

    Raised for rows written by hand or by another client (args that are not a
    JSON object, a missing field, a value of the wrong type, nesting too deep
    for Python's json module). The message names the problem; the failure is
    recorded in the job's errors and retried by the retry policy, since a new
    version of the args class may decode it.
    """


ArgsT = TypeVar("ArgsT", bound="JobArgs")


class JobState(enum.StrEnum):
    """The states of ``river_job_state``."""

    AVAILABLE = "available"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    PENDING = "pending"
    RETRYABLE = "retryable"
    RUNNING = "running"
    SCHEDULED = "scheduled"

    @property
    def finalized(self) -> bool:
        """Whether the state is final (the row has ``finalized_at``)."""
        return self in _FINALIZED


_FINALIZED = frozenset({JobState.CANCELLED, JobState.COMPLETED, JobState.DISCARDED})


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt, as recorded in ``river_job.errors``."""

    at: datetime
    attempt: int
    error: str
    trace: str

    @classmethod
    def from_json(cls, text: str) -> AttemptError:
        """Decode one element of ``river_job.errors``.

        Never raises: an element that is not an attempt error as River writes it
        (a row written by hand or by another client) is kept as its raw text in
        ``error``, with ``at`` at the Unix epoch and ``attempt`` 0.
        """
        try:
            data = json.loads(text)
            return cls(
                at=datetime.fromisoformat(data["at"]),
                attempt=int(data["attempt"]),
                error=str(data.get("error", "")),
                trace=str(data.get("trace", "")),
            )
        except Exception:
            # A row that cannot be read must not stop the fetch, completion or
            # listing of every other job (it used to raise inside the producer).
            raw = text if isinstance(text, str) else repr(text)
            error = f"(undecodable error record) {raw[:500]}"
            return cls(at=_EPOCH, attempt=0, error=error, trace="")

    def to_json(self) -> str:
        """Encode as River does: RFC 3339 time, attempt, error text, trace."""
        return json.dumps(
            {
                "at": self.at.isoformat(),
                "attempt": self.attempt,
                "error": self.error,
                "trace": self.trace,
            }
        )


@dataclass(frozen=True, slots=True)
class JobRow:
    """A row of ``river_job``, with args still encoded (``encoded_args`` is JSON text)."""

    id: int
    state: JobState
    attempt: int
    max_attempts: int
    attempted_at: datetime | None
    attempted_by: list[str]
    created_at: datetime
    finalized_at: datetime | None
    scheduled_at: datetime
    priority: int
    queue: str
    kind: str
    tags: list[str]
    metadata: dict[str, Any]
    errors: list[AttemptError]
    encoded_args: str
    unique_key: bytes | None
    unique_states: int | None

    @classmethod
    def from_record(cls, rec: Mapping[str, Any] | Any) -> JobRow:
        """Build a row from a database record (as the driver returns it)."""
        # On the hot path (every fetched and completed job): positional, no dict.
        errors = rec["errors"]
        metadata = rec["metadata"]
        unique_states = rec["unique_states"]
        return cls(
            rec["id"],
            _STATES[rec["state"]],
            rec["attempt"],
            rec["max_attempts"],
            rec["attempted_at"],
            list(rec["attempted_by"] or ()),
            rec["created_at"],
            rec["finalized_at"],
            rec["scheduled_at"],
            rec["priority"],
            rec["queue"],
            rec["kind"],
            list(rec["tags"] or ()),
            {} if metadata == "{}" else _decode_metadata(metadata),
            [AttemptError.from_json(e) for e in errors] if errors else [],
            rec["args"],
            rec["unique_key"],
            None if unique_states is None else _bits_to_int(unique_states),
        )


_STATES = {state.value: state for state in JobState}


@dataclass(frozen=True, slots=True)
class Job(JobRow, Generic[ArgsT]):
    """A job being worked: its row plus its decoded args."""

    args: ArgsT

    @classmethod
    def from_row(cls, row: JobRow, args: ArgsT) -> Job[ArgsT]:
        """Attach decoded args to a row."""
        return cls(**{name: getattr(row, name) for name in _ROW_FIELDS}, args=args)


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(JobRow))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _UndecodableMetadata(dict[str, Any]):
    """Stands for metadata that is not a JSON object Python can decode: empty, with the why."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


def _decode_metadata(value: str | Mapping[str, Any]) -> dict[str, Any]:
    # Never raises: a hostile row (an array, nesting deeper than Python's json
    # recursion limit) must not crash the producer, the completer or a listing.
    # The executor fails such a job without running it (see `metadata_problem`).
    if not isinstance(value, str):
        return dict(value)
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:
        return _UndecodableMetadata(f"cannot be decoded: {type(exc).__name__}: {exc}")
    if not isinstance(data, dict):
        return _UndecodableMetadata(f"is a JSON {_json_type(data)}, not an object")
    return data


def metadata_problem(row: JobRow) -> str | None:
    """Why the row's stored metadata could not be decoded as a JSON object, or None.

    Such a row's `metadata` reads as ``{}``.
    """
    metadata = row.metadata
    return metadata.problem if isinstance(metadata, _UndecodableMetadata) else None


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_path(path: tuple[Any, ...] | None) -> str:
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    keys.reverse()
    shown = "".join(f"[{k!r}]" for k in keys[:12])
    return shown + ("..." if len(keys) > 12 else "")


def _string_problem(text: str, where: str) -> str | None:
    if "\x00" in text:
        return f"contains a NUL character (\\x00){where}, which Postgres cannot store in JSON"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"contains a lone surrogate {text[exc.start]!r}{where}: not valid Unicode, "
                "which Postgres cannot store"
            )
    return None


def json_value_problem(value: object) -> str | None:
    """Why `value` cannot be stored as JSON and read back as it is, or None.

    Checks, at any depth: object keys are strings; values are str, int, float,
    bool, None, list, tuple or dict; floats are finite; strings hold no NUL and
    no lone surrogate (Postgres refuses both); nesting is at most
    `MAX_JSON_DEPTH` levels. The answer reads after a subject ("field 'x' ...")
    and names the place, e.g. ``does not encode to JSON: at ['a'][2]: nan ...``.
    """
    # Iterative, so that hostile nesting cannot exhaust the interpreter's stack;
    # paths are linked (parent, key) pairs, made into text only on failure.
    stack: list[tuple[object, int, tuple[Any, ...] | None]] = [(value, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            problem = _string_problem(item, _at(path, " (at {})"))
            if problem is not None:
                return problem
        elif item is None or isinstance(item, bool | int):
            pass
        elif isinstance(item, float):
            if not math.isfinite(item):
                where = _at(path, "at {}: ")
                return f"does not encode to JSON: {where}{item!r} (JSON has no NaN or Infinity)"
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return (
                    f"is nested deeper than {MAX_JSON_DEPTH} levels (at {_format_path(path)}), "
                    "more than Python's json module reads back"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return (
                            f"does not encode to JSON: key {_short(key)}{_at(path, ' at {}')} "
                            f"({type(key).__name__}) is not a string (JSON object keys are "
                            "strings)"
                        )
                    problem = _string_problem(key, _at(path, " (at {})"))
                    if problem is not None:
                        return f"has a key that {problem}"
                    stack.append((child, depth + 1, (path, key)))
            else:
                stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(item))
        else:
            return (
                f"does not encode to JSON: {_at(path, 'at {}: ')}{_short(item)} "
                f"({type(item).__name__}) is not a JSON value (str, int, float, bool, None, "
                "list or dict)"
            )
    return None


def _at(path: tuple[Any, ...] | None, template: str) -> str:
    return "" if path is None else template.format(_format_path(path))


def _bits_to_int(value: Any) -> int:
    # asyncpg returns bit(8) as asyncpg.BitString.
    return int.from_bytes(value.bytes, "big") if hasattr(value, "bytes") else int(value)


_KIND = re.compile(r"^[\w][\w\-\[\]<>/.:+]*$")


def validate_kind(kind: object) -> str:
    """Check a job kind: 1..127 characters, a word character first, no spaces."""
    if not isinstance(kind, str) or not kind or len(kind) > 127 or not _KIND.match(kind):
        raise InvalidInputError(
            f"job kind {kind!r} is invalid: it must be 1 to 127 characters, start with a letter, "
            "digit or underscore, and contain only those and - [ ] < > / . : +"
        )
    return kind


class JobArgs:
    """Base class of job args: a dataclass whose fields encode to a JSON object.

    Give the kind as a class keyword::

        @dataclass
        class SendEmail(rivertrio.JobArgs, kind="send_email"):
            to: str

    Override `to_json` / `from_json` for args that are not plain JSON values.
    """

    kind: ClassVar[str]
    insert_opts: ClassVar[InsertOpts | None] = None

    def __init_subclass__(cls, *, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = validate_kind(kind)
        elif "kind" not in cls.__dict__ and not hasattr(cls, "kind"):
            raise TypeError(
                f"{cls.__qualname__} needs a job kind: "
                f'class {cls.__name__}(rivertrio.JobArgs, kind="...")'
            )

    def to_json(self) -> dict[str, Any]:
        """The args as a JSON object (by default, the dataclass fields)."""
        if not dataclasses.is_dataclass(self):
            raise InvalidInputError(
                f"{type(self).__qualname__} is not a dataclass: decorate it with @dataclass "
                "or override to_json/from_json"
            )
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build args from their JSON object; unknown keys are ignored, as River does.

        The object must fit the dataclass, as Go's decoder makes River's args fit
        their struct: every field without a default is present, and a value whose
        field is annotated with a JSON type (``str``, ``int``, ``float``,
        ``bool``, ``None``, ``list[...]``, ``dict[str, ...]``, unions of them,
        ``Literal``) has that type. Other annotations are not checked.

        Raises:
            JobDecodeError: `data` is not an object, a field is missing, or a
                value has the wrong type; the message names the field.
        """
        if not isinstance(data, dict):
            raise JobDecodeError(f"the args are a JSON {_json_type(data)}, not an object")
        kwargs: dict[str, Any] = {}
        for name, required, hint in _decode_fields(cls):
            if name in data:
                value = data[name]
                if hint is not _UNCHECKED:
                    problem = _type_problem(value, hint)
                    if problem is not None:
                        sep = "" if problem.startswith("[") else " "
                        raise JobDecodeError(f"field {name!r}{sep}{problem}")
                kwargs[name] = value
            elif required:
                raise JobDecodeError(f"field {name!r} is missing (it has no default)")
        return cls(**kwargs)


_UNCHECKED: Any = object()
_FIELDS: weakref.WeakKeyDictionary[type, tuple[tuple[str, bool, Any], ...]] = (
    weakref.WeakKeyDictionary()
)


def _decode_fields(cls: type) -> tuple[tuple[str, bool, Any], ...]:
    """(name, required, annotation or _UNCHECKED) of each init field of a dataclass."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    if not dataclasses.is_dataclass(cls):
        raise JobDecodeError(
            f"{cls.__qualname__} is not a dataclass: decorate it with @dataclass "
            "or override to_json/from_json"
        )
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    specs: list[tuple[str, bool, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        hint: Any = f.type
        if isinstance(hint, str):
            # Annotations are strings under `from __future__ import annotations`;
            # one that does not resolve here (a local name) is simply not checked.
            try:
                hint = eval(hint, namespace)
            except Exception:
                hint = _UNCHECKED
        specs.append((f.name, required, hint))
    result = tuple(specs)
    _FIELDS[cls] = result
    return result


_UNION_TYPES = (Union, types.UnionType)
_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def _type_problem(value: object, hint: Any) -> str | None:
    """Why a decoded JSON value does not fit `hint`, or None (unknown hints fit)."""
    origin = typing.get_origin(hint)
    if origin is None:
        ok: bool | None
        if hint is Any or hint is object:
            ok = True
        elif hint is None or hint is type(None):
            ok = value is None
        elif hint is bool:
            ok = isinstance(value, bool)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif hint is str:
            ok = isinstance(value, str)
        elif hint in _SEQUENCES:
            ok = isinstance(value, list)
        elif hint in _MAPPINGS:
            ok = isinstance(value, dict)
        else:
            ok = None  # not a JSON type: a custom from_json's business
        if ok is False:
            return _wrong(value, hint)
        return None
    if origin in _UNION_TYPES:
        if any(_type_problem(value, member) is None for member in typing.get_args(hint)):
            return None
        return _wrong(value, hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if any(value == c and type(value) is type(c) for c in choices):
            return None
        return f"should be one of {', '.join(map(repr, choices))}, got {_short(value)}"
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            return _wrong(value, hint)
        params = typing.get_args(hint)
        if len(params) == 1 or (len(params) == 2 and params[1] is Ellipsis):
            for i, element in enumerate(value):
                problem = _type_problem(element, params[0])
                if problem is not None:
                    return f"[{i}] {problem}"
        return None
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            return _wrong(value, hint)
        params = typing.get_args(hint)
        if len(params) == 2:
            for key, element in value.items():
                problem = _type_problem(element, params[1])
                if problem is not None:
                    return f"[{key!r}] {problem}"
        return None
    return None


def _wrong(value: object, hint: Any) -> str:
    expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    return f"should be {expected}, got JSON {_json_type(value)} {_short(value)}"


def encode_args(args: JobArgs) -> str:
    """Encode args to JSON object text, naming the offending field on failure.

    Raises:
        InvalidInputError: The args are not a JSON object of finite, encodable values.
    """
    if not isinstance(args, JobArgs):
        raise InvalidInputError(f"job args must be a rivertrio.JobArgs, not {type(args).__name__}")
    data = args.to_json()
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{type(args).__qualname__}.to_json() returned {type(data).__name__}, not a JSON object"
        )
    name = type(args).__qualname__
    for key, value in data.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{name} args key {key!r} is not a string")
        problem = json_value_problem(key)
        if problem is not None:
            raise InvalidInputError(f"{name} args key {_short(key)} {problem}")
        problem = json_value_problem(value)
        if problem is not None:
            raise InvalidInputError(f"{name} field {key!r} {problem}")
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        # Left after the checks above: an int too long to print (over 4,300 digits).
        raise InvalidInputError(f"{name} args do not encode to JSON: {exc}") from exc
    return text
