"""Tools for testing code built on rivertrio, and rivertrio itself. Not imported by default."""

from __future__ import annotations

from ._failures import DuplicateItemError as DuplicateItemError
from ._failures import HangError as HangError
from ._failures import LostItemError as LostItemError
from ._failures import SendOnClosedChannelError as SendOnClosedChannelError
from ._failures import ServiceCheckError as ServiceCheckError
from ._failures import TaskLeftRunningError as TaskLeftRunningError
from ._failures import UncaughtError as UncaughtError
from ._failures import UnexpectedItemError as UnexpectedItemError
from ._lifecycle import ServiceLifecycleMachine as ServiceLifecycleMachine
from ._pipeline import PipelineMachine as PipelineMachine
from ._profiles import CI_PROFILE as CI_PROFILE
from ._profiles import LONG_PROFILE as LONG_PROFILE
from ._profiles import register_profiles as register_profiles
from ._protocols import StoppableService as StoppableService
from ._protocols import TrioService as TrioService
from ._require import RequireInsertedOpts as RequireInsertedOpts
from ._require import require_inserted as require_inserted
from ._require import require_many_inserted as require_many_inserted
from ._require import require_not_inserted as require_not_inserted
from ._stress import stress_start_stop as stress_start_stop
from ._workers import WorkResult as WorkResult
from ._workers import work_job as work_job
