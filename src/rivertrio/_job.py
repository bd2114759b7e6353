"""Jobs as stored in ``river_job``: states, rows, error records; what JSON can be stored."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "AttemptError",
    "InsertResult",
    "JobProgress",
    "JobRow",
    "JobState",
    "decode_json",
    "json_type",
    "json_value_problem",
    "metadata_problem",
    "row_values",
    "short_repr",
    "updated_row",
]

#: Deepest nesting of arrays and objects accepted in args and metadata. Python's
#: json module recurses once per level and fails near its recursion limit
#: (1,000), so deeper values could be stored (Postgres takes them) but never
#: decoded by a worker.
MAX_JSON_DEPTH = 256


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
            data = decode_json(text)
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
        return cls(*row_values(rec))

    @property
    def output(self) -> Any:
        """What the worker recorded with `record_output` (decoded JSON), or None.

        River keeps it in the metadata under ``"output"``; a Go worker's
        ``river.RecordOutput`` reads back here too.
        """
        return self.metadata.get(METADATA_OUTPUT)

    @property
    def progress(self) -> JobProgress | None:
        """The last progress the worker reported (`report_progress`), or None."""
        return JobProgress.from_metadata(self.metadata.get(METADATA_PROGRESS))


def row_values(rec: Mapping[str, Any] | Any) -> tuple[Any, ...]:
    """A record's values decoded into `JobRow`'s fields, in their order.

    ``JobRow(*row_values(rec))`` is the row; a `Job` takes its args after them.
    """
    # On the hot path (every fetched job): positional, no dict. The driver hands
    # back arrays as fresh lists, which the row may keep as they are.
    attempted_by = rec["attempted_by"]
    tags = rec["tags"]
    errors = rec["errors"]
    metadata = rec["metadata"]
    unique_states = rec["unique_states"]
    return (
        rec["id"],
        _STATES[rec["state"]],
        rec["attempt"],
        rec["max_attempts"],
        rec["attempted_at"],
        attempted_by if type(attempted_by) is list else list(attempted_by or ()),
        rec["created_at"],
        rec["finalized_at"],
        rec["scheduled_at"],
        rec["priority"],
        rec["queue"],
        rec["kind"],
        tags if type(tags) is list else list(tags or ()),
        {} if metadata == "{}" else _decode_metadata(metadata),
        [AttemptError.from_json(e) for e in errors] if errors else [],
        rec["args"],
        rec["unique_key"],
        None if unique_states is None else _bits_to_int(unique_states),
    )


def updated_row(fetched: JobRow, rec: Mapping[str, Any] | Any) -> JobRow:
    """`fetched` (a plain `JobRow`, even from a `Job`) with the columns an update
    returned in `rec`: state, attempt, finalized_at, scheduled_at, metadata, and
    errors unless NULL (unchanged)."""
    errors = rec["errors"]
    metadata = rec["metadata"]
    return JobRow(
        fetched.id,
        _STATES[rec["state"]],
        rec["attempt"],
        fetched.max_attempts,
        fetched.attempted_at,
        fetched.attempted_by,
        fetched.created_at,
        rec["finalized_at"],
        rec["scheduled_at"],
        fetched.priority,
        fetched.queue,
        fetched.kind,
        fetched.tags,
        {} if metadata == "{}" else _decode_metadata(metadata),
        fetched.errors if errors is None else [AttemptError.from_json(e) for e in errors],
        fetched.encoded_args,
        fetched.unique_key,
        fetched.unique_states,
    )


#: The metadata key of a job's recorded output (River's ``rivertype.MetadataKeyOutput``).
METADATA_OUTPUT = "output"
#: The metadata key of a job's last reported progress.
METADATA_PROGRESS = "progress"


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A job's last reported progress: a number, a short message, and when."""

    value: float
    message: str
    at: datetime | None

    @classmethod
    def from_metadata(cls, data: object) -> JobProgress | None:
        """Read ``metadata["progress"]``; None when absent or not in the expected shape."""
        if not isinstance(data, dict):
            return None
        value = data.get("value")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        message = data.get("message")
        at: datetime | None = None
        if isinstance(data.get("at"), str):
            try:
                at = datetime.fromisoformat(data["at"])
            except ValueError:
                at = None
        return cls(float(value), message if isinstance(message, str) else "", at)


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What an insert returned: the row, and whether it was an existing unique duplicate."""

    job: JobRow
    unique_skipped_as_duplicate: bool


_STATES = {state.value: state for state in JobState}


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
        data = decode_json(value)
    except (ValueError, RecursionError) as exc:
        return _UndecodableMetadata(f"cannot be decoded: {type(exc).__name__}: {exc}")
    if not isinstance(data, dict):
        return _UndecodableMetadata(f"is a JSON {json_type(data)}, not an object")
    return data


# The scanner `JSONDecoder.raw_decode` itself calls (typeshed does not declare it).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_json(text: str) -> Any:
    """`json.loads` for the JSON text Postgres hands back, without its per-call overhead.

    The decoder's scanner reads the value straight away (about half a
    microsecond less per call, paid for every job's args); anything it does not
    read to the end (leading or trailing whitespace, an error) goes through
    `json.loads`, which decodes it or raises exactly as always.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why a row's stored metadata (its `JobRow.metadata`) could not be decoded as a
    JSON object, or None.

    Such a row's `metadata` reads as ``{}``.
    """
    return metadata.problem if isinstance(metadata, _UndecodableMetadata) else None


def json_type(value: object) -> str:
    """JSON's name for the type of a decoded JSON value."""
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


def short_repr(value: object) -> str:
    """The value's repr, cut to 60 characters, for error messages."""
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
                            f"does not encode to JSON: key {short_repr(key)}{_at(path, ' at {}')} "
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
                f"does not encode to JSON: {_at(path, 'at {}: ')}{short_repr(item)} "
                f"({type(item).__name__}) is not a JSON value (str, int, float, bool, None, "
                "list or dict)"
            )
    return None


def _at(path: tuple[Any, ...] | None, template: str) -> str:
    return "" if path is None else template.format(_format_path(path))


def _bits_to_int(value: Any) -> int:
    # asyncpg returns bit(8) as asyncpg.BitString.
    return int.from_bytes(value.bytes, "big") if hasattr(value, "bytes") else int(value)
