"""Inserting jobs against a real Postgres: defaults, options, validation, unique, notifications."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio import DatabaseError, InvalidInputError, UnknownJobKindError
from rivertrio._args import InsertOpts, Job, JobArgs
from rivertrio._config import Config, QueueConfig
from rivertrio._driver import Driver, Listener
from rivertrio._driver._producer import fetch_jobs
from rivertrio._insert import Inserter, InsertResult
from rivertrio._job import JobRow, JobState
from rivertrio._unique import UniqueOpts
from rivertrio._worker import Worker, Workers

SENTINEL = '{"queue":"zz_sentinel"}'


@dataclass
class Email(JobArgs, kind="ins_email"):
    to: str = "a@b.c"


@dataclass
class Other(JobArgs, kind="ins_other"):
    n: int = 0


@dataclass
class WithDefaults(JobArgs, kind="ins_with_defaults"):
    insert_opts: ClassVar[InsertOpts | None] = InsertOpts(
        queue="classq",
        priority=3,
        max_attempts=7,
        tags=["from_class"],
        metadata={"src": "class"},
    )
    x: int = 0


@dataclass
class PendingByClass(JobArgs, kind="ins_pending_by_class"):
    insert_opts: ClassVar[InsertOpts | None] = InsertOpts(pending=True)


@dataclass
class BadArgs(JobArgs, kind="ins_bad_args"):
    when: Any = field(default_factory=lambda: datetime.now(UTC))


class EmailWorker(Worker[Email]):
    async def work(self, job: Job[Email]) -> None:
        pass


class FakeClock:
    """A settable clock for the notification debounce (no database time involved)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def listener(driver: Driver) -> AsyncIterator[Listener]:
    lis = await driver.open_listener()
    try:
        await lis.listen("river_insert")
        yield lis
    finally:
        await lis.aclose()


async def notified_queues(driver: Driver, listener: Listener) -> list[str]:
    """The insert notifications received so far, in order.

    A sentinel sent now arrives after every notification committed before it
    (Postgres delivers in commit order), so no sleeping is needed.
    """
    await driver.notify("river_insert", SENTINEL)
    queues: list[str] = []
    with trio.fail_after(10):
        while True:
            note = await listener.receive.receive()
            if note.payload == SENTINEL:
                return queues
            queues.append(json.loads(note.payload)["queue"])


async def count_jobs(driver: Driver) -> int:
    return int(await driver.fetchval("SELECT count(*) FROM /*schema*/river_job"))


async def stored(driver: Driver, job_id: int) -> JobRow:
    rec = await driver.fetchrow(
        "SELECT *, unique_states::int AS unique_states FROM /*schema*/river_job WHERE id = $1",
        job_id,
    )
    assert rec is not None
    fields = dict(rec.items())
    fields["unique_states"] = rec["unique_states"]
    return JobRow.from_record(fields)


def insert_only(**kwargs: Any) -> Config:
    return Config(**kwargs)


def working() -> Config:
    workers = Workers()
    workers.add(EmailWorker())
    return Config(queues={"default": QueueConfig(max_workers=2)}, workers=workers)


# --- defaults ---


async def test_insert_with_no_options_gets_the_defaults(driver: Driver) -> None:
    res = await Inserter(driver, insert_only()).insert(driver, Email(to="x@y.z"))
    assert res.unique_skipped_as_duplicate is False
    job = await stored(driver, res.job.id)
    assert job == res.job
    assert job.state is JobState.AVAILABLE
    assert job.attempt == 0
    assert job.max_attempts == 25
    assert job.priority == 1
    assert job.queue == "default"
    assert job.tags == []
    assert job.metadata == {}
    assert job.kind == "ins_email"
    assert json.loads(job.encoded_args) == {"to": "x@y.z"}
    assert job.errors == []
    assert job.attempted_at is None
    assert job.finalized_at is None
    assert job.unique_key is None
    assert job.unique_states is None
    # Both timestamps come from the database clock, in one statement.
    assert job.scheduled_at == job.created_at


# --- options: insert opts > the args class's insert_opts > config > default ---


async def test_options_resolve_field_by_field(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only(max_attempts=10))
    # Args class defaults over config over default.
    job = (await inserter.insert(driver, WithDefaults())).job
    assert (job.queue, job.priority, job.max_attempts) == ("classq", 3, 7)
    assert (job.tags, job.metadata) == (["from_class"], {"src": "class"})
    # Insert options win where set; the rest still comes from the class.
    opts = InsertOpts(priority=2, tags=["from_opts"])
    job = (await inserter.insert(driver, WithDefaults(), opts)).job
    assert (job.queue, job.priority, job.max_attempts) == ("classq", 2, 7)
    assert (job.tags, job.metadata) == (["from_opts"], {"src": "class"})
    opts = InsertOpts(queue="optq", max_attempts=2, metadata={"src": "opts"})
    job = (await inserter.insert(driver, WithDefaults(), opts)).job
    assert (job.queue, job.priority, job.max_attempts) == ("optq", 3, 2)
    assert (job.tags, job.metadata) == (["from_class"], {"src": "opts"})
    # No class defaults: config, then defaults.
    job = (await inserter.insert(driver, Email())).job
    assert (job.queue, job.priority, job.max_attempts) == ("default", 1, 10)
    job = (await inserter.insert(driver, Email(), InsertOpts(max_attempts=3))).job
    assert job.max_attempts == 3
    # pending set by the class applies too.
    job = (await inserter.insert(driver, PendingByClass())).job
    assert job.state is JobState.PENDING


# --- a future scheduled_at ---


async def test_future_scheduled_at_gives_scheduled_and_no_notification(
    driver: Driver, listener: Listener
) -> None:
    woken: list[frozenset[str]] = []
    inserter = Inserter(driver, insert_only(), on_available=woken.append)
    at = datetime.now(UTC) + timedelta(hours=1)
    job = (await inserter.insert(driver, Email(), InsertOpts(scheduled_at=at))).job
    assert job.state is JobState.SCHEDULED
    assert job.scheduled_at == at
    assert await notified_queues(driver, listener) == []
    assert woken == []


async def test_past_scheduled_at_is_available_at_that_time(
    driver: Driver, listener: Listener
) -> None:
    inserter = Inserter(driver, insert_only())
    at = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = (await inserter.insert(driver, Email(), InsertOpts(scheduled_at=at))).job
    assert job.state is JobState.AVAILABLE
    assert job.scheduled_at == at
    assert await notified_queues(driver, listener) == ["default"]


async def test_scheduled_at_in_another_zone_is_stored_as_the_same_instant(driver: Driver) -> None:
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    local = at.astimezone(timezone(timedelta(hours=-7)))
    job = (
        await Inserter(driver, insert_only()).insert(
            driver, Email(), InsertOpts(scheduled_at=local)
        )
    ).job
    assert job.scheduled_at == at


# --- pending ---


async def test_pending_is_never_fetched(driver: Driver, listener: Listener) -> None:
    inserter = Inserter(driver, insert_only())
    pending = (await inserter.insert(driver, Email(to="p"), InsertOpts(pending=True))).job
    assert pending.state is JobState.PENDING
    assert await notified_queues(driver, listener) == []
    available = (await inserter.insert(driver, Email(to="a"))).job
    fetched = await driver.run(fetch_jobs, driver.configured_schema, "default", 10, "t")
    assert [r["id"] for r in fetched] == [available.id]
    assert (await stored(driver, pending.id)).state is JobState.PENDING


# --- priority 1..4 ---


@pytest.mark.parametrize("priority", [0, 5, -1, True, 2.0])
async def test_priority_outside_range_is_rejected(driver: Driver, priority: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"priority must be an int from 1 to 4"):
        await Inserter(driver, insert_only()).insert(driver, Email(), InsertOpts(priority=priority))
    assert await count_jobs(driver) == 0


async def test_priorities_one_to_four_are_stored(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    results = await inserter.insert_many(
        driver, [(Email(), InsertOpts(priority=p)) for p in (1, 2, 3, 4)]
    )
    assert [r.job.priority for r in results] == [1, 2, 3, 4]


# --- tags ---


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("x" * 256, "256 characters long; at most 255"),
        ("has space", "must match"),
        ("ab", "must match"),
        ("-abc", "must match"),
        ("abc-", "must match"),
        ("a,bc", "must match"),
        ("héllo", "must match"),
        ("abc\n", "must match"),
        ("", "must match"),
    ],
)
async def test_invalid_tags_are_rejected(driver: Driver, tag: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"^tags: tag .*{message}"):
        await Inserter(driver, insert_only()).insert(driver, Email(), InsertOpts(tags=[tag]))
    assert await count_jobs(driver) == 0


async def test_valid_tags_are_stored(driver: Driver) -> None:
    tags = ["abc", "foo_bar-baz", "x" * 255, "A-1_z"]
    job = (await Inserter(driver, insert_only()).insert(driver, Email(), InsertOpts(tags=tags))).job
    assert job.tags == tags
    assert (await stored(driver, job.id)).tags == tags


# --- queue names ---


@pytest.mark.parametrize("queue", ["", "Bad", "a b", "a__b", "_a", "x" * 65])
async def test_invalid_queue_name_is_rejected_at_insert(driver: Driver, queue: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^queue: queue name"):
        await Inserter(driver, insert_only()).insert(driver, Email(), InsertOpts(queue=queue))
    assert await count_jobs(driver) == 0


# --- unregistered kinds ---


async def test_unregistered_kind_with_workers_is_rejected(driver: Driver) -> None:
    inserter = Inserter(driver, working())
    assert (await inserter.insert(driver, Email())).job.kind == "ins_email"
    with pytest.raises(UnknownJobKindError, match="job kind 'ins_other' has no registered worker"):
        await inserter.insert(driver, Other())
    with pytest.raises(UnknownJobKindError, match=r"params\[1\]: .*'ins_other'"):
        await inserter.insert_many(driver, [Email(), Other()])
    with pytest.raises(UnknownJobKindError, match="'ins_other'"):
        await inserter.insert_many_fast(driver, [Other()])
    assert await count_jobs(driver) == 1


async def test_insert_only_client_accepts_any_kind(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    assert (await inserter.insert(driver, Other(n=4))).job.kind == "ins_other"


async def test_workers_without_queues_still_check_kinds(driver: Driver) -> None:
    workers = Workers()
    workers.add(EmailWorker())
    with pytest.raises(UnknownJobKindError):
        await Inserter(driver, Config(workers=workers)).insert(driver, Other())


# --- insert_many([]) ---


async def test_insert_many_of_nothing_raises(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    with pytest.raises(InvalidInputError, match="insert_many needs at least one job"):
        await inserter.insert_many(driver, [])
    with pytest.raises(InvalidInputError, match="insert_many_fast needs at least one job"):
        await inserter.insert_many_fast(driver, [])


async def test_insert_many_rejects_malformed_params(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    with pytest.raises(InvalidInputError, match="takes a list of job args"):
        await inserter.insert_many(driver, Email())  # type: ignore[arg-type]
    with pytest.raises(
        InvalidInputError, match=r"params\[1\] must be args or an \(args, InsertOpts\)"
    ):
        await inserter.insert_many(driver, [Email(), (Email(), None, None)])  # type: ignore[list-item]
    with pytest.raises(
        InvalidInputError, match=r"params\[0\]: job args must be a rivertrio.JobArgs"
    ):
        await inserter.insert_many(driver, [{"to": "x"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"params\[0\]: insert options must be"):
        await inserter.insert_many(driver, [(Email(), {"queue": "x"})])  # type: ignore[list-item]
    assert await count_jobs(driver) == 0


# --- insert_tx: rolled back never worked, committed worked ---


class Rollback(Exception):
    pass


async def test_insert_tx_rolled_back_is_never_seen_nor_notified(
    driver: Driver, listener: Listener
) -> None:
    clock = FakeClock()
    woken: list[frozenset[str]] = []
    inserter = Inserter(driver, insert_only(), on_available=woken.append, clock=clock)

    async def insert_then_roll_back() -> None:
        async with driver.transaction() as tx:
            res = await inserter.insert(tx, Email(to="gone"))
            assert res.job.state is JobState.AVAILABLE
            raise Rollback

    with pytest.raises(Rollback):
        await insert_then_roll_back()
    assert await count_jobs(driver) == 0
    assert await notified_queues(driver, listener) == []
    assert woken == []
    assert await driver.run(fetch_jobs, driver.configured_schema, "default", 10, "t") == []

    # Committed: visible, notified once on commit, fetchable. (The clock moves on
    # so the rolled-back insert's debounce does not hide this notification.)
    clock.now += 60
    async with driver.transaction() as tx:
        res = await inserter.insert(tx, Email(to="kept"))
        # Nothing is delivered while the transaction is open.
        assert await notified_queues(driver, listener) == []
    assert await notified_queues(driver, listener) == ["default"]
    assert woken == []  # the caller committed, not the inserter: no local wake-up
    fetched = await driver.run(fetch_jobs, driver.configured_schema, "default", 10, "t")
    assert [r["id"] for r in fetched] == [res.job.id]


async def test_insert_many_tx_commits_with_the_callers_work(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    async with driver.transaction() as tx:
        results = await inserter.insert_many(tx, [Email(to="1"), Email(to="2")])
        count = await inserter.insert_many_fast(tx, [Email(to="3")])
        assert count == 1
        assert await tx.fetchval("SELECT count(*) FROM /*schema*/river_job") == 3
        assert await count_jobs(driver) == 0  # not visible outside yet
    assert len(results) == 2
    assert await count_jobs(driver) == 3


# --- args that do not encode to a JSON object ---


async def test_args_that_are_not_json_are_rejected_naming_the_field(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    with pytest.raises(InvalidInputError, match="BadArgs field 'when' does not encode to JSON"):
        await inserter.insert(driver, BadArgs())
    with pytest.raises(InvalidInputError, match=r"params\[1\]: BadArgs field 'when'"):
        await inserter.insert_many(driver, [Email(), BadArgs()])
    with pytest.raises(InvalidInputError, match="field 'when'"):
        await inserter.insert(driver, BadArgs(when=float("nan")))
    assert await count_jobs(driver) == 0


# --- other option validation ---


async def test_metadata_is_stored(driver: Driver) -> None:
    meta = {"a": 1, "nested": {"b": [1, 2]}, "s": "é"}
    job = (
        await Inserter(driver, insert_only()).insert(driver, Email(), InsertOpts(metadata=meta))
    ).job
    assert job.metadata == meta
    assert (await stored(driver, job.id)).metadata == meta


async def test_invalid_args_class_insert_opts(driver: Driver) -> None:
    @dataclass
    class Weird(JobArgs, kind="ins_weird"):
        insert_opts: ClassVar[Any] = {"queue": "x"}

    with pytest.raises(
        InvalidInputError, match=r"Weird\.insert_opts must be a rivertrio\.InsertOpts"
    ):
        await Inserter(driver, insert_only()).insert(driver, Weird())


# --- unique jobs at the database ---


async def test_unique_insert_twice_returns_the_first_job(
    driver: Driver, listener: Listener
) -> None:
    clock = FakeClock()
    woken: list[frozenset[str]] = []
    inserter = Inserter(driver, insert_only(), clock=clock, on_available=woken.append)
    opts = InsertOpts(unique=UniqueOpts(by_period=3600))
    first = await inserter.insert(driver, Email(to="1"), opts)
    clock.now += 60  # past the debounce: only the duplicate itself can silence it
    second = await inserter.insert(driver, Email(to="2"), opts)
    assert first.unique_skipped_as_duplicate is False
    assert second.unique_skipped_as_duplicate is True
    assert second.job.id == first.job.id
    assert json.loads(second.job.encoded_args) == {"to": "1"}
    assert await count_jobs(driver) == 1
    # A duplicate wakes nobody.
    assert await notified_queues(driver, listener) == ["default"]
    assert woken == [frozenset({"default"})]


async def test_stored_unique_key_and_states(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    opts = InsertOpts(queue="mail", unique=UniqueOpts(by_args=True, by_queue=True))
    res = await inserter.insert(driver, Email(to="x@y.z"), opts)
    row = await stored(driver, res.job.id)
    expected = hashlib.sha256(b'&kind=ins_email&args={"to":"x@y.z"}&queue=mail').digest()
    assert row.unique_key == expected
    assert res.job.unique_key == expected
    assert row.unique_states == 0xF5
    assert res.job.unique_states == 0xF5
    bits = await driver.fetchval(
        "SELECT unique_states::text FROM /*schema*/river_job WHERE id = $1", res.job.id
    )
    assert bits == "11110101"


async def test_custom_unique_states_are_stored(driver: Driver) -> None:
    states = {"available", "pending", "running", "scheduled", "cancelled"}
    opts = InsertOpts(unique=UniqueOpts(by_state=states))
    res = await Inserter(driver, insert_only()).insert(driver, Email(), opts)
    assert (await stored(driver, res.job.id)).unique_states == 0xD3


async def test_unique_by_args_distinguishes_args_and_ignores_field_order(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    opts = InsertOpts(unique=UniqueOpts(by_args=True))
    a = await inserter.insert(driver, Email(to="a"), opts)
    b = await inserter.insert(driver, Email(to="b"), opts)
    again = await inserter.insert(driver, Email(to="a"), opts)
    assert a.job.id != b.job.id
    assert again.job.id == a.job.id
    assert again.unique_skipped_as_duplicate


async def test_unique_job_can_be_inserted_again_once_cancelled(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    opts = InsertOpts(unique=UniqueOpts())  # empty: no uniqueness, as in River
    a = await inserter.insert(driver, Email(), opts)
    b = await inserter.insert(driver, Email(), opts)
    assert a.job.id != b.job.id
    assert a.job.unique_key is None

    opts = InsertOpts(unique=UniqueOpts(by_queue=True))
    first = await inserter.insert(driver, Email(), opts)
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'cancelled', finalized_at = now() WHERE id = $1",
        first.job.id,
    )
    # cancelled is outside the default unique states: a new job goes in.
    second = await inserter.insert(driver, Email(), opts)
    assert not second.unique_skipped_as_duplicate
    assert second.job.id != first.job.id


async def test_unique_duplicates_inside_one_batch(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    unique = InsertOpts(unique=UniqueOpts(by_args=True))
    existing = await inserter.insert(driver, Email(to="old"), unique)
    results = await inserter.insert_many(
        driver,
        [
            (Email(to="new"), unique),
            Email(to="plain"),
            (Email(to="new"), unique),
            (Email(to="old"), unique),
            (Email(to="old"), unique),
            (Email(to="new"), unique),
        ],
    )
    flags = [r.unique_skipped_as_duplicate for r in results]
    assert flags == [False, False, True, True, True, True]
    new_id = results[0].job.id
    assert [r.job.id for r in results] == [
        new_id,
        results[1].job.id,
        new_id,
        existing.job.id,
        existing.job.id,
        new_id,
    ]
    assert await count_jobs(driver) == 3


async def test_insert_many_results_follow_params_order(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    params = [
        (Other(n=i), InsertOpts(unique=UniqueOpts(by_args=True)) if i % 3 == 0 else None)
        for i in range(300)
    ]
    results = await inserter.insert_many(driver, params)
    assert [json.loads(r.job.encoded_args)["n"] for r in results] == list(range(300))
    assert all(isinstance(r, InsertResult) for r in results)
    assert len({r.job.id for r in results}) == 300


# --- insert notifications: one per queue per fetch_cooldown ---


async def test_insert_notifications_are_debounced_per_queue(
    driver: Driver, listener: Listener
) -> None:
    clock = FakeClock()
    config = insert_only(fetch_cooldown=5.0, fetch_poll_interval=5.0)
    inserter = Inserter(driver, config, clock=clock)
    for _ in range(3):
        await inserter.insert(driver, Email(), InsertOpts(queue="alpha"))
    await inserter.insert(driver, Email(), InsertOpts(queue="beta"))
    assert await notified_queues(driver, listener) == ["alpha", "beta"]

    clock.now += 4.9  # still within the cooldown of both
    await inserter.insert(driver, Email(), InsertOpts(queue="alpha"))
    await inserter.insert_many(driver, [(Email(), InsertOpts(queue="beta"))] * 2)
    assert await notified_queues(driver, listener) == []

    clock.now += 0.2  # alpha's cooldown is over; gamma is new
    await inserter.insert(driver, Email(), InsertOpts(queue="alpha"))
    assert await notified_queues(driver, listener) == ["alpha"]
    await inserter.insert_many(
        driver,
        [(Email(), InsertOpts(queue=q)) for q in ("alpha", "beta", "gamma", "gamma")],
    )
    assert await notified_queues(driver, listener) == ["beta", "gamma"]

    # Another inserter (another client) debounces on its own.
    other = Inserter(driver, config, clock=clock)
    await other.insert(driver, Email(), InsertOpts(queue="alpha"))
    assert await notified_queues(driver, listener) == ["alpha"]


async def test_a_suppressed_notification_is_sent_once_the_cooldown_is_over(
    driver: Driver, listener: Listener
) -> None:
    # Without it, the second job would wait for the workers' next poll: no
    # further insert may come to notify its queue.
    inserter = Inserter(driver, insert_only(fetch_cooldown=1.0, fetch_poll_interval=60))
    async with trio.open_nursery() as nursery:
        await nursery.start(inserter.send_owed)
        started = trio.current_time()
        await inserter.insert(driver, Email(), InsertOpts(queue="alpha"))
        await inserter.insert_many(driver, [(Email(), InsertOpts(queue="alpha"))] * 2)
        await inserter.insert(driver, Email(), InsertOpts(queue="beta"))
        # The leading notifications only, so far...
        assert await notified_queues(driver, listener) == ["alpha", "beta"]
        # ...then alpha's trailing one, once its cooldown is over; beta owes none.
        with trio.fail_after(10):
            note = await listener.receive.receive()
        assert json.loads(note.payload)["queue"] == "alpha"
        assert trio.current_time() - started >= 1.0
        assert await notified_queues(driver, listener) == []
        nursery.cancel_scope.cancel()


async def test_inserts_in_a_transaction_are_not_debounced(
    driver: Driver, listener: Listener
) -> None:
    # Each notification is delivered at its transaction's commit; one held back
    # could not be sent later with any certainty of coming after that commit.
    inserter = Inserter(driver, insert_only(fetch_cooldown=60, fetch_poll_interval=60))
    for _ in range(2):
        async with driver.transaction() as tx:
            await inserter.insert(tx, Email())
    async with driver.transaction() as tx:
        await inserter.insert_many_fast(tx, [Email()])
    assert await notified_queues(driver, listener) == ["default"] * 3


async def test_a_client_sends_the_notifications_it_held_back(
    database_url: str, migrated_schema: str
) -> None:
    # End to end: a worker polling only every minute works a job whose insert
    # came within the inserter's cooldown, soon after the cooldown.
    worked = [trio.Event(), trio.Event()]
    workers = Workers()

    @workers.register(Email)
    async def work(job: Job[Email]) -> None:
        worked[int(job.args.to)].set()

    worker_config = Config(
        schema=migrated_schema,
        workers=workers,
        queues={"default": QueueConfig(max_workers=2)},
        fetch_poll_interval=60,
    )
    inserter_config = Config(schema=migrated_schema, fetch_cooldown=1.0)
    async with (
        rivertrio.open_client(worker_config, database_url=database_url),
        rivertrio.open_client(inserter_config, database_url=database_url) as inserter,
    ):
        with trio.fail_after(10):
            await inserter.insert(Email(to="0"))
            await worked[0].wait()
            await inserter.insert(Email(to="1"))  # within the cooldown: held back
            await worked[1].wait()


async def test_on_available_is_called_every_time(driver: Driver) -> None:
    woken: list[frozenset[str]] = []
    inserter = Inserter(
        driver, insert_only(fetch_cooldown=60, fetch_poll_interval=60), on_available=woken.append
    )
    await inserter.insert(driver, Email())
    await inserter.insert(driver, Email())
    await inserter.insert_many(
        driver, [(Email(), InsertOpts(queue="q1")), (Email(), InsertOpts(queue="q2", pending=True))]
    )
    await inserter.insert_many_fast(driver, [(Email(), InsertOpts(queue="q3")), Email()])
    assert woken == [
        frozenset({"default"}),
        frozenset({"default"}),
        frozenset({"q1"}),
        frozenset({"q3", "default"}),
    ]


async def test_poll_only_sends_no_notifications(driver: Driver, listener: Listener) -> None:
    woken: list[frozenset[str]] = []
    inserter = Inserter(driver, insert_only(poll_only=True), on_available=woken.append)
    await inserter.insert(driver, Email())
    await inserter.insert_many_fast(driver, [Email()])
    assert await notified_queues(driver, listener) == []
    # Local producers are still woken.
    assert woken == [frozenset({"default"})] * 2


# --- insert_many_fast; a unique conflict fails the whole batch ---


async def test_insert_many_fast_sets_states_from_the_database_clock(
    driver: Driver, listener: Listener
) -> None:
    inserter = Inserter(driver, insert_only(max_attempts=9))
    future = datetime.now(UTC) + timedelta(days=1)
    past = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
    count = await inserter.insert_many_fast(
        driver,
        [
            Email(to="now"),
            (Email(to="future"), InsertOpts(scheduled_at=future, queue="later")),
            (Email(to="past"), InsertOpts(scheduled_at=past, queue="early")),
            (Email(to="pending"), InsertOpts(pending=True, queue="held")),
            (
                WithDefaults(x=1),
                InsertOpts(tags=["t_one", "t_two"], unique=UniqueOpts(by_args=True)),
            ),
        ],
    )
    assert count == 5
    rows = {
        json.loads(r["args"]).get("to", "defaults"): r
        for r in await driver.fetch(
            "SELECT *, unique_states::int AS us FROM /*schema*/river_job ORDER BY id"
        )
    }
    now = rows["now"]
    assert now["state"] == "available"
    assert now["scheduled_at"] == now["created_at"]
    assert now["max_attempts"] == 9
    assert (now["priority"], now["queue"], list(now["tags"])) == (1, "default", [])
    assert rows["future"]["state"] == "scheduled"
    assert rows["future"]["scheduled_at"] == future
    assert rows["past"]["state"] == "available"
    assert rows["past"]["scheduled_at"] == past
    assert rows["pending"]["state"] == "pending"
    d = rows["defaults"]
    assert (d["queue"], d["priority"], d["max_attempts"]) == ("classq", 3, 7)
    assert list(d["tags"]) == ["t_one", "t_two"]
    assert json.loads(d["metadata"]) == {"src": "class"}
    assert d["us"] == 0xF5
    assert d["unique_key"] == hashlib.sha256(b'&kind=ins_with_defaults&args={"x":1}').digest()
    # One statement's clock: every row created at the same instant.
    assert len({r["created_at"] for r in rows.values()}) == 1
    assert sorted(await notified_queues(driver, listener)) == ["classq", "default", "early"]


async def test_insert_many_fast_unique_conflict_inserts_nothing(
    driver: Driver, listener: Listener
) -> None:
    clock = FakeClock()
    woken: list[frozenset[str]] = []
    inserter = Inserter(driver, insert_only(), clock=clock, on_available=woken.append)
    unique = InsertOpts(unique=UniqueOpts(by_args=True))
    await inserter.insert(driver, Email(to="taken"), unique)
    assert await notified_queues(driver, listener) == ["default"]
    clock.now += 60
    with pytest.raises(DatabaseError, match="conflicts with a unique job") as info:
        await inserter.insert_many_fast(
            driver,
            [Email(to="fresh"), (Email(to="taken"), unique), (Other(n=1), InsertOpts(queue="x_q"))],
        )
    assert info.value.sqlstate == "23505"
    assert await count_jobs(driver) == 1
    assert await notified_queues(driver, listener) == []
    assert woken == [frozenset({"default"})]


async def test_insert_many_fast_duplicate_inside_batch_inserts_nothing(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    unique = InsertOpts(unique=UniqueOpts(by_args=True))
    with pytest.raises(DatabaseError, match="conflicts with a unique job"):
        await inserter.insert_many_fast(
            driver, [(Email(to="same"), unique), Email(), (Email(to="same"), unique)]
        )
    assert await count_jobs(driver) == 0


async def test_insert_many_fast_in_large_batches(driver: Driver) -> None:
    inserter = Inserter(driver, insert_only())
    count = await inserter.insert_many_fast(driver, [Other(n=i) for i in range(5000)])
    assert count == 5000
    total = await driver.fetchval("SELECT sum((args->>'n')::int) FROM /*schema*/river_job")
    assert total == sum(range(5000))
