"""What a caller hands to an insert, and what a worker gets back.

`JobArgs` (a job's args: declared as a dataclass, encoded to JSON, decoded and
checked against the dataclass), `InsertOpts` (how one job is inserted), and
`Job`, a row with its args decoded.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import re
import sys
import types
import typing
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    Self,
    TypeAlias,
    TypeVar,
    Union,
)

from ._exceptions import InvalidInputError, JobDecodeError
from ._job import JobRow, json_type, json_value_problem, short_repr
from ._unique import UniqueOpts
from ._unique_fields import nested_dataclass
from ._validate import max_attempts as check_max_attempts
from ._validate import priority as check_priority
from ._validate import queue_name

if TYPE_CHECKING:
    from ._hooks import Hook

__all__ = [
    "MAX_TAG_LENGTH",
    "InsertOpts",
    "InsertParams",
    "Job",
    "JobArgs",
    "encode_args",
    "encode_metadata",
    "validate_kind",
    "validate_tags",
]

ArgsT = TypeVar("ArgsT", bound="JobArgs")


@dataclass(frozen=True, slots=True)
class Job(JobRow, Generic[ArgsT]):
    """A job being worked: its row plus its decoded args."""

    args: ArgsT

    @classmethod
    def from_row(cls, row: JobRow, args: ArgsT) -> Job[ArgsT]:
        """Attach decoded args to a row."""
        return cls(**{name: getattr(row, name) for name in _ROW_FIELDS}, args=args)


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(JobRow))


# fullmatch, not match with $: "$" also matches before a trailing newline.
_KIND = re.compile(r"[\w][\w\-\[\]<>/.:+]*")


def validate_kind(kind: object) -> str:
    """Check a job kind: 1..127 characters, a word character first, no spaces."""
    if not isinstance(kind, str) or not kind or len(kind) > 127 or not _KIND.fullmatch(kind):
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

    To rename a kind without stranding the jobs already queued under the old
    name, list it in ``kind_aliases``: the worker of the class works jobs of
    every alias too (River's ``KindAliases``), while new jobs get the kind::

        class SendEmail(rivertrio.JobArgs, kind="email.send", kind_aliases=("send_email",)):
            ...

    A field that is a dataclass (or one or None) is written as a JSON object
    and read back as that dataclass. Override `to_json` / `from_json` for args
    that are not plain JSON values.
    """

    kind: ClassVar[str]
    kind_aliases: ClassVar[tuple[str, ...]] = ()
    insert_opts: ClassVar[InsertOpts | None] = None
    hooks: ClassVar[Sequence[Hook]] = ()
    """Hooks for this kind's jobs only (`rivertrio.Hook`), run after the config's."""

    def __init_subclass__(
        cls,
        *,
        kind: str | None = None,
        kind_aliases: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = validate_kind(kind)
            # A new kind does not inherit the aliases of its base's kind.
            cls.kind_aliases = ()
        elif "kind" not in cls.__dict__ and not hasattr(cls, "kind"):
            raise TypeError(
                f"{cls.__qualname__} needs a job kind: "
                f'class {cls.__name__}(rivertrio.JobArgs, kind="...")'
            )
        if kind_aliases is not None:
            cls.kind_aliases = _check_aliases(cls.__qualname__, cls.kind, kind_aliases)

    def to_json(self) -> dict[str, Any]:
        """The args as a JSON object (by default, the dataclass fields)."""
        if not dataclasses.is_dataclass(self):
            raise InvalidInputError(
                f"{type(self).__qualname__} is not a dataclass: decorate it with @dataclass "
                "or override to_json/from_json"
            )
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

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
            raise JobDecodeError(f"the args are a JSON {json_type(data)}, not an object")
        built: Self = _build(cls, data)
        return built


def _check_aliases(where: str, kind: str, aliases: Sequence[str]) -> tuple[str, ...]:
    if isinstance(aliases, str) or not isinstance(aliases, Sequence):
        raise TypeError(f"{where}: kind_aliases must be a list of job kinds, not {aliases!r}")
    checked: list[str] = []
    for alias in aliases:
        try:
            validate_kind(alias)
        except InvalidInputError as exc:
            raise TypeError(f"{where}: kind alias {exc}") from None
        if alias == kind or alias in checked:
            raise TypeError(f"{where}: kind alias {alias!r} repeats a kind it already has")
        checked.append(alias)
    return tuple(checked)


def _plain(value: object) -> object:
    # A dataclass field value is written as its object, as Go writes a struct.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _build(cls: Any, data: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, required, hint, nested in _decode_fields(cls):
        if name in data:
            value = data[name]
            if hint is not _UNCHECKED:
                problem = _type_problem(value, hint)
                if problem is not None:
                    sep = "" if problem.startswith("[") else " "
                    raise JobDecodeError(f"field {name!r}{sep}{problem}")
            if nested is not None and isinstance(value, dict):
                try:
                    value = _build(nested, value)
                except JobDecodeError as exc:
                    raise JobDecodeError(f"field {name!r}: {exc}") from None
            kwargs[name] = value
        elif required:
            raise JobDecodeError(f"field {name!r} is missing (it has no default)")
    return cls(**kwargs)


_UNCHECKED: Any = object()
_FIELDS: weakref.WeakKeyDictionary[type, tuple[tuple[str, bool, Any, type | None], ...]] = (
    weakref.WeakKeyDictionary()
)


def _decode_fields(cls: type) -> tuple[tuple[str, bool, Any, type | None], ...]:
    """Name, required, annotation (or _UNCHECKED) and dataclass type (or None) of each
    init field of a dataclass."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    if not dataclasses.is_dataclass(cls):
        raise JobDecodeError(
            f"{cls.__qualname__} is not a dataclass: decorate it with @dataclass "
            "or override to_json/from_json"
        )
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    specs: list[tuple[str, bool, Any, type | None]] = []
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
        nested = None if hint is _UNCHECKED else nested_dataclass(hint)
        specs.append((f.name, required, hint, nested))
    result = tuple(specs)
    _FIELDS[cls] = result
    return result


_UNION_TYPES = (Union, types.UnionType)
_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def _type_problem(value: object, hint: Any) -> str | None:
    """Why a decoded JSON value does not fit `hint`, or None (unknown hints fit)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _type_problem(value, typing.get_args(hint)[0])
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
        elif hint in _MAPPINGS or (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
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
        return f"should be one of {', '.join(map(repr, choices))}, got {short_repr(value)}"
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
    return f"should be {expected}, got JSON {json_type(value)} {short_repr(value)}"


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
            raise InvalidInputError(f"{name} args key {short_repr(key)} {problem}")
        problem = json_value_problem(value)
        if problem is not None:
            raise InvalidInputError(f"{name} field {key!r} {problem}")
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        # Left after the checks above: an int too long to print (over 4,300 digits).
        raise InvalidInputError(f"{name} args do not encode to JSON: {exc}") from exc
    return text


MAX_TAG_LENGTH = 255

# River's rule, with ASCII \w as in Go; fullmatch so a trailing newline fails too.
_TAG = re.compile(r"[\w][\w\-]+[\w]", re.ASCII)


def validate_tags(tags: object, where: str = "tags") -> tuple[str, ...]:
    """Check a list of tags (each at most 255 characters, matching ``^[\\w][\\w\\-]+[\\w]$``).

    Raises:
        InvalidInputError: Not a list of strings, or a tag breaks the rule.
    """
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence | set | frozenset):
        raise InvalidInputError(f"{where} must be a list of strings, not {type(tags).__name__}")
    checked: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidInputError(f"{where}: tag {tag!r} is not a string")
        if len(tag) > MAX_TAG_LENGTH:
            raise InvalidInputError(
                f"{where}: tag {tag[:20]!r}... is {len(tag)} characters long; "
                f"at most {MAX_TAG_LENGTH} are allowed"
            )
        if not _TAG.fullmatch(tag):
            raise InvalidInputError(
                f"{where}: tag {tag!r} is invalid: it must match ^[\\w][\\w\\-]+[\\w]$ "
                "(at least 3 characters: letters, digits, '_', '-' inside)"
            )
        checked.append(tag)
    return tuple(checked)


def encode_metadata(metadata: object, where: str = "metadata") -> str:
    """Check metadata (a JSON object of storable values) and encode it compactly.

    Raises:
        InvalidInputError: Not a dict with string keys, or a value JSON cannot store.
    """
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(
            f"{where} must be a JSON object (a dict), not {type(metadata).__name__}"
        )
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidInputError(f"{where} key {key!r} is not a string")
    problem = json_value_problem(dict(metadata))
    if problem is not None:
        raise InvalidInputError(f"{where} {problem}")
    try:
        return json.dumps(dict(metadata), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{where} does not encode to JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class InsertOpts:
    """Options of one insert. Unset fields (None) fall back, field by field, to the
    args class's ``insert_opts``, then the config, then the default.

    Args:
        queue: The queue; default ``"default"``.
        priority: 1 (first) to 4; default 1.
        scheduled_at: When the job becomes due (timezone-aware); in the future
            makes it ``scheduled``.
        max_attempts: 1 to 32767; default the config's ``max_attempts`` (25).
        tags: Each at most 255 characters matching ``^[\\w][\\w\\-]+[\\w]$``.
        metadata: A JSON object stored with the job.
        unique: Uniqueness options (see `UniqueOpts`).
        pending: Insert as ``pending``: never fetched until moved out of it.

    Raises:
        InvalidInputError: A field is invalid; the message names it.
    """

    queue: str | None = None
    priority: int | None = None
    scheduled_at: datetime | None = None
    max_attempts: int | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    unique: UniqueOpts | None = None
    pending: bool = False

    def __post_init__(self) -> None:
        if self.queue is not None:
            queue_name(self.queue, InvalidInputError, where="queue: ")
        if self.priority is not None:
            check_priority(self.priority, InvalidInputError)
        at = self.scheduled_at
        if at is not None:
            if not isinstance(at, datetime):
                raise InvalidInputError(f"scheduled_at must be a datetime, not {type(at).__name__}")
            if at.tzinfo is None or at.utcoffset() is None:
                raise InvalidInputError(
                    f"scheduled_at must be timezone-aware (e.g. datetime.now(UTC)), got {at!r}"
                )
        if self.max_attempts is not None:
            check_max_attempts(self.max_attempts, InvalidInputError)
        if self.tags is not None:
            object.__setattr__(self, "tags", validate_tags(self.tags))
        if self.metadata is not None:
            # Decoded again so the stored options cannot change behind our back.
            object.__setattr__(self, "metadata", json.loads(encode_metadata(self.metadata)))
        if self.unique is not None and not isinstance(self.unique, UniqueOpts):
            raise InvalidInputError(
                f"unique must be a rivertrio.UniqueOpts, not {type(self.unique).__name__}"
            )
        if not isinstance(self.pending, bool):
            raise InvalidInputError(f"pending must be a bool, not {type(self.pending).__name__}")


#: One job to insert: its args, or (args, options).
InsertParams: TypeAlias = JobArgs | tuple[JobArgs, InsertOpts | None]
