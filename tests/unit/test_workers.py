"""The worker registry, worker defaults, and the JobCancel / JobSnooze requests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest

from rivertrio import ConfigError, InvalidInputError
from rivertrio._args import Job, JobArgs
from rivertrio._exceptions import JobCancel, JobSnooze
from rivertrio._worker import DEFAULT_TIMEOUT, Worker, Workers, resolve_timeout
from support.common import running_row


@dataclass
class Email(JobArgs, kind="wk_email"):
    to: str


@dataclass
class Resize(JobArgs, kind="wk_resize"):
    width: int


class EmailWorker(Worker[Email]):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def work(self, job: Job[Email]) -> None:
        self.seen.append(job.args.to)


A = TypeVar("A", bound=JobArgs)


class LoggingWorker(Worker[A], Generic[A]):
    """A generic intermediate base, as users write for shared behaviour."""

    async def work(self, job: Job[A]) -> None:
        pass


class ResizeWorker(LoggingWorker[Resize]):
    pass


class Unparametrised(Worker):  # type: ignore[type-arg]
    async def work(self, job: Job[Any]) -> None:
        pass


def make_job(args: JobArgs) -> Job[Any]:
    row = running_row(kind=type(args).kind, encoded_args=json.dumps(args.to_json()))
    return Job.from_row(row, args)


def test_add_infers_the_args_class() -> None:
    workers = Workers()
    worker = EmailWorker()
    workers.add(worker)
    assert workers.get("wk_email") == (Email, worker)
    assert workers.kinds == frozenset({"wk_email"})
    assert "wk_email" in workers
    assert len(workers) == 1
    assert list(workers) == ["wk_email"]
    assert workers.get("nope") is None


def test_add_infers_through_a_generic_intermediate_base() -> None:
    workers = Workers()
    worker = ResizeWorker()
    workers.add(worker)
    assert workers.get("wk_resize") == (Resize, worker)


def test_add_without_inferable_args_class() -> None:
    workers = Workers()
    with pytest.raises(ConfigError, match=r"cannot tell which args class Unparametrised works"):
        workers.add(Unparametrised())
    workers.add(Unparametrised(), Resize)
    entry = workers.get("wk_resize")
    assert entry is not None
    assert entry[0] is Resize


def test_duplicate_kind_is_rejected_naming_it() -> None:
    workers = Workers()
    workers.add(EmailWorker())
    with pytest.raises(ConfigError, match="job kind 'wk_email' is already registered"):
        workers.add(EmailWorker())
    with pytest.raises(ConfigError, match="job kind 'wk_email' is already registered"):

        @workers.register(Email)
        async def again(job: Job[Email]) -> None:
            pass


async def test_register_decorator_makes_a_worker() -> None:
    workers = Workers()
    calls: list[int] = []

    @workers.register(Resize)
    async def resize(job: Job[Resize]) -> None:
        calls.append(job.args.width)

    # The function is returned unchanged, still callable directly.
    assert resize.__name__ == "resize"
    entry = workers.get("wk_resize")
    assert entry is not None
    args_cls, worker = entry
    assert args_cls is Resize
    job = make_job(Resize(width=640))
    await worker.work(job)
    await resize(job)
    assert calls == [640, 640]
    assert worker.timeout(job) is DEFAULT_TIMEOUT
    assert worker.next_retry(job) is None
    assert "resize" in repr(worker)


def test_register_rejects_sync_functions() -> None:
    workers = Workers()

    def plain(job: Job[Resize]) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        workers.register(Resize)(plain)  # type: ignore[type-var]
    assert len(workers) == 0


def test_register_rejects_non_args_classes() -> None:
    with pytest.raises(TypeError, match=r"is not a rivertrio\.JobArgs subclass"):
        Workers().register(dict)  # type: ignore[type-var]


def test_add_rejects_non_workers() -> None:
    workers = Workers()

    async def fn(job: Job[Email]) -> None:
        pass

    with pytest.raises(TypeError, match=r"is not a rivertrio\.Worker"):
        workers.add(fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"is not a rivertrio\.JobArgs subclass"):
        workers.add(Unparametrised(), int)


def test_worker_with_sync_work_is_rejected() -> None:
    class SyncWorker(Worker[Email]):
        def work(self, job: Job[Email]) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match=r"SyncWorker.work must be an async function"):
        Workers().add(SyncWorker())


def test_worker_must_define_work() -> None:
    class Lazy(Worker[Email]):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Lazy()  # type: ignore[abstract]


async def test_worker_defaults_and_work() -> None:
    worker = EmailWorker()
    job = make_job(Email(to="a@b.c"))
    await worker.work(job)
    assert worker.seen == ["a@b.c"]
    assert worker.timeout(job) is DEFAULT_TIMEOUT
    assert worker.next_retry(job) is None
    assert repr(DEFAULT_TIMEOUT) == "rivertrio.DEFAULT_TIMEOUT"


class TimedWorker(Worker[Email]):
    def __init__(self, timeout: Any) -> None:
        self._timeout = timeout

    async def work(self, job: Job[Email]) -> None:
        pass

    def timeout(self, job: Job[Email]) -> Any:
        return self._timeout


def test_resolve_timeout() -> None:
    job = make_job(Email(to="x"))
    # The worker's own value wins; DEFAULT_TIMEOUT defers to the config; None = none.
    assert resolve_timeout(TimedWorker(5), job, 60.0) == 5.0
    assert resolve_timeout(TimedWorker(DEFAULT_TIMEOUT), job, 60.0) == 60.0
    assert resolve_timeout(TimedWorker(DEFAULT_TIMEOUT), job, None) is None
    assert resolve_timeout(TimedWorker(None), job, 60.0) is None
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(
            InvalidInputError,
            match=r"^TimedWorker\.timeout\(\) must be a finite number of seconds, greater than 0",
        ):
            resolve_timeout(TimedWorker(bad), job, 60.0)


def test_job_cancel_carries_its_reason() -> None:
    assert JobCancel("no longer needed").reason == "no longer needed"
    assert str(JobCancel("no longer needed")) == "no longer needed"
    cause = ValueError("bad input")
    assert JobCancel(cause).reason is cause
    assert str(JobCancel(cause)) == "bad input"
    assert JobCancel().reason == ""


@pytest.mark.parametrize("seconds", [0, 0.5, 30, 86400.0])
def test_job_snooze_accepts_non_negative(seconds: float) -> None:
    snooze = JobSnooze(seconds)
    assert snooze.seconds == seconds
    assert isinstance(snooze.seconds, float)


@pytest.mark.parametrize("seconds", [-1, -0.001, float("nan"), float("inf"), "5", True, None])
def test_job_snooze_rejects_invalid(seconds: Any) -> None:
    with pytest.raises(
        InvalidInputError, match="JobSnooze seconds must be a finite number of seconds, 0 or more"
    ):
        JobSnooze(seconds)
