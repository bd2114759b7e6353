"""The database driver: asyncpg inside Trio through trio-asyncio.

This package is the only code in rivertrio that touches asyncio. The rest of the
library sees plain Trio async functions. Every call here is one loop crossing
(about 20 us of CPU, and 100 us more for a round trip), so callers batch: one call fetches
a batch of jobs, one call completes a batch, one call inserts many jobs. A call
that needs several statements passes an asyncio function to `Driver.run`, which
runs it on one pooled connection in a single crossing.

The modules, by job:

- `_crossing`: the trio-asyncio loop, and the crossing every call goes through.
- `_errors`: asyncpg's errors mapped to rivertrio's.
- `_queryable`, `_pool`: where statements run, the pool (`Driver`) or one
  connection (`Tx`); transactions; `open_driver`.
- `_lending`: the pool's connections lent and taken back (which are reset).
- `_dedicated`, `_listener`: the long-lived connections outside the pool, for
  LISTEN and for the liveness lock.
- `_topics`: the notification topics and their channel names.
- SQL, each module named after what it serves: `_sql` (shared text), `_insert`,
  `_producer`, `_completer`, `_leadership`, `_liveness`, `_maintenance`,
  `_admin` (managing jobs and queues), `_migrations`.
"""

from __future__ import annotations

# trio_asyncio must be imported before asyncpg, which every module here imports:
# it patches asyncio's loop lookup. A package runs its __init__ before any module
# of it, so this line comes first whatever is imported.
import trio_asyncio  # noqa: F401  # isort: skip

from ._crossing import RELEASE_TIMEOUT
from ._dedicated import DedicatedConnection
from ._errors import describe_url
from ._listener import DELIVERY_PROBE_TIMEOUT, Listener, Notification
from ._pool import Driver, open_driver
from ._queryable import Queryable, Tx
from ._sql import qualify, quote_ident

__all__ = [
    "DELIVERY_PROBE_TIMEOUT",
    "RELEASE_TIMEOUT",
    "DedicatedConnection",
    "Driver",
    "Listener",
    "Notification",
    "Queryable",
    "Tx",
    "describe_url",
    "open_driver",
    "qualify",
    "quote_ident",
]
