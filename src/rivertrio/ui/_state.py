"""What a dashboard's requests share: its settings, its client, its background full count."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime

import trio
from starlette.requests import Request

from .._client import Client
from .._exceptions import DashboardUnavailableError, RivertrioError
from . import _overview
from ._assets import Asset, load_assets
from ._security import Auth

__all__ = ["Dashboard", "dashboard"]

log = logging.getLogger("rivertrio.ui")

# A full count (a table scan) is made again after this many seconds at least,
# or 30 times as long as the last one took, whichever is longer.
_RECOUNT_AFTER = 60.0
_RECOUNT_FACTOR = 30


@dataclass
class Dashboard:
    """A dashboard's settings and its shared state (``app.state.dashboard``)."""

    auth: Auth
    read_only: bool
    refresh_seconds: float
    client: Client | None
    assets: dict[str, Asset] = field(default_factory=load_assets)
    nursery: trio.Nursery | None = None
    """Where background work runs, while the app's lifespan does."""
    exact: dict[tuple[str, str], int] | None = None
    exact_at: datetime | None = None
    exact_done: float = -math.inf
    exact_took: float = 0.0
    counting: bool = False
    counted: trio.Event = field(default_factory=trio.Event)
    """Set when the first full count has ended (made, or failed)."""

    def require_client(self) -> Client:
        """The open client.

        Raises:
            DashboardUnavailableError: The lifespan that opens it has not run, and none was given.
        """
        if self.client is None:
            raise DashboardUnavailableError(
                "the dashboard's database client is not open: run the app with an ASGI "
                "server that runs its lifespan, or pass client= to create_app"
            )
        return self.client

    async def overview(self) -> _overview.Overview:
        """The overview, with counts past the cap from the last full count (and one
        started in the background when it is due)."""
        view = await _overview.overview(self.require_client(), self.exact)
        if any(q.over_cap for q in view.queues):
            self._want_exact()
        return dataclasses.replace(view, counted_at=self.exact_at)

    def _want_exact(self) -> None:
        if self.nursery is None or self.counting or self.client is None:
            return
        due = self.exact_done + max(_RECOUNT_AFTER, _RECOUNT_FACTOR * self.exact_took)
        if trio.current_time() < due:
            return
        self.counting = True
        self.nursery.start_soon(self._count, self.client)

    async def _count(self, client: Client) -> None:
        started = trio.current_time()
        try:
            self.exact = await _overview.exact_counts(client)
            self.exact_at = await client.driver.fetchval("SELECT now()")
        except RivertrioError as exc:
            log.warning("rivertrio ui: the full count of jobs failed: %s", exc)
        finally:
            self.exact_took = trio.current_time() - started
            self.exact_done = trio.current_time()
            self.counting = False
            self.counted.set()


def dashboard(request: Request) -> Dashboard:
    """The dashboard a request is for."""
    found: Dashboard = request.app.state.dashboard
    return found
