"""The driver: asyncpg inside Trio, cancellation, transactions and LISTEN/NOTIFY."""

from __future__ import annotations

import pytest
import trio

from rivertrio import DatabaseConnectionError, DatabaseError
from rivertrio._driver import Driver, open_driver


@pytest.fixture
async def plain(database_url: str, empty_schema: str):  # type: ignore[no-untyped-def]
    async with open_driver(database_url, schema=empty_schema, max_size=3) as d:
        yield d


async def test_statements_round_trip(plain: Driver) -> None:
    await plain.execute("CREATE TABLE /*schema*/t (x int)")
    await plain.execute("INSERT INTO /*schema*/t VALUES ($1), ($2)", 1, 2)
    assert await plain.fetchval("SELECT sum(x) FROM /*schema*/t") == 3
    rows = await plain.fetch("SELECT x FROM /*schema*/t ORDER BY x")
    assert [r["x"] for r in rows] == [1, 2]


async def test_schema_is_the_configured_one(plain: Driver, empty_schema: str) -> None:
    assert plain.schema == empty_schema
    assert plain.channel("river_insert") == f"{empty_schema}.river_insert"


async def test_cancelled_query_leaves_pool_usable(plain: Driver) -> None:
    # Cancel a query on every pooled connection at once; each must come back usable.
    with trio.fail_after(20):
        with trio.move_on_after(0.3) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(plain.pool_size):
                    nursery.start_soon(plain.execute, "SELECT pg_sleep(30)")
        assert scope.cancelled_caught
        results: list[int] = []
        async with trio.open_nursery() as nursery:
            for i in range(plain.pool_size * 2):

                async def one(i: int = i) -> None:
                    results.append(await plain.fetchval("SELECT $1::int", i))

                nursery.start_soon(one)
        assert sorted(results) == list(range(plain.pool_size * 2))
        # The server really stopped the sleeps: none of our backends is still in pg_sleep.
        busy = await plain.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        )
        assert busy == 0


async def test_transaction_commits_and_rolls_back(plain: Driver) -> None:
    await plain.execute("CREATE TABLE /*schema*/t (x int)")
    async with plain.transaction() as tx:
        await tx.execute("INSERT INTO /*schema*/t VALUES (1)")

    async def fail_inside() -> None:
        async with plain.transaction() as tx:
            await tx.execute("INSERT INTO /*schema*/t VALUES (2)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_inside()
    with trio.move_on_after(0.2):
        async with plain.transaction() as tx:
            await tx.execute("INSERT INTO /*schema*/t VALUES (3)")
            await trio.sleep_forever()
    rows = await plain.fetch("SELECT x FROM /*schema*/t")
    assert [r["x"] for r in rows] == [1]


async def test_statement_error_is_mapped(plain: Driver) -> None:
    with pytest.raises(DatabaseError, match="42P01") as info:
        await plain.execute("SELECT * FROM /*schema*/no_such_table")
    assert not isinstance(info.value, DatabaseConnectionError)


async def test_notification_in_transaction_arrives_after_commit(plain: Driver) -> None:
    listener = await plain.open_listener()
    try:
        await listener.listen("river_insert")
        async with plain.transaction() as tx:
            await tx.execute("SELECT pg_notify($1, 'x')", plain.channel("river_insert"))
            # Prove nothing arrived while the transaction is open: a notification
            # sent outside it on the same topic must be the first one received.
            await plain.notify("river_insert", "outside")
            with trio.fail_after(5):
                first = await listener.receive.receive()
            assert first.payload == "outside"
        with trio.fail_after(5):
            second = await listener.receive.receive()
        assert (second.topic, second.payload) == ("river_insert", "x")
    finally:
        await listener.aclose()


async def test_notification_reaches_only_its_topic(plain: Driver) -> None:
    a = await plain.open_listener()
    b = await plain.open_listener()
    try:
        await a.listen("topic_a")
        await b.listen("topic_b")
        await plain.notify("topic_a", "1")
        await plain.notify("topic_b", "2")
        with trio.fail_after(5):
            got_a = await a.receive.receive()
            got_b = await b.receive.receive()
        assert (got_a.topic, got_a.payload) == ("topic_a", "1")
        assert (got_b.topic, got_b.payload) == ("topic_b", "2")
        # Each saw exactly one: the other topic's notification never reached it.
        await plain.notify("topic_a", "3")
        with trio.fail_after(5):
            assert (await a.receive.receive()).payload == "3"
        with pytest.raises(trio.WouldBlock):
            b.receive.receive_nowait()
    finally:
        await a.aclose()
        await b.aclose()


async def test_broken_listen_connection_is_detected(plain: Driver) -> None:
    listener = await plain.open_listener()
    try:
        await listener.listen("river_insert")
        pid = listener.backend_pid
        assert await plain.fetchval("SELECT pg_terminate_backend($1)", pid)
        with trio.fail_after(10):
            # The server closing the socket is seen by the next read; a ping forces one.
            while not listener.broken.is_set():
                with pytest.raises(DatabaseConnectionError):
                    await listener.ping()
        assert listener.broken.is_set()
    finally:
        await listener.aclose()
