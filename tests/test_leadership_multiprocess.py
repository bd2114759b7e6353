"""Leadership moves between processes: the leader process exits, another client takes over."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

import rivertrio
from _support import config
from rivertrio._driver import Driver
from rivertrio._liveness import CLIENT_ID_MARKER
from test_rescue_multiprocess import Lines

pytestmark = pytest.mark.timeout(90)

CHILD = Path(__file__).with_name("_rescue_child.py")


async def leader_id(driver: Driver) -> str | None:
    value: str | None = await driver.fetchval("SELECT leader_id FROM /*schema*/river_leader")
    return value


async def test_leadership_moves_when_the_leader_process_exits(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    suffix = uuid.uuid4().hex[:8]
    child_id = f"first-{suffix}{CLIENT_ID_MARKER}"
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(CHILD), database_url, migrated_schema, child_id, "1", "lead"],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            lines = Lines(proc.stdout)
            assert await lines.next() == "ready"
            assert await lines.next() == "leader"
            assert await leader_id(driver) == child_id

            cfg = config(migrated_schema, id=f"second-{suffix}{CLIENT_ID_MARKER}")
            async with rivertrio.open_client(cfg, database_url=database_url) as second:
                assert await leader_id(driver) == child_id  # a follower while it lives
                proc.send_signal(signal.SIGINT)  # Ctrl-C: the client stops and resigns
                exited_at = trio.current_time()
                await proc.wait()
                await second._maintainer.terms.wait_for(1)
                took = trio.current_time() - exited_at
                assert await leader_id(driver) == second.id
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(5, shield=True):
                    await proc.wait()
    assert proc.returncode is not None
    print(f"\nleadership moved {took:.2f} s after the leader process was interrupted")
    # Woken by the resignation, not by the 15 s term expiry.
    assert took < 5
