"""Workers: the code that runs jobs, and the registry mapping job kinds to them."""

from __future__ import annotations

import abc
import enum
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeVar

from ._args import Job, JobArgs
from ._exceptions import ConfigError, InvalidInputError
from ._hooks import Middleware
from ._middleware import sort_middleware
from ._validate import duration

__all__ = [
    "DEFAULT_TIMEOUT",
    "Worker",
    "Workers",
    "resolve_timeout",
]

ArgsT = TypeVar("ArgsT", bound=JobArgs)
FnT = TypeVar("FnT", bound=Callable[..., Awaitable[None]])


class _DefaultTimeout(enum.Enum):
    DEFAULT_TIMEOUT = enum.auto()

    def __repr__(self) -> str:
        return "rivertrio.DEFAULT_TIMEOUT"


#: Returned by `Worker.timeout` to mean "use the config's ``job_timeout``".
DEFAULT_TIMEOUT: Final = _DefaultTimeout.DEFAULT_TIMEOUT


class Worker(abc.ABC, Generic[ArgsT]):
    """Works the jobs of one kind. Subclass as ``Worker[MyArgs]`` and define `work`.

    ``work`` returning means the job completed; raising means it failed and is
    retried per the retry policy (see `JobCancel` and `JobSnooze` for the other
    outcomes).

    What a job does never stops the client:

    - Any exception is the job's failure, BaseException subclasses included
      (``KeyboardInterrupt`` or ``SystemExit`` raised by its code, a custom
      subclass): recorded in the job's errors, and logged as an error when it is
      not an Exception. Only `trio.Cancelled` propagates, and a real Ctrl-C that
      Trio happened to deliver inside the job's code (the job is then
      interrupted and the program stops as usual).
    - ``work`` should return None. A returned value is ignored with a warning
      (the job's effects happened: a retry would repeat them), but a returned
      exception counts as raised, and a returned awaitable (a forgotten
      ``await``) fails the job.
    - ``work`` must let `trio.Cancelled` propagate. One that catches it and
      returns is recorded as completed (as in River) with a warning; until it
      returns, it holds up the client's stop.
    - Blocking calls (``time.sleep``, CPU-bound loops) stall every job of the
      process while they run; run them with ``trio.to_thread.run_sync``.
    """

    middleware: Sequence[Middleware] = ()
    """Middleware around this worker's jobs only (`rivertrio.Middleware` with a ``work``
    method), inside the config's; the first is outermost."""

    @abc.abstractmethod
    async def work(self, job: Job[ArgsT]) -> None:
        """Run the job. A checkpoint; cancelled on timeout, hard stop or ``job_cancel``."""

    def timeout(self, job: Job[ArgsT]) -> float | Literal[_DefaultTimeout.DEFAULT_TIMEOUT] | None:
        """The job's time limit in seconds; None = no limit.

        The default, `DEFAULT_TIMEOUT`, uses the config's ``job_timeout``.
        """
        return DEFAULT_TIMEOUT

    def next_retry(self, job: Job[ArgsT]) -> datetime | None:
        """When to retry after a failure (timezone-aware); None = use the retry policy."""
        return None


def resolve_timeout(worker: Worker[Any], job: Job[Any], job_timeout: float | None) -> float | None:
    """The timeout in effect for a job: the worker's, else the config's `job_timeout`.

    Raises:
        InvalidInputError: The worker returned something other than a finite
            number > 0, None or `DEFAULT_TIMEOUT`.
    """
    timeout = worker.timeout(job)
    if timeout is DEFAULT_TIMEOUT:
        return job_timeout
    if timeout is None:
        return None
    return duration(
        f"{type(worker).__qualname__}.timeout()",
        timeout,
        InvalidInputError,
        none="for no limit",
        hint="; it may also return rivertrio.DEFAULT_TIMEOUT (the config's job_timeout)",
    )


class _FunctionWorker(Worker[ArgsT]):
    """A worker made from an async function by `Workers.register`."""

    def __init__(self, fn: Callable[[Job[ArgsT]], Awaitable[None]]) -> None:
        self.fn = fn

    async def work(self, job: Job[ArgsT]) -> None:
        await self.fn(job)

    def __repr__(self) -> str:
        return f"<worker {getattr(self.fn, '__qualname__', self.fn)!r}>"


def _infer_args_class(worker_cls: type) -> type[JobArgs] | None:
    # Walk the class hierarchy for a parametrised generic base such as
    # Worker[SendEmail] (or MyBase[SendEmail] where MyBase is itself a Worker).
    for klass in worker_cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and issubclass(origin, Worker)):
                continue
            for arg in typing.get_args(base):
                if isinstance(arg, type) and issubclass(arg, JobArgs):
                    return arg
    return None


def _check_args_class(args_cls: object) -> type[JobArgs]:
    if not (isinstance(args_cls, type) and issubclass(args_cls, JobArgs)):
        raise TypeError(f"{args_cls!r} is not a rivertrio.JobArgs subclass")
    if not isinstance(getattr(args_cls, "kind", None), str):
        raise ConfigError(f"{args_cls.__qualname__} has no job kind")
    return args_cls


class Workers:
    """The registry of workers, one per job kind.

    Example::

        workers = rivertrio.Workers()
        workers.add(SendEmailWorker())

        @workers.register(Resize)
        async def resize(job: rivertrio.Job[Resize]) -> None: ...
    """

    def __init__(self) -> None:
        self._by_kind: dict[str, tuple[type[JobArgs], Worker[Any]]] = {}

    def add(self, worker: Worker[ArgsT], args_cls: type[ArgsT] | None = None) -> None:
        """Register a worker for its args class's kind and its kind aliases.

        Args:
            worker: A `Worker` instance.
            args_cls: The args class; inferred from a ``Worker[ArgsClass]`` base if omitted.

        Raises:
            TypeError: `worker` is not a Worker with an async ``work``, or `args_cls`
                is not a JobArgs subclass.
            ConfigError: The args class cannot be inferred, or its kind or one
                of its aliases already has a worker.
        """
        if not isinstance(worker, Worker):
            raise TypeError(
                f"{worker!r} is not a rivertrio.Worker; subclass rivertrio.Worker[YourArgs] "
                "or use @workers.register(YourArgs) on an async function"
            )
        if not inspect.iscoroutinefunction(worker.work):
            raise TypeError(f"{type(worker).__qualname__}.work must be an async function")
        _, wraps_work = sort_middleware(
            worker.middleware, f"{type(worker).__qualname__}.middleware", ConfigError
        )
        if len(wraps_work) != len(worker.middleware):
            raise ConfigError(
                f"{type(worker).__qualname__}.middleware: a worker's middleware must define "
                "work (insert_many runs only from Config(middleware=...))"
            )
        if args_cls is None:
            inferred = _infer_args_class(type(worker))
            if inferred is None:
                raise ConfigError(
                    f"cannot tell which args class {type(worker).__qualname__} works: "
                    "subclass rivertrio.Worker[YourArgs] or call workers.add(worker, YourArgs)"
                )
            args_cls = typing.cast("type[ArgsT]", inferred)
        checked = _check_args_class(args_cls)
        # The kind aliases answer to the same worker (River's KindAliases): jobs
        # queued under a kind's old name are worked after a rename.
        kinds = (checked.kind, *checked.kind_aliases)
        for kind in kinds:
            if kind in self._by_kind:
                raise ConfigError(
                    f"a worker for job kind {kind!r} is already registered "
                    f"({self._by_kind[kind][1]!r})"
                )
        for kind in kinds:
            self._by_kind[kind] = (checked, worker)

    def register(
        self, args_cls: type[ArgsT], *, middleware: Sequence[Middleware] = ()
    ) -> Callable[[FnT], FnT]:
        """Decorator: register an async function ``(job) -> None`` as the worker of a kind.

        The function is returned unchanged. `middleware` wraps its jobs only
        (see `Worker.middleware`).

        Raises:
            TypeError: The function is not async, or `args_cls` is not a JobArgs subclass.
            ConfigError: The kind already has a worker.
        """
        _check_args_class(args_cls)

        def decorate(fn: FnT) -> FnT:
            candidate: object = fn  # checked apart, so mypy does not narrow fn's type
            if not inspect.iscoroutinefunction(candidate):
                raise TypeError(
                    f"{getattr(fn, '__qualname__', fn)!r} must be an async function "
                    "to be registered as a worker"
                )
            worker = _FunctionWorker[ArgsT](fn)
            worker.middleware = tuple(middleware)
            self.add(worker, args_cls)
            return fn

        return decorate

    def get(self, kind: str) -> tuple[type[JobArgs], Worker[Any]] | None:
        """The args class and worker registered for `kind`, or None."""
        return self._by_kind.get(kind)

    @property
    def kinds(self) -> frozenset[str]:
        """The registered job kinds, kind aliases included."""
        return frozenset(self._by_kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __len__(self) -> int:
        return len(self._by_kind)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __repr__(self) -> str:
        return f"<Workers kinds={sorted(self._by_kind)}>"
