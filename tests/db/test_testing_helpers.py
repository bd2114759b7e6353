"""rivertrio.testing's helpers for users' tests: work_job and the require_* assertions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio import InsertOpts, JobState
from rivertrio._driver import Driver
from rivertrio.testing import (
    RequireInsertedOpts,
    require_inserted,
    require_many_inserted,
    require_not_inserted,
    work_job,
)
from support.common import running

pytestmark = pytest.mark.timeout(60)


@dataclass
class Greet(rivertrio.JobArgs, kind="greet"):
    name: str
    times: int = 1


@dataclass
class Follow(rivertrio.JobArgs, kind="follow_up"):
    """Its fields `count` and `opts` clash with keywords of the require_* helpers."""

    to: str
    count: int = 1
    opts: str = ""


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


# -- work_job --


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


# -- with a database --


@asynccontextmanager
async def insert_only(database_url: str, schema: str) -> AsyncIterator[rivertrio.Client]:
    async with running(rivertrio.Config(schema=schema), database_url) as client:
        yield client


async def test_with_a_client_the_worker_uses_it(database_url: str, migrated_schema: str) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        seen: list[rivertrio.Client] = []

        async def work(job: rivertrio.Job[Greet]) -> None:
            seen.append(rivertrio.current_client())
            await rivertrio.current_client().insert(Follow(to=f"{job.args.name}@example.com"))

        result = await work_job(work, Greet(name="ann"), client=client)
        assert result.kind == "completed", result
        assert seen == [client]
        # The executor sets current_client() in a task of its own, not in ours.
        with pytest.raises(RuntimeError, match="only available inside a job"):
            rivertrio.current_client()
        job = await require_inserted(client, Follow, to="ann@example.com")
        assert job.args == Follow(to="ann@example.com")
        # The client's config applies when none is given.
        assert result.job.attempted_by == [client.config.id]


async def test_require_inserted_returns_the_job(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    opts = InsertOpts(
        queue="mail", priority=2, max_attempts=5, tags=["x-y"], metadata={"k": 1}, scheduled_at=at
    )
    async with insert_only(database_url, migrated_schema) as client:
        res = await client.insert(Follow(to="a", count=2), opts)
        await client.insert(Greet(name="other"))
        job = await require_inserted(client, Follow)
        assert job.id == res.job.id
        assert job.args == Follow(to="a", count=2)
        expected = RequireInsertedOpts(
            queue="mail",
            priority=2,
            max_attempts=5,
            state="scheduled",
            tags=["x-y"],
            metadata={"k": 1},
            scheduled_at=at,
        )
        job = await require_inserted(client, Follow, to="a", opts=expected)
        assert job.id == res.job.id
        # A Driver works too, and so does a transaction (below).
        assert (await require_inserted(driver, Follow, to="a")).id == res.job.id


async def test_require_inserted_names_the_expectation_when_no_job_of_the_kind_exists(
    database_url: str, migrated_schema: str
) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        with pytest.raises(AssertionError) as empty:
            await require_inserted(client, Follow, to="a")
        await client.insert(Greet(name="x"))
        await client.insert(Greet(name="y"))
        with pytest.raises(AssertionError) as other_kinds:
            await require_inserted(client, Follow, to="a", opts=RequireInsertedOpts(queue="mail"))
    assert str(empty.value) == (
        "require_inserted: expected a job of kind 'follow_up' (Follow) with to='a', but no job "
        "of kind 'follow_up' was found (river_job holds no jobs at all)"
    )
    assert str(other_kinds.value) == (
        "require_inserted: expected a job of kind 'follow_up' (Follow) with to='a', "
        "queue='mail', but no job of kind 'follow_up' was found (jobs found: 2 of kind 'greet')"
    )


async def test_require_inserted_names_what_differs_in_each_near_miss(
    database_url: str, migrated_schema: str
) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        first = (await client.insert(Follow(to="b"))).job
        second = (await client.insert(Follow(to="a"), InsertOpts(queue="mail"))).job
        with pytest.raises(AssertionError) as failed:
            await require_inserted(client, Follow, to="a", opts=RequireInsertedOpts(queue="other"))
    assert str(failed.value) == (
        "require_inserted: expected a job of kind 'follow_up' (Follow) with to='a', "
        "queue='other'; found 2 jobs of that kind, none matching\n"
        "jobs of kind 'follow_up' that do not match:\n"
        f"  job {first.id}: to='b' (expected 'a'), queue='default' (expected 'other')\n"
        f"  job {second.id}: queue='mail' (expected 'other')"
    )


@pytest.mark.parametrize(
    ("expected", "problem"),
    [
        (RequireInsertedOpts(queue="other"), "queue='mail' (expected 'other')"),
        (RequireInsertedOpts(priority=1), "priority=2 (expected 1)"),
        (RequireInsertedOpts(max_attempts=25), "max_attempts=5 (expected 25)"),
        (RequireInsertedOpts(state=JobState.COMPLETED), "state='available' (expected 'completed')"),
        (RequireInsertedOpts(tags=["x-y"]), "tags=['x-y', 'abc'] (expected ['x-y'])"),
        (
            RequireInsertedOpts(metadata={"k": 2}),
            "metadata={'k': 1, 'm': 'n'} (expected it to contain {'k': 2})",
        ),
        (
            RequireInsertedOpts(scheduled_at=datetime(2000, 1, 1, tzinfo=UTC)),
            "(expected 2000-01-01T00:00:00+00:00)",
        ),
    ],
)
async def test_each_row_expectation_is_checked(
    database_url: str, migrated_schema: str, expected: RequireInsertedOpts, problem: str
) -> None:
    opts = InsertOpts(
        queue="mail", priority=2, max_attempts=5, tags=["x-y", "abc"], metadata={"k": 1, "m": "n"}
    )
    matching = RequireInsertedOpts(tags=["x-y", "abc"], metadata={"m": "n"})
    async with insert_only(database_url, migrated_schema) as client:
        res = await client.insert(Follow(to="a"), opts)
        # The expectations that hold do not get in the way.
        assert (await require_inserted(client, Follow, opts=matching)).id == res.job.id
        with pytest.raises(AssertionError) as failed:
            await require_inserted(client, Follow, opts=expected)
        with pytest.raises(AssertionError):
            await require_many_inserted(client, Follow, opts=expected)
        await require_not_inserted(client, Follow, opts=expected)
    assert f"  job {res.job.id}: " in str(failed.value)
    assert problem in str(failed.value)


async def test_several_matches_need_require_many_inserted(
    database_url: str, migrated_schema: str
) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        ids = [(await client.insert(Follow(to="a", count=n))).job.id for n in (1, 2)]
        other = (await client.insert(Follow(to="b"))).job.id
        with pytest.raises(AssertionError) as several:
            await require_inserted(client, Follow, to="a")
        # Narrowed down to one, it passes.
        assert (await require_inserted(client, Follow, to="a", count=2)).id == ids[1]

        jobs = await require_many_inserted(client, Follow, to="a")
        assert [job.id for job in jobs] == ids
        assert [job.args.count for job in jobs] == [1, 2]
        assert [j.id for j in await require_many_inserted(client, Follow, count=3)] == [*ids, other]
        assert [j.id for j in await require_many_inserted(client, Follow, count=2, to="a")] == ids
        with pytest.raises(AssertionError) as too_few:
            await require_many_inserted(client, Follow, count=3, to="a")
        with pytest.raises(AssertionError) as too_many:
            await require_many_inserted(client, Follow, count=1, to="a")
        with pytest.raises(AssertionError) as none:
            await require_many_inserted(client, Follow, to="c")
        with pytest.raises(rivertrio.InvalidInputError, match="use require_not_inserted"):
            await require_many_inserted(client, Follow, count=0)
    assert str(several.value) == (
        "require_inserted: expected exactly one job of kind 'follow_up' (Follow) with to='a'; "
        f"found 2 matching (ids {ids[0]}, {ids[1]}): use require_many_inserted(..., count=2) "
        "to require several"
    )
    assert str(too_few.value).startswith(
        "require_many_inserted: expected 3 jobs of kind 'follow_up' (Follow) with to='a'; "
        f"found 3 jobs of that kind, 2 matching (ids {ids[0]}, {ids[1]})\n"
    )
    assert f"  job {other}: to='b' (expected 'a')" in str(too_few.value)
    assert str(too_many.value) == (
        "require_many_inserted: expected 1 jobs of kind 'follow_up' (Follow) with to='a'; "
        f"found 2 matching (ids {ids[0]}, {ids[1]})"
    )
    assert str(none.value).startswith(
        "require_many_inserted: expected at least one job of kind 'follow_up' (Follow) with "
        "to='c'; found 3 jobs of that kind, none matching\n"
    )


async def test_fields_named_like_the_helpers_keywords_go_in_expected_args(
    database_url: str, migrated_schema: str
) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        res = await client.insert(Follow(to="a", count=3, opts="fast"))
        await client.insert(Follow(to="a", count=4, opts="slow"))
        jobs = await require_many_inserted(
            client, Follow, count=1, expected_args={"count": 3, "opts": "fast"}
        )
        assert [job.id for job in jobs] == [res.job.id]
        with pytest.raises(TypeError, match="field 'to' is given both"):
            await require_inserted(client, Follow, to="a", expected_args={"to": "a"})


async def test_require_not_inserted(database_url: str, migrated_schema: str) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        await require_not_inserted(client, Follow)
        res = await client.insert(Follow(to="a"), InsertOpts(queue="mail"))
        await require_not_inserted(client, Follow, to="b")
        await require_not_inserted(client, Greet)
        with pytest.raises(AssertionError) as any_of_kind:
            await require_not_inserted(client, Follow)
        with pytest.raises(AssertionError) as matching:
            await require_not_inserted(
                client, Follow, to="a", opts=RequireInsertedOpts(queue="mail")
            )
    line = f"  job {res.job.id}: state='available', queue='mail', priority=1, args "
    assert str(any_of_kind.value) == (
        "require_not_inserted: expected no job of kind 'follow_up' (Follow); found 1:\n"
        f"{line}{res.job.encoded_args}"
    )
    assert str(matching.value).startswith(
        "require_not_inserted: expected no job of kind 'follow_up' (Follow) with to='a', "
        f"queue='mail'; found 1:\n{line}"
    )


class Rollback(Exception):
    pass


async def test_inside_a_transaction_before_commit(database_url: str, migrated_schema: str) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        async with client.transaction() as tx:
            res = await client.insert_tx(tx, Follow(to="a"))
            job = await require_inserted(tx, Follow, to="a")
            assert job.id == res.job.id
            # Not committed: the pool's other connections do not see it yet.
            await require_not_inserted(client, Follow)
        assert (await require_inserted(client, Follow, to="a")).id == res.job.id

        async def insert_then_roll_back() -> None:
            async with client.transaction() as tx:
                await client.insert_tx(tx, Follow(to="b"))
                await require_inserted(tx, Follow, to="b")
                raise Rollback

        with pytest.raises(Rollback):
            await insert_then_roll_back()
        await require_not_inserted(client, Follow, to="b")
        await require_inserted(client, Follow)


async def test_stored_args_that_do_not_decode_are_named(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    job_id = await driver.fetchval(
        "INSERT INTO /*schema*/river_job (args, kind, max_attempts) "
        """VALUES ('{"too": 1}', 'follow_up', 25) RETURNING id"""
    )
    async with insert_only(database_url, migrated_schema) as client:
        with pytest.raises(AssertionError) as failed:
            await require_inserted(client, Follow)
        # It is still a job of the kind: require_not_inserted without args expected sees it.
        with pytest.raises(AssertionError, match=f"job {job_id}: state='available'"):
            await require_not_inserted(client, Follow)
        await require_not_inserted(client, Follow, to="a")
    assert (
        f"  job {job_id}: args '{{\"too\": 1}}' do not decode into Follow "
        "(JobDecodeError: field 'to' is missing (it has no default))"
    ) in str(failed.value)


async def test_bad_requirements_raise(database_url: str, migrated_schema: str) -> None:
    async with insert_only(database_url, migrated_schema) as client:
        with pytest.raises(TypeError, match=r"takes the args class, not an instance: pass Follow"):
            await require_inserted(client, Follow(to="a"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"is not a rivertrio\.JobArgs subclass"):
            await require_inserted(client, dict)  # type: ignore[type-var]
        with pytest.raises(TypeError, match=r"Follow has no field 'too' \(its fields: to, count"):
            await require_not_inserted(client, Follow, too="a")
        with pytest.raises(TypeError, match=r"takes a rivertrio\.Client or a transaction"):
            await require_inserted("db", Follow)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"RequireInsertedOpts, not InsertOpts \(InsertOpts"):
            await require_inserted(client, Follow, opts=InsertOpts(queue="a"))  # type: ignore[arg-type]
    with pytest.raises(rivertrio.InvalidInputError, match="state: 'done' is not a job state"):
        RequireInsertedOpts(state="done")
    with pytest.raises(rivertrio.InvalidInputError, match=r"tags must be a list .*tags=\[\.\.\.\]"):
        RequireInsertedOpts(tags="abc")
    with pytest.raises(rivertrio.InvalidInputError, match="scheduled_at must be a timezone-aware"):
        RequireInsertedOpts(scheduled_at=datetime(2000, 1, 1))
    with pytest.raises(rivertrio.InvalidInputError, match="priority must be an int"):
        RequireInsertedOpts(priority="1")  # type: ignore[arg-type]
