"""``rivertrio.testing.work_job``: a worker run on one job as the client would, with no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio import InsertOpts, JobState
from rivertrio.testing import work_job
from support.testing_args import Follow, Greet

pytestmark = pytest.mark.timeout(60)


@dataclass
class Billing(rivertrio.JobArgs, kind="billing_job"):
    insert_opts: ClassVar[InsertOpts] = InsertOpts(queue="billing", priority=2)
    invoice: int


class GreetWorker(rivertrio.Worker[Greet]):
    """Records the jobs it sees; the args' ``name`` picks what it does."""

    def __init__(self, *, timeout: float | None = None, retry_at: datetime | None = None) -> None:
        self.jobs: list[rivertrio.Job[Greet]] = []
        self._timeout = timeout
        self._retry_at = retry_at

    async def work(self, job: rivertrio.Job[Greet]) -> None:
        self.jobs.append(job)
        if job.args.name == "boom":
            raise ValueError("boom")
        if job.args.name == "nobody":
            raise rivertrio.JobCancel("no such user")
        if job.args.name == "later":
            raise rivertrio.JobSnooze(30)
        if job.args.name == "stuck":
            await trio.sleep_forever()

    def timeout(self, job: rivertrio.Job[Greet]) -> Any:
        return rivertrio.DEFAULT_TIMEOUT if self._timeout is None else self._timeout

    def next_retry(self, job: rivertrio.Job[Greet]) -> datetime | None:
        return self._retry_at


async def test_returning_completes_with_the_job_built_as_fetched() -> None:
    worker = GreetWorker()
    before = datetime.now(UTC)
    result = await work_job(
        worker,
        Greet(name="ann", times=2),
        opts=InsertOpts(queue="mail", priority=3, max_attempts=4, tags=["vip"], metadata={"k": 1}),
    )
    assert result.kind == "completed"
    assert (result.error, result.exception, result.snooze_seconds, result.retry_delay) == (
        None,
        None,
        None,
        None,
    )
    assert not result.discarded
    (job,) = worker.jobs
    assert job.args == Greet(name="ann", times=2)
    assert (job.state, job.attempt, job.kind) == (JobState.RUNNING, 1, "greet")
    assert (job.queue, job.priority, job.max_attempts) == ("mail", 3, 4)
    assert (job.tags, job.metadata, job.errors) == (["vip"], {"k": 1}, [])
    assert job.attempted_at is not None
    assert before <= job.attempted_at <= datetime.now(UTC)
    assert job.finalized_at is None
    assert result.job.id == job.id
    assert result.job.encoded_args == '{"name":"ann","times":2}'
    assert repr(result) == f"WorkResult(kind='completed', job=<job {job.id} of kind 'greet'>)"


async def test_options_resolve_as_an_insert_resolves_them() -> None:
    seen: list[rivertrio.Job[Billing]] = []

    async def work(job: rivertrio.Job[Billing]) -> None:
        seen.append(job)

    config = rivertrio.Config(max_attempts=7, id="tester")
    await work_job(work, Billing(invoice=1), config=config)
    await work_job(work, Billing(invoice=2), opts=InsertOpts(priority=4), config=config)
    first, second = seen
    assert (first.queue, first.priority, first.max_attempts) == ("billing", 2, 7)
    assert (second.queue, second.priority) == ("billing", 4)
    assert first.attempted_by == ["tester"]
    assert first.id != second.id


async def test_raising_fails_with_the_error_and_the_retry() -> None:
    result = await work_job(GreetWorker(), Greet(name="boom"))
    assert result.kind == "failed"
    assert result.error == "ValueError: boom"
    assert isinstance(result.exception, ValueError)
    assert str(result.exception) == "boom"
    assert result.exception.__traceback__ is not None
    # The default policy: 1 s after the first failure, +-10%.
    assert result.retry_delay is not None
    assert 0.9 <= result.retry_delay <= 1.1
    assert result.job.attempted_at is not None
    assert result.retry_at == result.job.attempted_at + timedelta(seconds=result.retry_delay)
    assert not result.discarded
    assert "error='ValueError: boom'" in repr(result)


async def test_the_configs_retry_policy_applies() -> None:
    config = rivertrio.Config(retry_policy=lambda row: 42.0)
    result = await work_job(GreetWorker(), Greet(name="boom"), config=config)
    assert (result.kind, result.retry_delay) == ("failed", 42.0)


async def test_the_workers_next_retry_applies() -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    result = await work_job(GreetWorker(retry_at=at), Greet(name="boom"))
    assert result.kind == "failed"
    assert result.retry_at == at
    assert result.job.attempted_at is not None
    assert result.retry_delay == (at - result.job.attempted_at).total_seconds()


async def test_failing_the_last_attempt_is_discarded() -> None:
    result = await work_job(GreetWorker(), Greet(name="boom"), opts=InsertOpts(max_attempts=1))
    assert result.kind == "failed"
    assert result.discarded
    assert (result.retry_delay, result.retry_at) == (None, None)


async def test_job_cancel_cancels() -> None:
    result = await work_job(GreetWorker(), Greet(name="nobody"))
    assert result.kind == "cancelled"
    assert result.error == "JobCancel: no such user"
    assert (result.exception, result.retry_delay, result.snooze_seconds) == (None, None, None)


async def test_job_snooze_snoozes() -> None:
    result = await work_job(GreetWorker(), Greet(name="later"))
    assert result.kind == "snoozed"
    assert result.snooze_seconds == 30.0
    assert (result.error, result.retry_delay) == (None, None)


async def test_the_workers_timeout_fails_the_job() -> None:
    with trio.fail_after(10):
        result = await work_job(GreetWorker(timeout=0.05), Greet(name="stuck"))
    assert result.kind == "failed"
    assert isinstance(result.exception, rivertrio.JobTimeoutError)
    assert result.error == "JobTimeoutError: job exceeded its timeout of 0.05 s"


async def test_the_configs_job_timeout_fails_the_job() -> None:
    async def work(job: rivertrio.Job[Greet]) -> None:
        await trio.sleep_forever()

    config = rivertrio.Config(job_timeout=0.05)
    with trio.fail_after(10):
        result = await work_job(work, Greet(name="x"), config=config)
    assert result.kind == "failed"
    assert isinstance(result.exception, rivertrio.JobTimeoutError)


async def test_the_configs_error_handler_sees_the_error_and_may_cancel() -> None:
    handled: list[tuple[int, BaseException]] = []

    async def handler(row: rivertrio.JobRow, error: BaseException) -> rivertrio.ErrorHandlerResult:
        handled.append((row.id, error))
        return rivertrio.ErrorHandlerResult(set_cancelled=True)

    result = await work_job(
        GreetWorker(), Greet(name="boom"), config=rivertrio.Config(error_handler=handler)
    )
    assert result.kind == "cancelled"
    assert isinstance(result.exception, ValueError)
    assert handled == [(result.job.id, result.exception)]
    assert result.error == "ValueError: boom"


async def test_args_that_do_not_decode_fail_the_job() -> None:
    # Encodes fine, but `name` is annotated str: the worker never runs, as for a real job.
    worker = GreetWorker()
    result = await work_job(worker, Greet(name=5))  # type: ignore[arg-type]
    assert result.kind == "failed"
    assert result.error is not None
    assert result.error.startswith("JobDecodeError: ")
    assert "field 'name' should be str" in result.error
    assert worker.jobs == []


async def test_args_an_insert_refuses_raise() -> None:
    with pytest.raises(rivertrio.InvalidInputError, match=r"Greet field 'times' .*NaN"):
        await work_job(GreetWorker(), Greet(name="x", times=float("nan")))  # type: ignore[arg-type]
    with pytest.raises(rivertrio.InvalidInputError, match=r"must be a rivertrio\.JobArgs instance"):
        await work_job(GreetWorker(), {"name": "x"})  # type: ignore[type-var, arg-type]
    with pytest.raises(rivertrio.InvalidInputError, match="insert options must be"):
        await work_job(GreetWorker(), Greet(name="x"), opts={"queue": "q"})  # type: ignore[arg-type]


async def test_args_of_another_kind_than_the_workers_raise() -> None:
    with pytest.raises(
        rivertrio.UnknownJobKindError,
        match=r"GreetWorker works job kind 'greet', but the args are a Follow of kind 'follow_up'",
    ):
        await work_job(GreetWorker(), Follow(to="x"))  # type: ignore[arg-type]


async def test_a_bad_worker_raises() -> None:
    with pytest.raises(TypeError, match=r"not the class: work_job\(GreetWorker\(\), \.\.\.\)"):
        await work_job(GreetWorker, Greet(name="x"))  # type: ignore[arg-type]

    def sync_work(job: rivertrio.Job[Greet]) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        await work_job(sync_work, Greet(name="x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config must be a rivertrio\.Config"):
        await work_job(GreetWorker(), Greet(name="x"), config={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"client must be a rivertrio\.Client"):
        await work_job(GreetWorker(), Greet(name="x"), client="db")  # type: ignore[arg-type]


async def test_without_a_client_current_client_says_to_pass_one() -> None:
    async def work(job: rivertrio.Job[Greet]) -> None:
        await rivertrio.current_client().insert(Follow(to="x"))

    result = await work_job(work, Greet(name="x"))
    assert result.kind == "failed"
    assert isinstance(result.exception, RuntimeError)
    assert "pass client=... to work_job" in str(result.exception)


async def test_cancelling_the_caller_cancels_the_job() -> None:
    reached_after = False
    with trio.CancelScope() as scope:

        async def work(job: rivertrio.Job[Greet]) -> None:
            scope.cancel()
            await trio.sleep_forever()

        await work_job(work, Greet(name="x"))
        reached_after = True
    assert scope.cancelled_caught
    assert not reached_after
