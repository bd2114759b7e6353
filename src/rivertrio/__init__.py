"""rivertrio: a Postgres-backed job queue for Trio, schema-compatible with River."""

from __future__ import annotations

import contextlib

from ._args import InsertOpts as InsertOpts
from ._args import InsertParams as InsertParams
from ._args import Job as Job
from ._args import JobArgs as JobArgs
from ._client import Client as Client
from ._client import QueueBundle as QueueBundle
from ._client import current_client as current_client
from ._client import open_client as open_client
from ._complete_tx import job_complete_tx as job_complete_tx
from ._config import Config as Config
from ._config import ErrorHandler as ErrorHandler
from ._config import ErrorHandlerResult as ErrorHandlerResult
from ._config import QueueConfig as QueueConfig
from ._driver import Driver as Driver
from ._driver import Queryable as Queryable
from ._driver import Tx as Tx
from ._driver import open_driver as open_driver
from ._events import Event as Event
from ._events import EventKind as EventKind
from ._events import JobStats as JobStats
from ._exceptions import AlreadyRunningError as AlreadyRunningError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import DatabaseConnectionError as DatabaseConnectionError
from ._exceptions import DatabaseError as DatabaseError
from ._exceptions import EmbeddedPostgresError as EmbeddedPostgresError
from ._exceptions import InvalidInputError as InvalidInputError
from ._exceptions import JobCancel as JobCancel
from ._exceptions import JobDecodeError as JobDecodeError
from ._exceptions import JobNotRunningError as JobNotRunningError
from ._exceptions import JobRunningError as JobRunningError
from ._exceptions import JobSnooze as JobSnooze
from ._exceptions import JobTimeoutError as JobTimeoutError
from ._exceptions import MigrationError as MigrationError
from ._exceptions import NotFoundError as NotFoundError
from ._exceptions import QueueAlreadyAddedError as QueueAlreadyAddedError
from ._exceptions import QueueNotFoundError as QueueNotFoundError
from ._exceptions import RivertrioError as RivertrioError
from ._exceptions import UnknownJobKindError as UnknownJobKindError
from ._exceptions import WorkResultError as WorkResultError
from ._flow import FlowControl as FlowControl
from ._flow import FlowKey as FlowKey
from ._flow import RateLimit as RateLimit
from ._hooks import Hook as Hook
from ._hooks import JobInsertParams as JobInsertParams
from ._hooks import Middleware as Middleware
from ._hooks import QueueStats as QueueStats
from ._insert import InsertResult as InsertResult
from ._job import AttemptError as AttemptError
from ._job import JobProgress as JobProgress
from ._job import JobRow as JobRow
from ._job import JobState as JobState
from ._joblog import JobContextFilter as JobContextFilter
from ._joblog import JobLogMiddleware as JobLogMiddleware
from ._joblog import add_job_context as add_job_context
from ._maintenance import PeriodicJobs as PeriodicJobs
from ._maintenance_config import REINDEXER_INDEX_NAMES_DEFAULT as REINDEXER_INDEX_NAMES_DEFAULT
from ._maintenance_config import PeriodicJob as PeriodicJob
from ._migrate import MigrateResult as MigrateResult
from ._migrate import MigrationInfo as MigrationInfo
from ._migrate import MigrationStatus as MigrationStatus
from ._migrate import MigrationVersion as MigrationVersion
from ._migrate import ValidateResult as ValidateResult
from ._migrate import migrate as migrate
from ._migrate import migrate_get as migrate_get
from ._migrate import migrate_list as migrate_list
from ._migrate import migrate_validate as migrate_validate
from ._output import record_output as record_output
from ._params import JobDeleteManyParams as JobDeleteManyParams
from ._params import JobListCursor as JobListCursor
from ._params import JobListOrderBy as JobListOrderBy
from ._params import JobListParams as JobListParams
from ._params import JobListResult as JobListResult
from ._params import Queue as Queue
from ._progress import report_progress as report_progress
from ._render import Paramstyle as Paramstyle
from ._render import render_insert as render_insert
from ._retry import RetryPolicy as RetryPolicy
from ._retry import default_retry_policy as default_retry_policy
from ._unique import UniqueOpts as UniqueOpts
from ._unique_fields import Unique as Unique
from ._worker import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._worker import Worker as Worker
from ._worker import Workers as Workers
from ._workflow import Workflow as Workflow
from ._workflow import WorkflowInfo as WorkflowInfo
from ._workflow import Workflows as Workflows
from ._workflow import WorkflowSummary as WorkflowSummary
from ._workflow import WorkflowTask as WorkflowTask

__version__ = "0.1.0"


def _fix_module_names() -> None:
    # Reprs and tracebacks say rivertrio.Client, not rivertrio._client.Client (as trio does).
    for name, obj in list(globals().items()):
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith("rivertrio._"):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = __name__


_fix_module_names()
del _fix_module_names
