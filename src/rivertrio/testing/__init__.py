"""Tools for testing code built on rivertrio, and rivertrio itself. Not imported by default."""

from __future__ import annotations

from ._lifecycle import ServiceLifecycleMachine as ServiceLifecycleMachine
from ._lifecycle import stress_start_stop as stress_start_stop
from ._workers import RequireInsertedOpts as RequireInsertedOpts
from ._workers import WorkResult as WorkResult
from ._workers import require_inserted as require_inserted
from ._workers import require_many_inserted as require_many_inserted
from ._workers import require_not_inserted as require_not_inserted
from ._workers import work_job as work_job
