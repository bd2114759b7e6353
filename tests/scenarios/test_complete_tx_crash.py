"""`job_complete_tx` under a crash: the worker process dies between its commit and its completer.

A child process works a `Pay` job: it writes a ledger row and completes the
job in one transaction, then hangs, and is SIGKILLed before its completer can
write the outcome. A `Hang` job of the same process is left running as a
witness. The leader (a client in this process, production rescue settings)
rescues the witness once the dead process's liveness lock is gone; by then it
has looked at every job the dead process held, and the completed job must be
untouched: completed, attempt 1, no error, its ledger row there once, and never
run again.
"""

from __future__ import annotations

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
from rivertrio._maintenance import JobRescuer
from support.common import Noop, config, row
from support.maintenance import make_job

pytestmark = pytest.mark.timeout(90)

CHILD = Path(__file__).resolve().parent.parent / "support" / "complete_tx_child.py"


async def test_a_job_completed_in_its_transaction_survives_its_process_dying(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await driver.execute("CREATE TABLE /*schema*/ledger (job_id bigint NOT NULL, amount int)")
    suffix = uuid.uuid4().hex[:8]
    dead_id = f"payer-{suffix}{CLIENT_ID_MARKER}"
    live_cfg = config(migrated_schema, id=f"leader-{suffix}{CLIENT_ID_MARKER}")
    with trio.fail_after(60):
        async with rivertrio.open_client(live_cfg, database_url=database_url) as live:
            await live._tree.maintainer.terms.wait_for(1)  # this client leads
            rescuer = live._tree.maintainer.service(JobRescuer)
            proc = await trio.lowlevel.open_process(
                [sys.executable, str(CHILD), database_url, migrated_schema, dead_id],
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                lines = Lines(proc.stdout)
                assert await lines.next() == "ready"
                paid = await make_job(driver, kind="pay", queue="ledger", args={"amount": 42})
                assert await lines.next() == f"committed {paid}"
                witness = await make_job(driver, kind="hang", queue="ledger")
                assert await lines.next() == f"running {witness}"
                proc.kill()  # SIGKILL: the completer never writes the Pay job's outcome
                await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with trio.move_on_after(5, shield=True):
                        await proc.wait()

            while (await row(driver, witness)).state is rivertrio.JobState.RUNNING:
                await rescuer.passes.wait_for(rescuer.passes.value + 1)
            # One more full pass after the witness's rescue, for good measure.
            await rescuer.passes.wait_for(rescuer.passes.value + 1)
            await live.insert(Noop())  # the leader client goes on as usual

    stored = await row(driver, paid)
    assert stored.state is rivertrio.JobState.COMPLETED
    assert stored.attempt == 1 and stored.errors == []
    assert stored.attempted_by == [dead_id]
    assert stored.finalized_at is not None
    ledger = await driver.fetch("SELECT job_id, amount FROM /*schema*/ledger")
    assert [(r["job_id"], r["amount"]) for r in ledger] == [(paid, 42)]
