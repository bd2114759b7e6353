"""Jobs as stored in ``river_job``: states, rows, args."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from ._exceptions import InvalidInputError

if TYPE_CHECKING:
    from ._insert import InsertOpts

__all__ = ["AttemptError", "Job", "JobArgs", "JobRow", "JobState"]


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
        """Decode one element of ``river_job.errors``."""
        data = json.loads(text)
        return cls(
            at=datetime.fromisoformat(data["at"]),
            attempt=int(data["attempt"]),
            error=str(data.get("error", "")),
            trace=str(data.get("trace", "")),
        )

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
            {} if metadata == "{}" else _decode_object(metadata),
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


def _decode_object(value: str | Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


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
        """Build args from their JSON object; unknown keys are ignored, as River does."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


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
    for key, value in data.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{type(args).__qualname__} args key {key!r} is not a string")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{type(args).__qualname__} field {key!r} does not encode to JSON: {exc}"
            ) from exc
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{type(args).__qualname__} args do not encode: {exc}") from exc
    if "\x00" in text or "\\u0000" in text:
        # Postgres jsonb cannot store NUL characters.
        raise InvalidInputError(f"{type(args).__qualname__} args contain a NUL character")
    return text
