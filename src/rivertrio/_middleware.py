"""Running middleware and hooks: the insert chain and the work chain.

`Extensions` holds a config's middleware and hooks, checked and sorted by the
step they wrap. The inserter passes every insert through `Extensions.insert`
(the one place all inserts pass: single, many, COPY, the ``_tx`` forms,
coalesced and periodic inserts); the executor passes each job's run through
`Extensions.work`. Both build their chain only when there is something to
run: a job or an insert with no middleware and no hooks takes no detour.

Order, as in River. An insert: the config's insert middleware (first is
outermost), then for each job the config's ``insert_begin`` hooks and its
args class's, then the insert itself. A job: the config's worker middleware,
the worker's own, then the ``work_begin`` hooks (config's, then args
class's), the worker, and the ``work_end`` hooks in the same order.

An exception raised by a middleware or a hook (not passed through from
further in) gets a note naming it; it fails that insert or that job and
nothing else. Cancellation passes through every layer untouched.
"""

from __future__ import annotations

import inspect
import json
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from ._args import encode_metadata, validate_kind, validate_tags
from ._driver._insert import JobToInsert
from ._exceptions import InvalidInputError
from ._hooks import Hook, JobInsertParams, Middleware
from ._job import InsertResult, JobRow
from ._validate import ErrorType, queue_name
from ._validate import max_attempts as check_max_attempts
from ._validate import priority as check_priority

__all__ = [
    "Extensions",
    "HookSet",
    "class_hooks",
    "insert_args",
    "sort_hooks",
    "sort_middleware",
]

_MIDDLEWARE_METHODS = ("insert_many", "work")
_HOOK_METHODS = ("insert_begin", "work_begin", "work_end")


def _defines(obj: object, name: str, base: type) -> bool:
    """Whether `obj` has its own async method `name` (a base's default does not count)."""
    attr = getattr(type(obj), name, None)
    return attr is not None and attr is not getattr(base, name, None)


def _name(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_items(items: object, where: str, error: ErrorType) -> tuple[object, ...]:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise error(f"{where} must be a list, not {type(items).__name__}")
    return tuple(items)


def _check_methods(
    obj: object, where: str, names: tuple[str, ...], base: type, what: str, error: ErrorType
) -> tuple[str, ...]:
    """The methods of `names` that `obj` defines, each checked to be async."""
    defined = tuple(name for name in names if _defines(obj, name, base))
    if not defined:
        raise error(
            f"{where} is {_name(obj)}, which defines none of {', '.join(names)}: "
            f"subclass rivertrio.{base.__name__} and override what the {what} needs"
        )
    for name in defined:
        if not inspect.iscoroutinefunction(getattr(obj, name)):
            raise error(f"{where}: {type(obj).__qualname__}.{name} must be an async function")
    return defined


def sort_middleware(
    items: object, where: str, error: ErrorType
) -> tuple[tuple[Middleware, ...], tuple[Middleware, ...]]:
    """Check a list of middleware; return (insert middleware, work middleware), in order.

    Raises:
        `error`: Not a list, or an item defines neither ``insert_many`` nor ``work``
            (or not as an async function).
    """
    inserts: list[Middleware] = []
    works: list[Middleware] = []
    for i, item in enumerate(_check_items(items, where, error)):
        defined = _check_methods(
            item, f"{where}[{i}]", _MIDDLEWARE_METHODS, Middleware, "middleware", error
        )
        if "insert_many" in defined:
            inserts.append(item)  # type: ignore[arg-type]
        if "work" in defined:
            works.append(item)  # type: ignore[arg-type]
    return tuple(inserts), tuple(works)


class HookSet:
    """Hooks sorted by the step they run at."""

    __slots__ = ("insert_begin", "work_begin", "work_end")

    def __init__(
        self,
        insert_begin: tuple[Hook, ...] = (),
        work_begin: tuple[Hook, ...] = (),
        work_end: tuple[Hook, ...] = (),
    ) -> None:
        self.insert_begin = insert_begin
        self.work_begin = work_begin
        self.work_end = work_end


_NO_HOOKS = HookSet()


def sort_hooks(items: object, where: str, error: ErrorType) -> HookSet:
    """Check a list of hooks and sort them by step, each step in list order.

    Raises:
        `error`: Not a list, or an item defines none of the hook methods.
    """
    steps: dict[str, list[Hook]] = {name: [] for name in _HOOK_METHODS}
    for i, item in enumerate(_check_items(items, where, error)):
        for name in _check_methods(item, f"{where}[{i}]", _HOOK_METHODS, Hook, "hook", error):
            steps[name].append(item)  # type: ignore[arg-type]
    if not any(steps.values()):
        return _NO_HOOKS
    return HookSet(*(tuple(steps[name]) for name in _HOOK_METHODS))


# An args class's hooks, sorted once (and again if the class's list is replaced).
_class_hooks: weakref.WeakKeyDictionary[type, tuple[object, HookSet]] = weakref.WeakKeyDictionary()


def class_hooks(cls: type) -> HookSet:
    """The hooks an args class declares in its ``hooks`` attribute, sorted by step.

    Raises:
        InvalidInputError: The attribute is not a list of hooks.
    """
    declared = getattr(cls, "hooks", ())
    if not declared:
        return _NO_HOOKS
    cached = _class_hooks.get(cls)
    if cached is not None and cached[0] is declared:
        return cached[1]
    hooks = sort_hooks(declared, f"{cls.__qualname__}.hooks", InvalidInputError)
    _class_hooks[cls] = (declared, hooks)
    return hooks


def _note(exc: BaseException, text: str) -> None:
    if text not in getattr(exc, "__notes__", ()):
        exc.add_note(text)


class Extensions:
    """A client's middleware and hooks, checked; see the module docstring for the order.

    Args:
        middleware: ``Config.middleware``.
        hooks: ``Config.hooks``.
        error: The exception class for an invalid list.
    """

    __slots__ = (
        "hooks",
        "insert_middleware",
        "observers",
        "work_middleware",
        "wraps_every_work",
    )

    def __init__(
        self,
        middleware: Sequence[object] = (),
        hooks: Sequence[object] = (),
        error: ErrorType = InvalidInputError,
    ) -> None:
        self.insert_middleware, self.work_middleware = sort_middleware(
            middleware, "middleware", error
        )
        self.hooks = sort_hooks(hooks, "hooks", error)
        self.wraps_every_work = bool(
            self.work_middleware or self.hooks.work_begin or self.hooks.work_end
        )
        """Whether the config's own middleware or hooks wrap every job's run."""
        self.observers: tuple[Middleware, ...] = tuple(
            m  # type: ignore[misc]  # checked to be middleware just above
            for m in middleware
            if getattr(m, "queue_stats_interval", None) is not None
        )
        """Middleware that asked for the leader's queue measurements."""

    # -- inserts --

    def wraps_insert(self, args: Sequence[object]) -> bool:
        """Whether an insert of jobs with these args runs any middleware or hook."""
        if self.insert_middleware or self.hooks.insert_begin:
            return True
        return any(getattr(type(a), "hooks", None) for a in args)

    async def insert(
        self,
        args: Sequence[object],
        jobs: list[JobToInsert],
        inner: Callable[[list[JobToInsert]], Awaitable[list[InsertResult]]],
        *,
        returns_rows: bool = True,
    ) -> list[InsertResult]:
        """Run `inner` (the insert itself) inside the insert middleware and hooks. A checkpoint.

        Args:
            args: Each job's args object (its class's hooks apply).
            jobs: The jobs, resolved and checked.
            inner: Inserts the jobs as the middleware and hooks left them.
            returns_rows: False for COPY, whose `inner` returns an empty list.

        Raises:
            InvalidInputError: A middleware or hook left a job invalid (nothing
                is inserted), or an args class's ``hooks`` is invalid.
            Exception: Whatever a middleware or hook raised (with a note naming it).
        """
        params = [_to_params(job) for job in jobs]
        expected = len(params) if returns_rows else 0
        global_begin = self.hooks.insert_begin
        per_class = [class_hooks(type(a)).insert_begin for a in args]

        async def insert() -> list[InsertResult]:
            for job_params, own in zip(params, per_class, strict=True):
                for hook in (*global_begin, *own):
                    try:
                        await hook.insert_begin(job_params)
                    except Exception as exc:
                        _note(exc, f"raised by the insert_begin hook {_name(hook)}")
                        raise
            checked = [
                _from_params(p, job, i) for i, (p, job) in enumerate(zip(params, jobs, strict=True))
            ]
            return await inner(checked)

        call: Callable[[], Awaitable[list[InsertResult]]] = insert
        for middleware in reversed(self.insert_middleware):
            call = _insert_layer(middleware, params, call, expected)
        return await call()

    # -- work --

    def wraps_work(self, worker: object, args_cls: type) -> bool:
        """Whether a job of this worker and args class runs any middleware or hook."""
        return bool(
            self.wraps_every_work
            or getattr(worker, "middleware", None)
            or getattr(args_cls, "hooks", None)
        )

    async def work(
        self,
        job: JobRow,
        worker: object,
        args_cls: type,
        inner: Callable[[], Awaitable[None]],
    ) -> None:
        """Run `inner` (decode, run the worker) inside the work middleware and hooks.

        A checkpoint. Returns if the job completed; raises its error otherwise.

        Raises:
            InvalidInputError: The worker's ``middleware`` or the args class's
                ``hooks`` is invalid (the job fails with it).
        """
        _, own_middleware = sort_middleware(
            getattr(worker, "middleware", ()) or (),
            f"{type(worker).__qualname__}.middleware",
            InvalidInputError,
        )
        own = class_hooks(args_cls)
        begin = (*self.hooks.work_begin, *own.work_begin)
        end = (*self.hooks.work_end, *own.work_end)

        async def run() -> None:
            for hook in begin:
                try:
                    await hook.work_begin(job)
                except Exception as exc:
                    _note(exc, f"raised by the work_begin hook {_name(hook)}")
                    raise
            error: Exception | None = None
            try:
                await inner()
            except Exception as exc:
                error = exc
            for hook in end:
                try:
                    replaced = await hook.work_end(job, error)
                except Exception as exc:
                    _note(exc, f"raised by the work_end hook {_name(hook)}")
                    replaced = exc
                if replaced is not None and not isinstance(replaced, Exception):
                    replaced = TypeError(
                        f"the work_end hook {_name(hook)} returned {type(replaced).__name__}, "
                        "not an exception or None"
                    )
                error = replaced
            if error is not None:
                raise error

        call: Callable[[], Awaitable[None]] = run
        for middleware in reversed((*self.work_middleware, *own_middleware)):
            call = _work_layer(middleware, job, call)
        await call()


def _work_layer(
    middleware: Middleware, job: JobRow, call_next: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def layer() -> None:
        called = False
        passed: BaseException | None = None

        async def next_once() -> None:
            nonlocal called, passed
            if called:
                raise RuntimeError(
                    f"the worker middleware {_name(middleware)} called call_next twice"
                )
            called = True
            try:
                await call_next()
            except BaseException as exc:
                passed = exc
                raise

        try:
            await middleware.work(job, next_once)
        except Exception as exc:
            if exc is not passed:
                _note(exc, f"raised by the worker middleware {_name(middleware)}")
            raise

    return layer


def _insert_layer(
    middleware: Middleware,
    params: list[JobInsertParams],
    call_next: Callable[[], Awaitable[list[InsertResult]]],
    expected: int,
) -> Callable[[], Awaitable[list[InsertResult]]]:
    async def layer() -> list[InsertResult]:
        called = False
        passed: BaseException | None = None
        inserted: list[InsertResult] | None = None

        async def next_once() -> list[InsertResult]:
            nonlocal called, passed, inserted
            if called:
                raise RuntimeError(
                    f"the insert middleware {_name(middleware)} called call_next twice"
                )
            called = True
            try:
                inserted = await call_next()
            except BaseException as exc:
                passed = exc
                raise
            return inserted

        try:
            result = await middleware.insert_many(params, next_once)
        except Exception as exc:
            if exc is not passed:
                _note(exc, f"raised by the insert middleware {_name(middleware)}")
            raise
        if result is not inserted and not (
            isinstance(result, list)
            and len(result) == expected
            and all(isinstance(r, InsertResult) for r in result)
        ):
            raise TypeError(
                f"the insert middleware {_name(middleware)} returned {_name(result)}; it must "
                f"return what call_next() returned, or a list of {expected} InsertResult"
            )
        return result

    return layer


def _to_params(job: JobToInsert) -> JobInsertParams:
    return JobInsertParams(
        kind=job.kind,
        encoded_args=job.args,
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
        scheduled_at=job.scheduled_at,
        tags=list(job.tags),
        metadata=json.loads(job.metadata),
        pending=job.pending,
        unique_key=job.unique_key,
        unique_states=job.unique_states,
    )


def _from_params(p: JobInsertParams, original: JobToInsert, index: int) -> JobToInsert:
    """The job as the middleware and hooks left it, checked again."""
    where = f"params[{index}] as the insert middleware and hooks left it"

    def bad(text: str) -> InvalidInputError:
        return InvalidInputError(f"{where}: {text}")

    try:
        kind = validate_kind(p.kind)
        queue = queue_name(p.queue, InvalidInputError)
        priority = check_priority(p.priority, InvalidInputError)
        max_attempts = check_max_attempts(p.max_attempts, InvalidInputError)
        tags = validate_tags(p.tags)
        metadata = encode_metadata(p.metadata)
    except InvalidInputError as exc:
        raise bad(str(exc)) from None
    args = p.encoded_args
    if args is not original.args:
        try:
            decoded = json.loads(args) if isinstance(args, str) else None
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise bad("encoded_args must be the text of a JSON object")
    at = p.scheduled_at
    if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
        raise bad(f"scheduled_at must be a timezone-aware datetime or None, not {at!r}")
    if not isinstance(p.pending, bool):
        raise bad(f"pending must be a bool, not {type(p.pending).__name__}")
    if p.unique_key is not None and not isinstance(p.unique_key, bytes):
        raise bad("unique_key must be bytes or None")
    if p.unique_states is not None and (
        not isinstance(p.unique_states, int) or not 0 <= p.unique_states <= 255
    ):
        raise bad("unique_states must be a bitmask from 0 to 255, or None")
    return JobToInsert(
        args=args,
        kind=kind,
        max_attempts=max_attempts,
        metadata=metadata,
        priority=priority,
        queue=queue,
        scheduled_at=None if at is None else at.astimezone(UTC),
        pending=p.pending,
        tags=tags,
        unique_key=p.unique_key,
        unique_states=p.unique_states,
    )


def insert_args(params: Sequence[object]) -> list[object]:
    """The args of each entry of an insert of many (args, or (args, options)), checked already."""
    return [item[0] if isinstance(item, tuple) else item for item in params]
