"""The lifecycle contract on every database-backed service.

Many tasks start and stop one service at once (`rivertrio.testing.stress_start_stop`):
no exception, no deadlock, every stop within 5 s, and the service ends stopped.
Fewer rounds than the in-memory services get, since every start talks to Postgres.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

import rivertrio
from rivertrio._driver import Driver
from rivertrio._driver._liveness import LIVE_KEYS, liveness_key
from rivertrio._elector import Elector
from rivertrio._liveness import CLIENT_ID_MARKER, Liveness
from rivertrio._maintenance import Maintainer
from rivertrio._notifier import Notifier
from rivertrio._service import Service
from rivertrio.testing import stress_start_stop

pytestmark = pytest.mark.timeout(120)


def _id() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}{CLIENT_ID_MARKER}"


def _maintainer(driver: Driver) -> Maintainer:
    elector = Elector(driver, _id())
    return Maintainer.for_config(driver, rivertrio.Config(schema=driver.schema), elector)


FACTORIES: dict[str, Callable[[Driver], Service]] = {
    "notifier": lambda driver: Notifier(driver),
    "elector": lambda driver: Elector(driver, _id()),
    "liveness": lambda driver: Liveness(driver, _id()),
    "maintainer": _maintainer,
}


@pytest.mark.parametrize("name", list(FACTORIES))
async def test_stress_start_stop(driver: Driver, name: str) -> None:
    service = await stress_start_stop(
        lambda: FACTORIES[name](driver), tasks=4, rounds=10, stop_timeout=5.0, start_timeout=10.0
    )
    assert service.stopped
    assert not service.started
    # Stopped for real: no leadership term and no liveness lock outlive it.
    assert await driver.fetchval("SELECT count(*) FROM /*schema*/river_leader") == 0
    if isinstance(service, Liveness):
        key = liveness_key(driver.schema, service.client_id)
        assert key not in await driver.fetchval(
            f"SELECT coalesce(array_agg(k), '{{}}') FROM ({LIVE_KEYS}) AS held(k)"
        )
