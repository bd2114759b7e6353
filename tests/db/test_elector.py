"""Leader election: one leader keeps its term, a second elector waits then wins.

Also: a leader whose term was replaced steps down, ``request_resign`` makes it
step down, so does a failed re-election, and a stopping leader resigns.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from rivertrio._driver import DedicatedConnection, Driver, Listener
from rivertrio._driver._leadership import elect, reelect
from rivertrio._driver._liveness import CLIENT_ID_MARKER, liveness_key, open_lock_connection
from rivertrio._elector import Elector, request_resign
from rivertrio._exceptions import DatabaseError
from rivertrio._notifier import Notifier
from support.maintenance import HookedDriver

pytestmark = pytest.mark.timeout(60)


def new_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def marked_id(name: str) -> str:
    """An id that promises a liveness lock (a rivertrio client's)."""
    return f"{new_id(name)}{CLIENT_ID_MARKER}"


async def leader_row(driver: Driver) -> Any:
    return await driver.fetchrow("SELECT * FROM /*schema*/river_leader")


async def put_leader(driver: Driver, leader_id: str, expires_in: float) -> Any:
    """Write a term for `leader_id` (as another process would have) and return its row."""
    return await driver.fetchrow(
        "INSERT INTO /*schema*/river_leader (leader_id, elected_at, expires_at)"
        " VALUES ($1, now(), now() + make_interval(secs => $2)) RETURNING *",
        leader_id,
        expires_in,
    )


async def take_lock(driver: Driver, client_id: str) -> DedicatedConnection:
    """Take `client_id`'s liveness lock, as its client's Liveness does."""
    lock = await open_lock_connection(driver, liveness_key(driver.schema, client_id))
    assert lock is not None
    return lock


@asynccontextmanager
async def liveness_held(driver: Driver, client_id: str) -> AsyncIterator[DedicatedConnection]:
    lock = await take_lock(driver, client_id)
    try:
        yield lock
    finally:
        await lock.aclose()


async def open_leadership_listener(driver: Driver) -> Listener:
    listener = await driver.open_listener()
    await listener.listen("river_leadership")
    return listener


async def next_payload(listener: Listener) -> dict[str, Any]:
    note = await listener.receive.receive()
    payload: dict[str, Any] = json.loads(note.payload)
    return payload


async def test_elector_leads_reelects_and_resigns_on_stop(driver: Driver) -> None:
    """91."""
    elector = Elector(driver, new_id("solo"), elect_interval=0.1, ttl=1.0)
    listener = await open_leadership_listener(driver)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(elector.run)
                term = await elector.next_term()
                assert term.number == 1 and elector.is_leader and elector.term is term
                first = await leader_row(driver)
                assert first["leader_id"] == elector.client_id
                assert first["elected_at"] == term.elected_at
                await elector.reelections.wait_for(3)
                later = await leader_row(driver)
                # The same term, extended.
                assert later["elected_at"] == first["elected_at"]
                assert later["expires_at"] > first["expires_at"]
                assert elector.term is term and not term.lost.is_set()
                elector.stop()
            assert term.lost.is_set() and not elector.is_leader
            assert await leader_row(driver) is None
            payload = await next_payload(listener)
    finally:
        await listener.aclose()
    assert payload == {"leader_id": elector.client_id, "action": "resigned"}


async def test_second_elector_waits_then_wins_by_polling(driver: Driver) -> None:
    """92, without notifications: the candidate notices at its next attempt."""
    first = Elector(driver, new_id("first"), elect_interval=0.1, ttl=1.0)
    second = Elector(driver, new_id("second"), elect_interval=0.1, ttl=1.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await first.next_term()
            await nursery.start(second.run)
            await second.attempts.wait_for(3)
            assert not second.is_leader and first.is_leader
            first.stop()
            await first.wait_stopped()
            term = await second.next_term()
            assert (await leader_row(driver))["leader_id"] == second.client_id
            assert term.number == 1
            second.stop()


async def test_resigned_notification_wakes_a_waiting_candidate(driver: Driver) -> None:
    """92, with notifications: the candidate tries again at once, not after its interval."""
    first = Elector(driver, new_id("first"), elect_interval=0.1, ttl=1.0)
    # Would otherwise wait a minute before trying again.
    second = Elector(driver, new_id("second"), elect_interval=60.0, ttl=120.0)
    notifier = Notifier(driver)
    notifier.subscribe("river_leadership", second.handle_notification)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.run)
            await nursery.start(first.run)
            await first.next_term()
            await nursery.start(second.run)
            await second.attempts.wait_for(1)
            assert not second.is_leader
            first.stop()
            with trio.fail_after(5):
                await second.next_term()
            second.stop()
            notifier.stop()


async def test_leader_whose_term_was_replaced_steps_down(driver: Driver) -> None:
    """93: another client's term, or another term under the same id."""
    elector = Elector(driver, new_id("ousted"), elect_interval=0.1, ttl=1.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(elector.run)
            term = await elector.next_term()
            # Same id, another term (as if it had expired and been won again).
            await driver.execute(
                "UPDATE /*schema*/river_leader SET elected_at = elected_at - interval '1 second'"
            )
            await term.lost.wait()
            assert not elector.is_leader
            # It stands again and wins a new term (the row is its id's, not expired,
            # so it waits for the expiry).
            term2 = await elector.next_term(after=term.number)
            assert term2.number == 2
            # Now a different client takes the row over.
            await driver.execute(
                "UPDATE /*schema*/river_leader SET leader_id = 'usurper', elected_at = now(), "
                "expires_at = now() + interval '1 hour'"
            )
            await term2.lost.wait()
            attempts = elector.attempts.value
            await elector.attempts.wait_for(attempts + 2)
            assert not elector.is_leader
            assert (await leader_row(driver))["leader_id"] == "usurper"
            elector.stop()
    # Stopping does not delete a row that is not its own.
    assert (await leader_row(driver))["leader_id"] == "usurper"


async def test_request_resign_makes_the_leader_step_down(driver: Driver) -> None:
    """94."""
    leader = Elector(driver, new_id("leader"), elect_interval=0.5, ttl=2.0)
    other = Elector(driver, new_id("other"), elect_interval=60.0, ttl=120.0)
    notifier = Notifier(driver)
    notifier.subscribe("river_leadership", leader.handle_notification)
    notifier.subscribe("river_leadership", other.handle_notification)
    listener = await open_leadership_listener(driver)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(notifier.run)
                await nursery.start(leader.run)
                term = await leader.next_term()
                await nursery.start(other.run)
                await other.attempts.wait_for(1)
                await request_resign(driver)
                await term.lost.wait()
                # The resigned leader stands back for an interval: the other wins.
                await other.next_term()
                assert not leader.is_leader
                assert (await leader_row(driver))["leader_id"] == other.client_id
                other.stop()
                leader.stop()
                notifier.stop()
            payloads = [await next_payload(listener) for _ in range(3)]
    finally:
        await listener.aclose()
    assert payloads[0] == {"action": "request_resign"}
    assert payloads[1] == {"leader_id": leader.client_id, "action": "resigned"}
    assert payloads[2] == {"leader_id": other.client_id, "action": "resigned"}


async def test_leader_that_cannot_reelect_within_its_ttl_steps_down(driver: Driver) -> None:
    failing = True

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        if failing:
            raise DatabaseError("injected: the database is unreachable")

    faulty = HookedDriver(driver, reelect, fail)
    ttl = 1.0
    elector = Elector(faulty, new_id("cut-off"), elect_interval=0.2, ttl=ttl)  # type: ignore[arg-type]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(elector.run)
            term = await elector.next_term()
            won_at = trio.current_time()
            await term.lost.wait()
            held_for = trio.current_time() - won_at
            # It stepped down on its own once its TTL was up, after retrying.
            assert ttl - 0.3 <= held_for <= ttl + 0.5
            assert faulty.hooked >= 2
            failing = False
            # Once the row expires it wins a fresh term.
            term2 = await elector.next_term(after=term.number)
            assert term2.elected_at > term.elected_at
            elector.stop()


async def test_stop_during_an_election_attempt_removes_a_committed_row(driver: Driver) -> None:
    class StuckAfterElect(HookedDriver):
        """Runs the elect statement, then hangs as if its answer never came back."""

        reached = trio.Event()

        async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            result = await self._driver.run(fn, *args, **kwargs)
            if fn is elect:
                self.reached.set()
                await trio.sleep_forever()
            return result

    stuck = StuckAfterElect(driver, elect, trio.lowlevel.checkpoint)
    elector = Elector(stuck, new_id("cut"), elect_interval=0.1, ttl=60.0)  # type: ignore[arg-type]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(elector.run)
            await stuck.reached.wait()
            # The insert committed, but the elector never learned it won.
            assert (await leader_row(driver))["leader_id"] == elector.client_id
            assert not elector.is_leader
            elector.stop()
    assert await leader_row(driver) is None


# -- a dead leader holding a liveness lock is replaced at the next attempt --


async def test_dead_marked_leader_is_replaced_at_the_next_attempt(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    dead_id = marked_id("dead")
    # Its term would last an hour; its lock is free: the process is gone.
    dead = await put_leader(driver, dead_id, 3600)
    candidate = Elector(driver, marked_id("next"), elect_interval=0.1, ttl=1.0, liveness_lock=True)
    caplog.set_level(logging.INFO, logger="rivertrio.elector")
    async with liveness_held(driver, candidate.client_id):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(candidate.run)
                term = await candidate.next_term()
                assert candidate.attempts.value == 1  # the first attempt won
                row = await leader_row(driver)
                assert row["leader_id"] == candidate.client_id
                assert row["elected_at"] == term.elected_at > dead["elected_at"]
                candidate.stop()
    removed = [r for r in caplog.records if "removed the term" in r.getMessage()]
    assert len(removed) == 1 and removed[0].levelno == logging.INFO
    assert dead_id in removed[0].getMessage()


async def test_marked_leader_holding_its_lock_is_not_replaced(driver: Driver) -> None:
    alive_id = marked_id("alive")
    alive = await put_leader(driver, alive_id, 3600)
    candidate = Elector(driver, marked_id("next"), elect_interval=0.1, ttl=1.0, liveness_lock=True)
    async with liveness_held(driver, candidate.client_id):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                lock = await take_lock(driver, alive_id)
                try:
                    await nursery.start(candidate.run)
                    await candidate.attempts.wait_for(5)
                    assert not candidate.is_leader
                    assert (await leader_row(driver))["elected_at"] == alive["elected_at"]
                finally:
                    # Now the process dies: it is replaced at the next attempt.
                    await lock.aclose()
                attempts = candidate.attempts.value
                await candidate.next_term()
                assert candidate.attempts.value <= attempts + 2
                assert (await leader_row(driver))["leader_id"] == candidate.client_id
                candidate.stop()


async def test_unmarked_leader_is_replaced_only_when_its_term_expires(driver: Driver) -> None:
    # A River Go client's id, say: it holds no liveness lock, so none can say it died.
    other = await put_leader(driver, new_id("go-client"), 5)
    candidate = Elector(driver, marked_id("next"), elect_interval=0.1, ttl=1.0, liveness_lock=True)
    async with liveness_held(driver, candidate.client_id):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(candidate.run)
                await candidate.attempts.wait_for(3)
                assert not candidate.is_leader
                assert (await leader_row(driver))["leader_id"] == other["leader_id"]
                term = await candidate.next_term()
                assert term.elected_at >= other["expires_at"]
                candidate.stop()


async def test_candidate_without_its_lock_neither_stands_nor_removes_a_leader(
    driver: Driver,
) -> None:
    """It would win a term its peers remove at once (a client starting, or reconnecting)."""
    candidate = Elector(
        driver, marked_id("lockless"), elect_interval=0.1, ttl=1.0, liveness_lock=True
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(candidate.run)
            await candidate.attempts.wait_for(3)
            assert await leader_row(driver) is None
            dead = await put_leader(driver, marked_id("dead"), 3600)
            await candidate.attempts.wait_for(candidate.attempts.value + 3)
            assert not candidate.is_leader
            assert (await leader_row(driver))["elected_at"] == dead["elected_at"]
            async with liveness_held(driver, candidate.client_id):
                await candidate.next_term()
                assert (await leader_row(driver))["leader_id"] == candidate.client_id
                candidate.stop()


async def test_leader_that_loses_its_lock_is_replaced_once_without_flapping(
    driver: Driver,
) -> None:
    # A TTL of a minute: only the lock can move leadership within this test.
    first = Elector(driver, marked_id("first"), elect_interval=0.1, ttl=60.0, liveness_lock=True)
    second = Elector(driver, marked_id("second"), elect_interval=0.1, ttl=60.0, liveness_lock=True)
    async with liveness_held(driver, second.client_id):
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                first_lock = await take_lock(driver, first.client_id)
                await nursery.start(first.run)
                first_term = await first.next_term()
                await nursery.start(second.run)
                await second.attempts.wait_for(3)
                assert not second.is_leader
                # The first's lock connection dies while it lives and leads.
                await first_lock.aclose()
                second_term = await second.next_term()
                # Its next re-election finds the term replaced: it steps down.
                await first_term.lost.wait()
                assert not first.is_leader
                # Lockless, it does not stand; with its lock back it finds a live
                # leader: the second keeps its term.
                await first.attempts.wait_for(first.attempts.value + 3)
                async with liveness_held(driver, first.client_id):
                    await first.attempts.wait_for(first.attempts.value + 3)
                    await second.reelections.wait_for(second.reelections.value + 2)
                    assert not first.is_leader and first.term is None
                    assert second.term is second_term and not second_term.lost.is_set()
                    row = await leader_row(driver)
                    assert row["leader_id"] == second.client_id
                    assert row["elected_at"] == second_term.elected_at
                    first.stop()
                    second.stop()
