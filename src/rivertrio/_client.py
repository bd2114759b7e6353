"""The client: inserts jobs and, with queues configured, runs the service tree that works them."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Literal

import trio

from ._args import InsertOpts, InsertParams, JobArgs
from ._config import Config, QueueConfig
from ._driver import Driver, Tx, open_driver
from ._driver._topics import LEADERSHIP_TOPIC
from ._events import Event, EventKind
from ._exceptions import AlreadyRunningError, ConfigError
from ._insert import Inserter, InsertResult
from ._maintenance import PeriodicJobs
from ._management import Management
from ._service_tree import ServiceTree
from ._util import collapse_single_groups
from .embedded import resolve_database_url

__all__ = ["Client", "QueueBundle", "current_client", "job_client", "open_client"]

#: The client running the current job; set in each job's own task (see `WorkConfig`).
job_client: ContextVar[Client] = ContextVar("rivertrio_client")


def current_client() -> Client:
    """The client running the current job, for workers that insert follow-up jobs.

    Raises:
        RuntimeError: Called outside a job run by a rivertrio client.
    """
    try:
        return job_client.get()
    except LookupError:
        raise RuntimeError("current_client() is only available inside a job's work()") from None


_RESIGN_REQUEST = json.dumps({"action": "request_resign"})


class QueueBundle:
    """Add and remove queues of a running client (``client.queues``)."""

    def __init__(self, tree: ServiceTree) -> None:
        self._tree = tree

    async def add(self, name: str, queue_config: QueueConfig) -> None:
        """Start working a new queue now (or at the next start, when stopped).

        Raises:
            QueueAlreadyAddedError: The client already works that queue.
            ConfigError: The name or the queue config is invalid (checked with
                the client's config, as if the queue were one of its queues).
            MigrationError: The client runs, the queue is flow-controlled, and the
                schema lacks the ``rivertrio_flow`` migration line.
        """
        await self._tree.add_queue(name, queue_config)

    async def remove(self, name: str) -> None:
        """Stop working a queue; waits for its running jobs to finish. A checkpoint.

        Raises:
            QueueNotFoundError: The client does not work that queue.
        """
        await self._tree.remove_queue(name)


class Client(Management):
    """Inserts jobs and, when its config has queues, works them.

    Use `open_client` for the usual case. The lower-level form, for programs
    that manage their own nursery: ``client = Client(config, driver)`` then
    ``await nursery.start(client.run)``.
    """

    config: Config
    """The configuration the client was built with."""
    driver: Driver
    """The client's connection pool."""
    id: str
    """The client's id (``config.id``), recorded in ``attempted_by`` of the jobs it works."""
    queues: QueueBundle
    """Add and remove queues while the client runs."""
    periodic_jobs: PeriodicJobs
    """The periodic jobs the leader enqueues; ``add(job)`` / ``remove(id)`` at runtime."""

    def __init__(self, config: Config, driver: Driver) -> None:
        self.config = config
        self.driver = driver
        self.id = config.id
        self.periodic_jobs = PeriodicJobs(config.periodic_jobs)
        self._inserter = Inserter(driver, config, on_available=self._wake_local)
        self._tree = ServiceTree(
            config,
            driver,
            inserter=self._inserter,
            periodic_jobs=self.periodic_jobs,
            enter_job=functools.partial(job_client.set, self),
        )
        self.queues = QueueBundle(self._tree)

    # -- lifecycle: the service tree's --

    @property
    def started(self) -> bool:
        """Whether the client is running (started and not yet stopped)."""
        return self._tree.started

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the service tree until stopped; use as ``await nursery.start(client.run)``.

        Cancelling the enclosing scope hard-stops the client: running jobs are
        interrupted (back to `available`), and their outcomes are still persisted
        and delivered before `run` returns.

        Raises:
            AlreadyRunningError: The client is running already.
            MigrationError: A queue it works is flow-controlled and the schema
                lacks the ``rivertrio_flow`` migration line (``rivertrio migrate
                up`` installs it); nothing was fetched.
            DatabaseError: A service could not start.
        """
        if not self._tree.stopped:
            raise AlreadyRunningError("the client is already running: stop it first")
        await self._tree.run(task_status=task_status)

    async def stop(self) -> None:
        """Stop fetching, let running jobs finish, persist every outcome, then return.

        A checkpoint. Cancelling the wait does not cancel the stop: the client goes
        on stopping, and a later `stop` waits again. With `soft_stop_timeout`, jobs
        still running after it are cancelled (as by `stop_and_cancel`).
        """
        self._tree.stop()
        await self._tree.wait_stopped()

    async def stop_and_cancel(self) -> None:
        """Stop fetching and cancel running jobs now; they go back to `available`.

        A checkpoint; returns once every outcome is persisted and delivered.
        """
        self._tree.cancel_work()
        await self._tree.wait_stopped()

    def _wake_local(self, queues: frozenset[str]) -> None:
        self._tree.wake(queues)

    # -- inserting --

    async def insert(self, args: JobArgs, opts: InsertOpts | None = None) -> InsertResult:
        """Insert one job, in one statement with its notification. A checkpoint.

        Cancelled before the job is sent, it raises `trio.Cancelled` and nothing
        is inserted; once sent, it waits for the answer and returns the result
        (or raises the error), so the caller knows which. Concurrent calls share
        a statement (see `Config.insert_coalesce_window`), each getting its own
        result or error.

        Raises:
            InvalidInputError: The args or options are invalid (nothing is written).
            UnknownJobKindError: Workers are configured and none handles this kind.
            DatabaseError: The database refused this job.
            DatabaseConnectionError: The database could not be reached, or did
                not answer (then whether the job was inserted is unknown).
        """
        return await self._inserter.insert(self.driver, args, opts)

    async def insert_many(self, params: Sequence[InsertParams]) -> list[InsertResult]:
        """Insert many jobs in one statement; all or none."""
        return await self._inserter.insert_many(self.driver, params)

    async def insert_many_fast(self, params: Sequence[InsertParams]) -> int:
        """Insert many jobs with COPY and return how many; all or none."""
        return await self._inserter.insert_many_fast(self.driver, params)

    async def insert_tx(
        self, tx: Tx, args: JobArgs, opts: InsertOpts | None = None
    ) -> InsertResult:
        """Insert one job inside the caller's transaction (visible and notified on commit)."""
        return await self._inserter.insert(tx, args, opts)

    async def insert_many_tx(self, tx: Tx, params: Sequence[InsertParams]) -> list[InsertResult]:
        """Insert many jobs inside the caller's transaction."""
        return await self._inserter.insert_many(tx, params)

    async def insert_many_fast_tx(self, tx: Tx, params: Sequence[InsertParams]) -> int:
        """`insert_many_fast` inside the caller's transaction (a unique conflict aborts it)."""
        return await self._inserter.insert_many_fast(tx, params)

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction on this client's database, for ``*_tx`` calls and your own SQL."""
        return self.driver.transaction()

    # -- leadership --

    async def request_resign(self) -> None:
        """Ask the current leader, whichever client it is, to resign. A checkpoint.

        River's ``Client.Notify().RequestResign``: a ``request_resign``
        notification on the leadership topic. The leader (River's or
        rivertrio's) steps down, and the clients elect a leader again; the one
        that resigned stands back for an interval. A leader that does not
        listen for notifications (``poll_only``) hears it only if it is this
        client.
        """
        await self.driver.notify(LEADERSHIP_TOPIC, _RESIGN_REQUEST)
        if self._tree.notifier is None:
            # This client does not LISTEN, so its own notification never reaches it.
            self._tree.elector.request_resign()

    async def request_resign_tx(self, tx: Tx) -> None:
        """`request_resign`, sent when the caller's transaction commits."""
        await tx.execute(
            "SELECT pg_notify($1, $2)", self.driver.channel(LEADERSHIP_TOPIC), _RESIGN_REQUEST
        )

    # -- events --

    def subscribe(
        self,
        *kinds: EventKind,
        buffer: int = 1000,
        overflow: Literal["block", "drop"] = "block",
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """Receive events of the given kinds; the channel ends when the client stops.

        ``overflow="block"`` never drops an event (a slow subscriber slows job
        completion); ``overflow="drop"`` drops and counts events when the buffer
        is full, as River does. Leaving the block unsubscribes at once.

        Raises:
            ConfigError: The client has no queues (it produces no events).
            InvalidInputError: No kinds, an unknown kind, or a bad buffer/overflow.
        """
        if not self._tree.works_queues:
            raise ConfigError(
                "subscribe: this is an insert-only client (no queues), so it works no jobs "
                "and emits no events; subscribe on a client that has queues"
            )
        return self._tree.subscriptions.subscribe(*kinds, buffer=buffer, overflow=overflow)


@asynccontextmanager
async def open_client(config: Config, *, database_url: str | None = None) -> AsyncIterator[Client]:
    """Open the database, start a client, and stop it when the block ends.

    Leaving the block normally is a soft stop (running jobs finish); leaving it
    by an exception or a cancellation is a hard stop (running jobs are
    interrupted and go back to `available`). Either way every outcome is
    persisted and delivered before this returns.

    Args:
        config: The client's configuration.
        database_url: A ``postgresql://`` URL; default ``RIVERTRIO_DATABASE_URL``,
            else the embedded Postgres.
    """
    url = await resolve_database_url(database_url)
    with collapse_single_groups():
        async with (
            open_driver(
                url,
                schema=config.schema,
                max_size=config.effective_pool_size,
                # User transactions may not take these: user code holding every
                # connection it can get must not starve the client's own fetches
                # and completions.
                reserved=config.reserved_connections,
                poll_only=config.poll_only,
            ) as driver,
            trio.open_nursery() as nursery,
        ):
            client = Client(config, driver)
            await nursery.start(client.run)
            # An exception or a cancellation here cancels the nursery, and with it
            # `run`: a hard stop, which persists every outcome before it returns.
            yield client
            await client.stop()
