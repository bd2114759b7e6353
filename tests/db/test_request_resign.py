"""``Client.request_resign`` (River's ``Client.Notify().RequestResign``): the leader steps down."""

from __future__ import annotations

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from support.common import config, next_payload, open_listener, replace, running

pytestmark = pytest.mark.timeout(60)


async def test_any_client_can_make_the_leader_resign(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    listener = await open_listener(driver, "river_leadership")
    try:
        async with (
            running(config(migrated_schema), database_url) as leader,
            running(rivertrio.Config(schema=migrated_schema), database_url) as other,
        ):
            term = await leader._tree.elector.next_term()
            await other.request_resign()
            with trio.fail_after(10):
                await term.lost.wait()
            assert await next_payload(listener) == {"action": "request_resign"}
            assert await next_payload(listener) == {"leader_id": leader.id, "action": "resigned"}
    finally:
        await listener.aclose()


async def test_a_poll_only_leader_hears_its_own_request(
    database_url: str, migrated_schema: str
) -> None:
    cfg = replace(config(migrated_schema), poll_only=True)
    async with running(cfg, database_url) as client:
        term = await client._tree.elector.next_term()
        await client.request_resign()
        with trio.fail_after(10):
            await term.lost.wait()


async def test_the_request_is_sent_when_the_transaction_commits(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    listener = await open_listener(driver, "river_leadership")
    try:
        async with running(rivertrio.Config(schema=migrated_schema), database_url) as client:

            async def request_then_fail() -> None:
                async with client.transaction() as tx:
                    await client.request_resign_tx(tx)
                    raise RuntimeError("rolled back")

            with pytest.raises(RuntimeError, match="rolled back"):
                await request_then_fail()
            await driver.notify("river_leadership", '{"action":"marker"}')
            # Nothing came before the marker: the rolled back request was never sent.
            assert await next_payload(listener) == {"action": "marker"}
            async with client.transaction() as tx:
                await client.request_resign_tx(tx)
            assert await next_payload(listener) == {"action": "request_resign"}
    finally:
        await listener.aclose()
