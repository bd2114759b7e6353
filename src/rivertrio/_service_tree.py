"""The service tree a client runs: completion, notifications, liveness, producers, leadership.

`Client.run` runs one `ServiceTree`, and the client's methods reach the running
producers through it (wake them, pause them, cancel one job, add or remove a
queue). An insert-only client's tree runs only the completion pipeline.

Start order: the completer (it must take outcomes before any job can end), the
subscription manager, the notifier, the liveness lock (before any fetch: no
job may run under the client's id without it), the producers, the maintainer
and the elector. A stop ends them the other way round: fetching stops, running
jobs finish (soft) or are cancelled (hard, or the enclosing scope cancelled),
each producer closes its clone of the completer's input once its last job is
done, and the completer, shielded, persists what it still holds and ends when
every clone is closed. The liveness lock is released only after that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ._completer import Completer
from ._driver._flow_migrations import FLOW_LINE, missing_flow_objects
from ._driver._topics import CONTROL_TOPIC, INSERT_TOPIC, LEADERSHIP_TOPIC
from ._driver._workflow import release_tasks
from ._elector import Elector
from ._exceptions import (
    DatabaseError,
    MigrationError,
    QueueAlreadyAddedError,
    QueueNotFoundError,
)
from ._executor import WorkConfig
from ._flow import FLOW_KEY, WORKFLOW_KEY, fetch_rules
from ._liveness import Liveness, is_marked
from ._maintenance import Maintainer
from ._middleware import Extensions
from ._notifier import Notifier
from ._producer import Producer, ProducerConfig
from ._service import Service, stop_all
from ._subscriptions import SubscriptionManager

if TYPE_CHECKING:
    from ._config import Config, QueueConfig
    from ._driver import Driver
    from ._events import Outcome, QueueEvent
    from ._insert import Inserter
    from ._maintenance import PeriodicJobs

__all__ = ["ServiceTree"]

log = logging.getLogger("rivertrio.workflow")

# Releasing a workflow's waiting tasks is a few statements; past this, the
# leader's sweep does it.
_RELEASE_TIMEOUT = 10.0


class ServiceTree(Service):
    """Every service of one client, started and stopped together; see the module docstring.

    Args:
        config: The client's configuration.
        driver: The client's database.
        inserter: The client's inserter, which the periodic enqueuer uses.
        periodic_jobs: The client's periodic jobs registry.
        enter_job: Called in each job's task before its work (binds ``current_client()``).
    """

    def __init__(
        self,
        config: Config,
        driver: Driver,
        *,
        inserter: Inserter,
        periodic_jobs: PeriodicJobs,
        enter_job: Callable[[], object],
    ) -> None:
        super().__init__()
        self._config = config
        self._driver = driver
        self._inserter = inserter
        self._work = WorkConfig(
            workers=config.workers,
            job_timeout=config.job_timeout,
            retry_policy=config.retry_policy,
            error_handler=config.error_handler,
            enter_job=enter_job,
            extensions=Extensions(config.middleware, config.hooks),
            driver=driver,
        )
        # Every queue the client works, at this run and the next ones.
        self._queues = {name: self._producer_config(config, name) for name in config.queues}
        self.producers: dict[str, Producer] = {}
        """The producers of the current run (and of the last one, once stopped), by queue."""
        self.completer = Completer(driver)
        self.completer.on_flow_persisted = self._on_flow_persisted
        self.subscriptions = SubscriptionManager()
        self.notifier: Notifier | None = None
        """This run's LISTEN connection: None without queues, or with ``poll_only``."""
        # Fast rescue: a client whose id carries the marker holds a liveness lock
        # while it may have jobs running (see _liveness).
        self.liveness: Liveness | None = None
        if is_marked(config.id) and not config.poll_only:
            self.liveness = Liveness(driver, config.id)
            self.liveness.on_lost(self._on_liveness_lost)
            self.liveness.on_regained(self._on_liveness_regained)
        self.elector = Elector(driver, config.id, liveness_lock=self.liveness is not None)
        self.maintainer = Maintainer.for_config(
            driver,
            config,
            self.elector,
            inserter=inserter,
            periodic_jobs=periodic_jobs,
            on_available=self.wake,
        )
        self._nursery: trio.Nursery | None = None
        self._outcomes: trio.MemorySendChannel[Outcome | QueueEvent] | None = None

    def _producer_config(self, config: Config, queue: str) -> ProducerConfig:
        return ProducerConfig(
            driver=self._driver,
            client_id=self._config.id,
            queue=queue,
            max_workers=config.queues[queue].max_workers,
            fetch_cooldown=config.queue_fetch_cooldown(queue),
            fetch_poll_interval=config.queue_fetch_poll_interval(queue),
            work=self._work,
            flow=None if queue not in config.flow else fetch_rules(config.flow[queue]),
        )

    @property
    def works_queues(self) -> bool:
        """Whether the client has queues (it works jobs and emits events)."""
        return bool(self._queues)

    # -- the run --

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            # The completion pipeline starts first and ends last: it runs
            # shielded and ends only when every outcome channel is closed.
            await nursery.start(self.completer.run)
            outcomes = self.completer.input
            # Decided once: queues removed during the run do not change what to release.
            works = bool(self._queues)
            # Insert notifications the debounce held back: sent while the client runs.
            owed = trio.CancelScope()
            try:
                self.subscriptions.attach(self.completer.output)
                await nursery.start(self.subscriptions.run)
                if not self._config.poll_only:
                    await nursery.start(self._send_owed, owed)
                if works:
                    await self._start_workers(nursery, outcomes)
                task_status.started()
                await self._stop_event.wait()
                self._stop_maintenance()
                if self._config.soft_stop_timeout is not None:
                    deadline = trio.current_time() + self._config.soft_stop_timeout
                    for producer in self.producers.values():
                        producer.set_work_deadline(deadline)
                await stop_all(*self.producers.values())
            finally:
                owed.cancel()
                self._nursery = None
                self._outcomes = None
                # On an error or a cancellation the producers must not wait for
                # their jobs: interrupt them (their outcomes still flow).
                for producer in self.producers.values():
                    if not producer.stopped:
                        producer.cancel_work()
                self._stop_maintenance()
                if self.notifier is not None:
                    self.notifier.stop()
                # Closing our handle lets the completer end once every producer
                # has closed its clone; it flushes, then closes its output.
                outcomes.close()
                if works and self.liveness is not None:
                    nursery.start_soon(self._release_liveness, self.liveness)

    async def _send_owed(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            await self._inserter.send_owed(task_status=task_status)

    async def _start_workers(
        self, nursery: trio.Nursery, outcomes: trio.MemorySendChannel[Outcome | QueueEvent]
    ) -> None:
        """Start the notifier, the liveness lock, the producers and leadership."""
        await self._check_flow_schema(self._queues.values())
        if not self._config.poll_only:
            self.notifier = Notifier(self._driver)
            self.notifier.subscribe(INSERT_TOPIC, self._on_insert_notification)
            self.notifier.subscribe(CONTROL_TOPIC, self._on_control_notification)
            self.notifier.on_reconnect(self._on_reconnect)
            self.notifier.subscribe(LEADERSHIP_TOPIC, self.elector.handle_notification)
            await nursery.start(self.notifier.run)
        if self.liveness is not None:
            # Before any fetch: no job may run under this id without the lock.
            await nursery.start(self._hold_liveness, self.liveness)
        self.producers = {}
        for producer_config in self._queues.values():
            await self._start_producer(nursery, outcomes, producer_config)
        self._nursery = nursery
        self._outcomes = outcomes
        await nursery.start(self.maintainer.run)
        await nursery.start(self.elector.run)

    async def _check_flow_schema(self, queues: Iterable[ProducerConfig]) -> None:
        """Refuse to work flow-controlled queues on a schema without the flow line.

        Without its objects every fetch of a rate-limited queue fails (the table
        of starts is missing), and the others scan ``river_job``: a clear error
        at the start beats a warning at every fetch.

        Raises:
            MigrationError: A queue is flow-controlled and the schema lacks the
                ``rivertrio_flow`` line's objects.
        """
        flow_queues = sorted(q.queue for q in queues if q.flow is not None)
        if not flow_queues:
            return
        schema, missing = await self._driver.run(
            missing_flow_objects, self._driver.configured_schema
        )
        if missing:
            named = ", ".join(map(repr, flow_queues))
            which = f"queues {named} are" if len(flow_queues) > 1 else f"queue {named} is"
            raise MigrationError(
                f"{which} flow-controlled (Config.flow), which needs the {FLOW_LINE} "
                f"migration line; schema {schema!r} lacks "
                f"{', '.join(missing)}: run `rivertrio migrate up` (or rivertrio.migrate()) "
                "to install it"
            )

    async def _start_producer(
        self,
        nursery: trio.Nursery,
        outcomes: trio.MemorySendChannel[Outcome | QueueEvent],
        producer_config: ProducerConfig,
    ) -> None:
        producer = Producer(producer_config)
        producer.attach(outcomes.clone())
        self.producers[producer_config.queue] = producer
        await nursery.start(producer.run)

    def cancel_work(self) -> None:
        """Cancel every running job now and stop (a hard stop); not a checkpoint."""
        for producer in self.producers.values():
            producer.cancel_work()
        self.stop()

    def _stop_maintenance(self) -> None:
        # Idempotent: the leader resigns (deleting its term) as the client stops.
        self.maintainer.stop()
        self.elector.stop()

    async def _hold_liveness(
        self, liveness: Liveness, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Shielded like the completer: the lock must outlive a cancelled scope
        # until every outcome is persisted, or the leader could rescue jobs that
        # are still `running` in the database. `_release_liveness` ends it.
        with trio.CancelScope(shield=True):
            await liveness.run(task_status=task_status)

    async def _release_liveness(self, liveness: Liveness) -> None:
        with trio.CancelScope(shield=True):
            await self.completer.wait_stopped()
        liveness.stop()

    def _on_liveness_lost(self) -> None:
        # The leader may now rescue our running jobs: take no more under this id.
        for producer in self.producers.values():
            producer.suspend_fetching(True)

    def _on_liveness_regained(self) -> None:
        for producer in self.producers.values():
            producer.suspend_fetching(False)

    # -- queues --

    async def add_queue(self, name: str, queue_config: QueueConfig) -> None:
        """Work a new queue now, or from the next run when not running. A checkpoint.

        Raises:
            QueueAlreadyAddedError: The client already works that queue.
            ConfigError: The name or the queue config is invalid, by the same rules
                as a queue of the client's config (its fetch settings fall back to
                the client's).
            MigrationError: The queue is flow-controlled and the schema lacks the
                ``rivertrio_flow`` migration line (checked when running).
        """
        if name in self._queues:
            raise QueueAlreadyAddedError(f"queue {name!r} is already added to this client")
        checked = dataclasses.replace(self._config, queues={name: queue_config})
        producer_config = self._producer_config(checked, name)
        if self._nursery is None or self._outcomes is None:
            self._queues[name] = producer_config
            await trio.lowlevel.checkpoint()
            return
        await self._check_flow_schema([producer_config])
        self._queues[name] = producer_config
        await self._start_producer(self._nursery, self._outcomes, producer_config)

    async def remove_queue(self, name: str) -> None:
        """Stop working a queue; waits for its running jobs to finish. A checkpoint.

        Raises:
            QueueNotFoundError: The client does not work that queue.
        """
        if name not in self._queues:
            raise QueueNotFoundError(f"queue {name!r} is not worked by this client")
        del self._queues[name]
        producer = self.producers.pop(name, None)
        if producer is None:
            await trio.lowlevel.checkpoint()
            return
        producer.stop()
        await producer.wait_stopped()

    # -- reaching the producers (synchronous, never blocks) --

    def wake(self, queues: frozenset[str]) -> None:
        """Jobs became available in `queues`: their producers fetch soon."""
        for queue in queues:
            producer = self.producers.get(queue)
            if producer is not None:
                producer.wake()

    def cancel_job(self, queue: str, job_id: int) -> None:
        """Cancel a job if this client's producer of `queue` is running it."""
        producer = self.producers.get(queue)
        if producer is not None:
            producer.cancel_job(job_id)

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from `queue` (``"*"``: every queue) here."""
        targets = (
            list(self.producers.values())
            if queue == "*"
            else [p for n, p in self.producers.items() if n == queue]
        )
        for producer in targets:
            producer.set_paused(paused)

    def _on_flow_persisted(self, outcomes: list[Outcome]) -> None:
        # A held job's end makes room under its queue's limits, or lets its
        # sequence go on: wake that queue's producer. A workflow task's end may
        # settle the tasks that wait for it: release them now (the leader's
        # sweep would, later).
        held: dict[str, list[int]] = {}
        for o in outcomes:
            if FLOW_KEY in o.job.metadata:
                held.setdefault(o.job.queue, []).append(o.job.id)
        for queue, ids in held.items():
            producer = self.producers.get(queue)
            if producer is not None:
                producer.persisted(ids)
                producer.wake()
        workflows = {
            str(o.job.metadata[WORKFLOW_KEY]) for o in outcomes if WORKFLOW_KEY in o.job.metadata
        }
        if workflows and self._nursery is not None:
            self._nursery.start_soon(self._release_workflows, workflows)

    async def _release_workflows(self, workflow_ids: set[str]) -> None:
        try:
            with trio.move_on_after(_RELEASE_TIMEOUT):
                channel = None if self._config.poll_only else self._driver.channel(INSERT_TOPIC)
                released = await self._driver.run(
                    release_tasks, self._driver.configured_schema, sorted(workflow_ids), channel
                )
                self.wake(frozenset(released.queues))
        except DatabaseError as exc:
            log.warning(
                "releasing the tasks of workflows %s failed (the leader's sweep will): %s",
                sorted(workflow_ids),
                exc,
            )

    def _on_reconnect(self) -> None:
        # Notifications sent while the LISTEN connection was down are lost: fetch,
        # and re-read pause state and cancellations, at once.
        for producer in self.producers.values():
            producer.wake()
            producer.request_refresh()

    def _on_insert_notification(self, payload: dict[str, Any]) -> None:
        self.wake(frozenset({str(payload.get("queue"))}))

    def _on_control_notification(self, payload: dict[str, Any]) -> None:
        action = payload.get("action")
        queue = payload.get("queue")
        if action in ("pause", "resume"):
            self.set_paused(str(queue), action == "pause")
        elif action == "cancel":
            job_id = payload.get("job_id")
            if isinstance(job_id, int):
                self.cancel_job(str(queue), job_id)
