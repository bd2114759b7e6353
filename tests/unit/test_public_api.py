"""Every rivertrio class that a public signature names can be imported from the public API.

A user who reads ``Client.transaction() -> Tx`` must be able to write
``rivertrio.Tx`` in their own annotations, not ``rivertrio._driver.Tx``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import rivertrio
import rivertrio.testing

PUBLIC = (rivertrio, rivertrio.testing)

# Signatures of public classes that users do not call, each with why.
NOT_FOR_USERS = {
    # Users get these from open_driver, Driver.transaction() and Client.queues.
    "Driver.__init__",
    "Tx.__init__",
    "QueueBundle.__init__",
    # The client's own LISTEN connection; the notifier is its only user.
    "Driver.open_listener",
}


def _all_names() -> dict[str, Any]:
    """Every global of every rivertrio module: where annotations written as text resolve."""
    names: dict[str, Any] = {}
    for info in pkgutil.walk_packages(rivertrio.__path__, "rivertrio."):
        package = info.name.split(".")[1]
        if package in ("_cli", "ui", "__main__"):  # programs, not the library's API
            continue
        names.update(vars(importlib.import_module(info.name)))
    for module in PUBLIC:
        names.update(vars(module))
    return names


def _annotations(obj: object) -> Iterator[tuple[str, object]]:
    """(where, annotation) of a public function's or class's signatures and fields."""
    name = getattr(obj, "__qualname__", repr(obj))
    if inspect.isclass(obj):
        members = {"__init__": obj.__init__} if "__init__" in vars(obj) else {}
        for klass in obj.__mro__:
            if klass.__module__.startswith("rivertrio"):
                for attr, ann in vars(klass).get("__annotations__", {}).items():
                    if not attr.startswith("_"):
                        yield f"{name}.{attr}", ann
                members.update(
                    (attr, value)
                    for attr, value in vars(klass).items()
                    if not attr.startswith("_") and attr not in members
                )
        for attr, value in members.items():
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "__func__", function)
            if inspect.isfunction(function):
                yield from _annotations_of_function(f"{name}.{attr}", function)
    elif inspect.isfunction(obj):
        yield from _annotations_of_function(name, obj)


def _annotations_of_function(name: str, function: Any) -> Iterator[tuple[str, object]]:
    if name in NOT_FOR_USERS:
        return
    for param, ann in function.__annotations__.items():
        yield f"{name}({param})", ann


def _classes(annotation: object) -> Iterator[type]:
    if isinstance(annotation, type):
        yield annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, list):  # Callable[[A, B], R]
            for item in arg:
                yield from _classes(item)
        else:
            yield from _classes(arg)


def _public_objects(module: ModuleType) -> Iterator[object]:
    for name, obj in vars(module).items():
        if not name.startswith("_") and not isinstance(obj, ModuleType):
            yield obj


def _exported(cls: type) -> bool:
    return any(getattr(module, cls.__name__, None) is cls for module in PUBLIC)


def test_every_class_in_a_public_signature_is_exported() -> None:
    names = _all_names()
    missing: dict[str, set[str]] = {}
    for module in PUBLIC:
        for obj in _public_objects(module):
            for where, annotation in _annotations(obj):
                value = eval(annotation, names) if isinstance(annotation, str) else annotation
                for cls in _classes(value):
                    if cls.__module__.startswith("rivertrio") and not _exported(cls):
                        missing.setdefault(f"{cls.__module__}.{cls.__qualname__}", set()).add(where)
    assert not missing, "not importable from rivertrio or rivertrio.testing:\n" + "\n".join(
        f"  {cls}, used by {', '.join(sorted(uses)[:3])}" for cls, uses in sorted(missing.items())
    )


def test_the_check_sees_what_a_signature_names() -> None:
    names = _all_names()
    seen = {
        cls
        for where, ann in _annotations(rivertrio.Client)
        for cls in _classes(eval(ann, names) if isinstance(ann, str) else ann)
    }
    assert {rivertrio.Tx, rivertrio.Driver, rivertrio.JobRow, rivertrio.PeriodicJobs} <= seen
    assert dataclasses.is_dataclass(rivertrio.JobRow)
