"""Which fields of an args class make up its unique key: the ones marked unique.

River keeps only the fields tagged ``river:"unique"`` in the args it hashes
for a unique job; rivertrio reads the same tag from a dataclass field's
metadata (``field(metadata={"river": "unique"})``), or the `Unique` marker
from its annotation. `rivertrio._unique` builds the key from the paths found
here.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
import weakref
from typing import Annotated, Any, Final, Union

__all__ = ["Unique", "nested_dataclass", "unique_fields"]


class _UniqueMarker:
    """The type of `Unique`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "rivertrio.Unique"


#: Marks an args field unique: ``recipient: Annotated[str, rivertrio.Unique]``
#: (the same as ``field(metadata={"river": "unique"})``).
Unique: Final = _UniqueMarker()

_FIELDS_CACHE: weakref.WeakKeyDictionary[type, tuple[tuple[str, ...], ...]] = (
    weakref.WeakKeyDictionary()
)
_UNION_TYPES = (Union, types.UnionType)


def unique_fields(cls: type) -> tuple[tuple[str, ...], ...]:
    """The paths of the fields of a dataclass args class marked unique, in River's order.

    A field is marked with ``field(metadata={"river": "unique"})`` (River's tag;
    a comma-separated list holding ``unique`` counts too) or with
    ``Annotated[..., rivertrio.Unique]``. A field whose type is a dataclass (or
    one or None) contributes its own marked fields, under its name; if it has
    none but is marked itself, its whole value counts. As in River, each
    dataclass is looked into once per args class (a second field of the same
    type, or a recursive one, counts only if marked, as a whole). The paths
    are sorted by their names joined with dots. Empty for classes that are not
    dataclasses or mark nothing: then every top-level key counts.
    """
    cached = _FIELDS_CACHE.get(cls)
    if cached is None:
        paths = _marked_paths(cls, (), set()) if dataclasses.is_dataclass(cls) else []
        cached = tuple(sorted(paths, key=_path_order))
        _FIELDS_CACHE[cls] = cached
    return cached


def _path_order(path: tuple[str, ...]) -> tuple[str, str]:
    # River sorts by the names joined with dots; equal joins (a name holding a
    # dot) are told apart by the escaped path, as River's gjson paths are.
    return ".".join(path), ".".join(map(_escape_component, path))


def _escape_component(name: str) -> str:
    escaped = "".join(
        c if (c.isascii() and c.isalnum()) or c in "_-:" or c <= " " or c > "~" else "\\" + c
        for c in name
    )
    return "\\" + escaped if escaped.startswith(":") else escaped


def _marked_paths(cls: type, path: tuple[str, ...], seen: set[type]) -> list[tuple[str, ...]]:
    if cls in seen:
        return []
    seen.add(cls)
    hints = _hints(cls)
    paths: list[tuple[str, ...]] = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        here = (*path, f.name)
        marked = _is_marked(f, hint)
        nested = nested_dataclass(hint)
        if nested is not None:
            inner = _marked_paths(nested, here, seen)
            if inner:
                paths.extend(inner)
                continue
        if marked:
            paths.append(here)
    return paths


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:
        # A name that does not resolve (a local class under postponed
        # annotations): resolve field by field, leaving out those that fail.
        namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
        hints: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            hint = f.type
            if isinstance(hint, str):
                try:
                    hint = eval(hint, namespace)
                except Exception:
                    continue
            hints[f.name] = hint
        return hints


def _is_marked(f: dataclasses.Field[Any], hint: Any) -> bool:
    tag = f.metadata.get("river") if f.metadata else None
    if isinstance(tag, str) and "unique" in (t.strip() for t in tag.split(",")):
        return True
    candidates = [hint]
    if typing.get_origin(hint) in _UNION_TYPES:
        candidates.extend(typing.get_args(hint))
    return any(
        typing.get_origin(c) is Annotated and any(m is Unique for m in c.__metadata__)
        for c in candidates
    )


def nested_dataclass(hint: Any) -> type | None:
    """The dataclass that `hint` names, alone or with None; else None."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in _UNION_TYPES:
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) != 1:
            return None
        hint = members[0]
        if typing.get_origin(hint) is Annotated:
            hint = typing.get_args(hint)[0]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return None
