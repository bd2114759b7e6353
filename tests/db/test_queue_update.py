"""Queue metadata (River's QueueUpdate), and ``rivertrio queues list`` showing it and the leader."""

from __future__ import annotations

import json

import pytest

import rivertrio
from rivertrio import InvalidInputError, NotFoundError
from rivertrio._driver import Driver
from support.cli import invoke
from support.common import config, next_payload, open_listener, running

pytestmark = pytest.mark.timeout(60)


async def make_queue(driver: Driver, name: str, metadata: str = "{}") -> None:
    await driver.execute(
        "INSERT INTO /*schema*/river_queue (name, metadata, updated_at)"
        " VALUES ($1, $2, now() - interval '1 hour')",
        name,
        metadata,
    )


async def test_metadata_is_replaced_and_clients_are_told(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await make_queue(driver, "reports", '{"owner":"ops","tier":1}')
    listener = await open_listener(driver, "river_control")
    try:
        async with running(rivertrio.Config(schema=migrated_schema), database_url) as client:
            before = await client.queue_get("reports")
            updated = await client.queue_update("reports", metadata={"tier": 2, "region": "eu"})
            # Replaced, as River does: "owner" is gone.
            assert updated.metadata == {"tier": 2, "region": "eu"}
            assert updated.updated_at > before.updated_at
            assert await client.queue_get("reports") == updated
            assert await next_payload(listener) == {
                "action": "metadata_changed",
                "metadata": {"tier": 2, "region": "eu"},
                "queue": "reports",
            }

            # No metadata: only updated_at moves; the same metadata (any key
            # order): nobody is told. The marker shows nothing came before it.
            touched = await client.queue_update("reports")
            assert touched.metadata == updated.metadata
            assert touched.updated_at >= updated.updated_at
            await client.queue_update("reports", metadata={"region": "eu", "tier": 2})
            await driver.notify("river_control", '{"action":"marker"}')
            assert await next_payload(listener) == {"action": "marker"}
    finally:
        await listener.aclose()


async def test_update_in_a_transaction_commits_with_it(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await make_queue(driver, "q1")
    async with running(rivertrio.Config(schema=migrated_schema), database_url) as client:

        async def update_then_fail() -> None:
            async with client.transaction() as tx:
                inside = await client.queue_update_tx(tx, "q1", metadata={"a": 1})
                assert inside.metadata == {"a": 1}
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError, match="rolled back"):
            await update_then_fail()
        assert (await client.queue_get("q1")).metadata == {}
        async with client.transaction() as tx:
            await client.queue_update_tx(tx, "q1", metadata={"a": 1})
        assert (await client.queue_get("q1")).metadata == {"a": 1}


async def test_bad_input_is_refused_before_anything_is_written(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await make_queue(driver, "q1", '{"keep":true}')
    async with running(rivertrio.Config(schema=migrated_schema), database_url) as client:
        with pytest.raises(NotFoundError, match="queue 'nope' not found"):
            await client.queue_update("nope", metadata={})
        with pytest.raises(InvalidInputError, match="queue metadata must be a JSON object"):
            await client.queue_update("q1", metadata=[1])  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match=r"queue metadata .*NaN"):
            await client.queue_update("q1", metadata={"x": float("nan")})
        with pytest.raises(InvalidInputError, match="queue name"):
            await client.queue_update("", metadata={})
        assert (await client.queue_get("q1")).metadata == {"keep": True}


async def test_queues_list_shows_metadata_and_the_leader(
    database_url: str, migrated_schema: str
) -> None:
    opts = ["--database-url", database_url, "--schema", migrated_schema]
    async with running(config(migrated_schema), database_url) as client:
        term = await client._tree.elector.next_term()
        await client.queue_update("default", metadata={"team": "[payments]"})
        listed = await invoke("queues", "list", "--json", *opts)
        [queue] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert queue["metadata"] == {"team": "[payments]"}
        assert queue["leader"]["id"] == client.id
        assert queue["leader"]["elected_at"] == term.elected_at.isoformat()
        table = await invoke("queues", "list", *opts)
        assert f"leader: {client.id}, elected " in table.stdout
        # Folded to the terminal's width; shown as text, brackets and all.
        assert '{"team":"[payments]"}' in "".join(table.stdout.split())
    # No client runs: no leader.
    table = await invoke("queues", "list", *opts)
    assert "leader: none" in table.stdout
