"""rivertrio.testing against a database: work_job with a client, and the require_* assertions.

work_job without a client is tested in tests/unit/test_work_job.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

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
from support.testing_args import Follow, Greet

pytestmark = pytest.mark.timeout(60)


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
