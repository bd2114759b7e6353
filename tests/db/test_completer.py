"""The completer over real Postgres: outcomes to states, retries, batches, shielded lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from rivertrio._completer import Completer, CompletionItem
from rivertrio._driver import Driver
from rivertrio._driver._sql import JOB_COLUMNS
from rivertrio._events import Event, EventKind, OutcomeKind, QueueEvent
from rivertrio._job import JobRow
from support.completion import (
    FAST,
    FaultyDriver,
    drain_output,
    insert_running,
    outcome,
    send_all,
    states,
)

HOUR = 3600.0


async def run_to_end(completer: Completer, items: list[Any]) -> list[Sequence[Event]]:
    """Start the completer, hand it ``items`` at once, stop it; return its output batches."""
    batches: list[Sequence[Event]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            nursery.start_soon(drain_output, completer.output, batches)
            send_all(completer.input, items)
            completer.stop()
    return batches


def flat(batches: list[Sequence[Event]]) -> list[Event]:
    return [event for batch in batches for event in batch]


# -- 72: each outcome type ends the row in its state ---------------------------------


@pytest.mark.parametrize(
    ("kind", "delay", "max_attempts", "metadata", "state", "event_kind"),
    [
        pytest.param(OutcomeKind.COMPLETED, None, 25, None, "completed", EventKind.JOB_COMPLETED,
                     id="completed"),
        pytest.param(OutcomeKind.CANCELLED, None, 25, None, "cancelled", EventKind.JOB_CANCELLED,
                     id="cancelled"),
        pytest.param(OutcomeKind.FAILED, HOUR, 1, None, "discarded", EventKind.JOB_FAILED,
                     id="failed-last-attempt-discarded"),
        pytest.param(OutcomeKind.FAILED, 1.0, 25, None, "available", EventKind.JOB_FAILED,
                     id="failed-retry-soon-available"),
        pytest.param(OutcomeKind.FAILED, HOUR, 25, None, "retryable", EventKind.JOB_FAILED,
                     id="failed-retry-later-retryable"),
        pytest.param(OutcomeKind.SNOOZED, HOUR, 25, None, "scheduled", EventKind.JOB_SNOOZED,
                     id="snoozed-long-scheduled"),
        pytest.param(OutcomeKind.SNOOZED, 1.0, 25, None, "available", EventKind.JOB_SNOOZED,
                     id="snoozed-short-available"),
        pytest.param(OutcomeKind.INTERRUPTED, None, 25, None, "available",
                     EventKind.JOB_INTERRUPTED, id="interrupted-available"),
        pytest.param(OutcomeKind.FAILED, HOUR, 25, {"cancel_attempted_at": "2024-01-01T00:00:00Z"},
                     "cancelled", EventKind.JOB_CANCELLED, id="failed-after-cancel-request"),
    ],
)  # fmt: skip
async def test_each_outcome_ends_the_row_in_its_state(
    driver: Driver,
    kind: OutcomeKind,
    delay: float | None,
    max_attempts: int,
    metadata: dict[str, Any] | None,
    state: str,
    event_kind: EventKind,
) -> None:
    [row] = await insert_running(driver, max_attempts=max_attempts, metadata=metadata)
    completer = Completer(driver, **FAST)
    batches = await run_to_end(completer, [outcome(row, kind, delay=delay)])

    assert await states(driver, [row.id]) == {row.id: state}
    [event] = flat(batches)
    assert event.kind is event_kind
    assert event.job is not None
    assert event.job.id == row.id
    assert event.job.state == state
    assert (event.job.finalized_at is not None) == (
        state in {"completed", "cancelled", "discarded"}
    )
    if kind in {OutcomeKind.SNOOZED, OutcomeKind.INTERRUPTED} and state != "cancelled":
        assert event.job.attempt == row.attempt - 1, "a snooze or interruption restores attempt"
    else:
        assert event.job.attempt == row.attempt
    if kind is OutcomeKind.SNOOZED:
        assert event.job.metadata["snoozes"] == 1
    if kind is OutcomeKind.FAILED:
        assert [e.error for e in event.job.errors] == ["boom"]
    assert completer.counters.rows_persisted == 1
    assert completer.counters.batches == 1


@pytest.mark.parametrize(
    ("stored", "event_kind"),
    [
        ("completed", EventKind.JOB_COMPLETED),
        ("cancelled", EventKind.JOB_CANCELLED),
        ("discarded", EventKind.JOB_FAILED),
    ],
)
async def test_row_finished_elsewhere_is_reported_as_stored_and_left_alone(
    driver: Driver, stored: str, event_kind: EventKind
) -> None:
    [row] = await insert_running(driver)
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = $2::text::/*schema*/river_job_state, "
        "finalized_at = now() WHERE id = $1",
        row.id,
        stored,
    )
    completer = Completer(driver, **FAST)
    batches = await run_to_end(completer, [outcome(row, OutcomeKind.FAILED, delay=HOUR)])

    assert await states(driver, [row.id]) == {row.id: stored}
    [event] = flat(batches)
    assert event.kind is event_kind
    assert event.job is not None
    assert event.job.errors == [], "nothing was written to the row"
    assert completer.counters.rows_finished_elsewhere == 1
    assert completer.counters.rows_persisted == 0


# -- 73: stop waits for every outcome already handed to it ---------------------------


async def test_stop_waits_for_every_outcome_already_handed_to_it(driver: Driver) -> None:
    rows = await insert_running(driver, 50)
    # A flush interval far longer than the hang guard: only the final flush on
    # stop can persist these in time.
    completer = Completer(driver, flush_interval=HOUR, batch_size=1000)
    batches = await run_to_end(completer, [outcome(r, OutcomeKind.COMPLETED) for r in rows])

    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}
    assert [e.job.id for e in flat(batches) if e.job] == [r.id for r in rows]
    assert completer.stopped


async def test_outcomes_persist_at_low_volume_without_a_stop(driver: Driver) -> None:
    [row] = await insert_running(driver)
    completer = Completer(driver, **FAST)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            completer.input.send_nowait(outcome(row, OutcomeKind.COMPLETED))
            # The flush interval alone writes the batch: the output shows it.
            [event] = await completer.output.receive()
            assert event.job is not None
            assert event.job.id == row.id
            assert await states(driver, [row.id]) == {row.id: "completed"}
            completer.stop()


# -- 74: the database failing twice then succeeding ----------------------------------


async def test_database_failing_twice_then_succeeding_still_persists(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    rows = await insert_running(driver, 3)
    faulty = FaultyDriver(driver)
    faulty.fail_next = 2
    completer = Completer(faulty, max_attempts=3, **FAST)
    with caplog.at_level(logging.WARNING, logger="rivertrio.completer"):
        batches = await run_to_end(completer, [outcome(r, OutcomeKind.COMPLETED) for r in rows])

    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}
    assert len(flat(batches)) == 3
    assert faulty.calls == 3
    assert completer.counters.failed_attempts == 2
    assert completer.counters.rows_dropped == 0
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


async def test_batch_failing_every_attempt_is_dropped_logged_and_left_running(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    lost, later = await insert_running(driver, 2)
    faulty = FaultyDriver(driver)
    faulty.fail_next = 3
    completer = Completer(faulty, max_attempts=3, **FAST)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="rivertrio.completer"):
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            completer.input.send_nowait(outcome(lost, OutcomeKind.COMPLETED))
            await faulty.entered.wait()  # its batch is formed: `later` goes in the next
            # The completer keeps serving after giving up: the next outcome persists.
            completer.input.send_nowait(outcome(later, OutcomeKind.COMPLETED))
            [event] = await completer.output.receive()
            completer.stop()

    assert event.job is not None
    assert event.job.id == later.id
    assert await states(driver, [lost.id, later.id]) == {lost.id: "running", later.id: "completed"}
    assert completer.counters.rows_dropped == 1
    [record] = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert str(lost.id) in record.getMessage()


async def test_final_flush_is_bounded_when_the_database_hangs(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    [row] = await insert_running(driver)
    faulty = FaultyDriver(driver)
    faulty.gate = trio.Event()  # never set: the database never answers
    completer = Completer(faulty, flush_interval=HOUR, final_flush_timeout=0.2)
    with caplog.at_level(logging.ERROR, logger="rivertrio.completer"):
        batches = await run_to_end(completer, [outcome(row, OutcomeKind.COMPLETED)])

    assert batches == []
    assert await states(driver, [row.id]) == {row.id: "running"}
    assert completer.counters.rows_dropped == 1
    [record] = [r for r in caplog.records if "final flush deadline" in r.getMessage()]
    assert str(row.id) in record.getMessage()


async def test_a_statement_without_answer_times_out_and_is_retried(driver: Driver) -> None:
    [row] = await insert_running(driver)
    faulty = FaultyDriver(driver)
    faulty.gate = trio.Event()

    async def open_gate_after_first_call() -> None:
        await faulty.entered.wait()
        faulty.gate = None  # later attempts go straight through

    completer = Completer(faulty, attempt_timeout=2.0, **FAST)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_gate_after_first_call)
        batches = await run_to_end(completer, [outcome(row, OutcomeKind.COMPLETED)])

    assert len(flat(batches)) == 1
    assert completer.counters.failed_attempts == 1
    assert await states(driver, [row.id]) == {row.id: "completed"}


# -- 75: sub-batches and back-pressure -------------------------------------------------


async def test_outcomes_beyond_the_statement_maximum_go_in_sub_batches(driver: Driver) -> None:
    rows = await insert_running(driver, 10)
    completer = Completer(driver, batch_size=3, **FAST)
    batches = await run_to_end(completer, [outcome(r, OutcomeKind.COMPLETED) for r in rows])

    assert completer.counters.batches == 4
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [e.job.id for e in flat(batches) if e.job] == [r.id for r in rows]
    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}


async def test_full_backlog_makes_senders_wait(driver: Driver) -> None:
    rows = await insert_running(driver, 4)
    faulty = FaultyDriver(driver)
    faulty.gate = trio.Event()
    completer = Completer(faulty, backlog=2, **FAST)
    sent = trio.Event()
    batches: list[Sequence[Event]] = []

    async def job_task() -> None:
        await completer.input.send(outcome(rows[3], OutcomeKind.COMPLETED))
        sent.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            nursery.start_soon(drain_output, completer.output, batches)
            completer.input.send_nowait(outcome(rows[0], OutcomeKind.COMPLETED))
            await faulty.entered.wait()  # the completer is held up in the database
            send_all(completer.input, [outcome(r, OutcomeKind.COMPLETED) for r in rows[1:3]])
            with pytest.raises(trio.WouldBlock):
                completer.input.send_nowait(outcome(rows[3], OutcomeKind.COMPLETED))
            nursery.start_soon(job_task)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set(), "a send into a full backlog must wait"
            assert completer.input.statistics().tasks_waiting_send == 1
            gate, faulty.gate = faulty.gate, None
            gate.set()
            await sent.wait()
            completer.stop()

    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}
    assert sorted(e.job.id for e in flat(batches) if e.job) == [r.id for r in rows]


# -- 76: a job deleted while running ------------------------------------------------------


async def test_job_deleted_while_running_persists_and_emits_nothing(driver: Driver) -> None:
    deleted, kept = await insert_running(driver, 2)
    await driver.execute("DELETE FROM /*schema*/river_job WHERE id = $1", deleted.id)
    completer = Completer(driver, **FAST)
    batches = await run_to_end(
        completer,
        [outcome(deleted, OutcomeKind.COMPLETED), outcome(kept, OutcomeKind.FAILED, delay=HOUR)],
    )

    assert [e.job.id for e in flat(batches) if e.job] == [kept.id]
    assert await states(driver, [deleted.id, kept.id]) == {kept.id: "retryable"}
    assert completer.counters.rows_missing == 1


async def test_only_a_deleted_job_emits_no_batch(driver: Driver) -> None:
    [row] = await insert_running(driver)
    await driver.execute("DELETE FROM /*schema*/river_job WHERE id = $1", row.id)
    completer = Completer(driver, **FAST)
    assert await run_to_end(completer, [outcome(row, OutcomeKind.COMPLETED)]) == []
    assert completer.counters.rows_missing == 1


# -- a row finished by someone else while the statement waits for its lock ----------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            "UPDATE /*schema*/river_job SET state = 'cancelled', finalized_at = now() "
            "WHERE id = $1",
            [(EventKind.JOB_CANCELLED, "cancelled")],
            id="cancelled-concurrently",
        ),
        pytest.param(
            "DELETE FROM /*schema*/river_job WHERE id = $1", [], id="deleted-concurrently"
        ),
    ],
)
async def test_row_finished_concurrently_is_reported_as_it_is_now(
    driver: Driver, migrated_schema: str, change: str, expected: list[tuple[EventKind, str]]
) -> None:
    [row] = await insert_running(driver)
    completer = Completer(driver, **FAST)
    batches: list[Sequence[Event]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            nursery.start_soon(drain_output, completer.output, batches)
            async with driver.transaction() as tx:
                await tx.execute(change, row.id)  # holds the row lock until commit
                completer.input.send_nowait(outcome(row, OutcomeKind.COMPLETED))
                # Postgres's own signal: the completion statement waits for our lock.
                while not await driver.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'",
                    migrated_schema,
                ):
                    pass
            completer.stop()

    assert [(e.kind, e.job.state) for e in flat(batches) if e.job] == expected


# -- events -------------------------------------------------------------------------------


async def test_events_keep_arrival_order_and_queue_events_pass_through(driver: Driver) -> None:
    first, second = await insert_running(driver, 2)
    completer = Completer(driver, **FAST)
    batches = await run_to_end(
        completer,
        [
            outcome(first, OutcomeKind.COMPLETED, queue_wait=1.5, run=2.5),
            QueueEvent(EventKind.QUEUE_PAUSED, "default"),
            outcome(second, OutcomeKind.CANCELLED),
            QueueEvent(EventKind.QUEUE_RESUMED, "default"),
        ],
    )

    events = flat(batches)
    assert [e.kind for e in events] == [
        EventKind.JOB_COMPLETED,
        EventKind.QUEUE_PAUSED,
        EventKind.JOB_CANCELLED,
        EventKind.QUEUE_RESUMED,
    ]
    assert events[1] == Event(EventKind.QUEUE_PAUSED, queue="default")
    stats = events[0].stats
    assert stats is not None
    assert (stats.queue_wait_duration, stats.run_duration) == (1.5, 2.5)
    assert 0 <= stats.complete_duration < 10


async def test_two_outcomes_for_one_job_are_persisted_once(driver: Driver) -> None:
    [row] = await insert_running(driver)
    completer = Completer(driver, **FAST)
    batches = await run_to_end(
        completer, [outcome(row, OutcomeKind.COMPLETED), outcome(row, OutcomeKind.FAILED)]
    )

    assert [e.kind for e in flat(batches)] == [EventKind.JOB_COMPLETED, EventKind.JOB_COMPLETED]
    assert completer.counters.rows_persisted == 1
    assert completer.counters.rows_finished_elsewhere == 1
    assert await states(driver, [row.id]) == {row.id: "completed"}


async def stored_rows(driver: Driver, ids: list[int]) -> list[JobRow]:
    records = await driver.fetch(
        f"SELECT {JOB_COLUMNS} FROM /*schema*/river_job WHERE id = ANY($1) ORDER BY id", ids
    )
    return [JobRow.from_record(r) for r in records]


async def test_events_carry_the_rows_as_stored(driver: Driver) -> None:
    # The statement sends back only the columns it changed of the attempts the
    # completer handed it, and the events fill in the rest from the fetched rows:
    # the rows they carry must still be the rows as stored, column for column.
    rows = await insert_running(driver, 4, metadata={"tag": "x"}, attempt=2)
    completed, failed, snoozed, cancelled = rows
    # Metadata merged while a job ran (a progress report, a job_cancel mark).
    await driver.execute(
        "UPDATE /*schema*/river_job SET metadata = metadata || '{\"during\": 1}' WHERE id = $1",
        completed.id,
    )
    completer = Completer(driver, **FAST)
    batches = await run_to_end(
        completer,
        [
            outcome(completed, OutcomeKind.COMPLETED),
            outcome(failed, OutcomeKind.FAILED, delay=HOUR),
            outcome(snoozed, OutcomeKind.SNOOZED, delay=HOUR),
            outcome(cancelled, OutcomeKind.CANCELLED),
        ],
    )

    events = flat(batches)
    assert [e.job for e in events] == await stored_rows(driver, [r.id for r in rows])
    assert [type(e.job) for e in events] == [JobRow] * 4
    assert events[0].job is not None and events[0].job.metadata == {"tag": "x", "during": 1}
    assert events[1].job is not None and [e.error for e in events[1].job.errors] == ["boom"]


async def test_a_row_fetched_again_meanwhile_is_reported_in_full(driver: Driver) -> None:
    # Rescued while this attempt ran, then fetched again by another client: the row
    # is running again, in an attempt the completer does not hold. It is still
    # completed (only rows still running change, as in River), and its event
    # carries the row as stored, not the columns of the attempt handed in.
    [row] = await insert_running(driver)
    await driver.execute(
        "UPDATE /*schema*/river_job SET attempt = attempt + 1, "
        "attempted_at = attempted_at + interval '1 minute', "
        "attempted_by = array_append(attempted_by, 'other-client') WHERE id = $1",
        row.id,
    )
    completer = Completer(driver, **FAST)
    batches = await run_to_end(completer, [outcome(row, OutcomeKind.COMPLETED)])

    [event] = flat(batches)
    assert [event.job] == await stored_rows(driver, [row.id])
    assert event.job is not None
    assert (event.job.attempt, event.job.attempted_by[-1]) == (2, "other-client")
    assert completer.counters.rows_persisted == 1


# -- lifecycle: shielded, ends by end-of-channel, restartable -----------------------------


async def test_cancelling_the_enclosing_scope_does_not_end_it_while_a_clone_is_open(
    driver: Driver,
) -> None:
    """Outcomes sent after the caller's cancellation still persist."""
    rows = await insert_running(driver, 3)
    completer = Completer(driver, **FAST)
    batches: list[Sequence[Event]] = []
    cancelled = trio.Event()
    still_running: list[bool] = []

    async def late_producer(clone: trio.MemorySendChannel[CompletionItem]) -> None:
        # Outside the cancelled scope, like a producer finishing its last jobs.
        with clone:
            await cancelled.wait()
            still_running.append(completer.started)
            for row in rows:
                await clone.send(outcome(row, OutcomeKind.COMPLETED))

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(completer.run)
                    outer.start_soon(drain_output, completer.output, batches)
                    outer.start_soon(late_producer, completer.input.clone())
                    scope.cancel()
                    cancelled.set()
                # The nursery waited for the completer, which waited for the clone.
            assert scope.cancelled_caught

    assert still_running == [True], "a cancelled caller must not end the completer"
    assert completer.stopped
    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}
    assert len(flat(batches)) == 3


async def test_each_run_gets_fresh_channels(driver: Driver) -> None:
    rows = await insert_running(driver, 2)
    completer = Completer(driver, **FAST)
    inputs = []
    for row in rows:
        batches: list[Sequence[Event]] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(completer.run)
            inputs.append(completer.input)
            nursery.start_soon(drain_output, completer.output, batches)
            completer.input.send_nowait(outcome(row, OutcomeKind.COMPLETED))
            completer.stop()
        assert [e.job.id for e in flat(batches) if e.job] == [row.id]
    assert inputs[0] is not inputs[1]
    with pytest.raises(trio.ClosedResourceError):
        inputs[0].send_nowait(outcome(rows[0], OutcomeKind.COMPLETED))
    with pytest.raises(RuntimeError, match="not running"):
        _ = completer.input
    with pytest.raises(RuntimeError, match="not running"):
        _ = completer.output
    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}
