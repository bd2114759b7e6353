"""Leadership moves between processes: the leader process exits, another client takes over.

Interrupted, the leader resigns and the other client, woken by the ``resigned``
notification, takes over at once. SIGKILLed, it cannot resign; its liveness
lock is released with its connections, and the other client replaces it at its
next election attempt (every 5 s) rather than when its term expires (15 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio
from test_rescue_multiprocess import Lines

import rivertrio
from rivertrio._driver import Driver
from rivertrio._liveness import CLIENT_ID_MARKER
from support.common import config

pytestmark = pytest.mark.timeout(90)

# Client defaults (Elector).
ELECT_INTERVAL = 5.0
TTL = 15.0

CHILD = Path(__file__).resolve().parent.parent / "support" / "rescue_child.py"


async def leader_id(driver: Driver) -> str | None:
    value: str | None = await driver.fetchval("SELECT leader_id FROM /*schema*/river_leader")
    return value


@pytest.mark.parametrize("how", ["interrupted", "killed"])
async def test_leadership_moves_when_the_leader_process_exits(
    database_url: str, migrated_schema: str, driver: Driver, how: str
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
                await second._tree.elector.attempts.wait_for(1)  # lost: the child leads
                assert await leader_id(driver) == child_id  # a follower while it lives
                if how == "interrupted":
                    proc.send_signal(signal.SIGINT)  # Ctrl-C: the client stops and resigns
                else:
                    proc.kill()  # SIGKILL: no resignation, its sessions simply end
                exited_at = trio.current_time()
                await proc.wait()
                await second._tree.maintainer.terms.wait_for(1)
                took = trio.current_time() - exited_at
                assert await leader_id(driver) == second.id
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(5, shield=True):
                    await proc.wait()
    assert proc.returncode is not None
    print(f"\nleadership moved {took:.2f} s after the leader process was {how}")
    if how == "interrupted":
        # Woken by the resignation, not by the 15 s term expiry.
        assert took < 5
    else:
        # At the next attempt; the dead leader's term had at least TTL - ELECT_INTERVAL
        # s left (it re-elects every ELECT_INTERVAL s), so waiting for it takes longer.
        assert took < TTL - ELECT_INTERVAL
