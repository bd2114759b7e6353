"""Workflows: a DAG of jobs built in Python, inserted in one transaction, run in dependency order.

A task with dependencies is inserted ``pending`` (which no River client ever
fetches) and marked waiting (``rivertrio:wait``); it is released (made
``available``, or held for the flow fetch when its queue is flow-controlled)
once every dependency completed. When a dependency is discarded, cancelled
or deleted instead, the task is cancelled, or, if it was added with
``on_dependency_failure="run"``, released once every dependency finished.

Releasing happens right after a client persists the outcome of a workflow's
task, and the leader also sweeps every waiting task at an interval (a task
finished by something else: a River client, a cancellation, the rescuer).

Metadata of each task (all ``rivertrio:``): ``workflow`` (the workflow's id),
``workflow_name``, ``task`` (the task's name), ``deps`` (its dependencies'
names), ``dep_ids`` (their job ids), ``on_dependency_failure``, and ``wait``
while it waits.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ._args import InsertOpts, JobArgs, encode_args
from ._driver._topics import CONTROL_TOPIC, INSERT_TOPIC
from ._driver._workflow import (
    set_dependency_ids,
    task_outputs,
    workflow_cancel,
    workflow_list,
    workflow_retry,
    workflow_tasks,
)
from ._exceptions import InvalidInputError, NotFoundError
from ._flow import WAIT_KEY, WORKFLOW_KEY, stamp
from ._job import JobRow, JobState
from ._prepare import DEFAULT_QUEUE
from ._validate import integer

if TYPE_CHECKING:
    from ._client import Client
    from ._driver import Queryable, Tx

__all__ = [
    "WORKFLOW_KEY",
    "Workflow",
    "WorkflowInfo",
    "WorkflowSummary",
    "WorkflowTask",
    "Workflows",
]

_NAME_KEY = "rivertrio:workflow_name"
_TASK_KEY = "rivertrio:task"
_DEPS_KEY = "rivertrio:deps"
_DEP_IDS_KEY = "rivertrio:dep_ids"
_ON_FAILURE_KEY = "rivertrio:on_dependency_failure"
_MAX_NAME = 200

OnDependencyFailure = Literal["cancel", "run"]


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or "\x00" in value:
        raise InvalidInputError(
            f"{what} must be a string of 1 to {_MAX_NAME} characters, got {value!r}"
        )
    return value


def _policy(value: object) -> OnDependencyFailure:
    if value not in ("cancel", "run"):
        raise InvalidInputError(f"on_dependency_failure must be 'cancel' or 'run', not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class WorkflowTask:
    """One task of a `Workflow`, as `Workflow.add` returns it: pass it as a dependency."""

    name: str
    args: JobArgs
    opts: InsertOpts | None
    deps: tuple[str, ...]
    """The names of the tasks it waits for."""
    on_dependency_failure: OnDependencyFailure


class Workflow:
    """A DAG of jobs, built with `add` and inserted as a whole by `Workflows.insert`.

    A task may only depend on tasks added before it, so a workflow can have no
    cycle.

    Args:
        name: A name to recognise the workflow by (listing, the dashboard).
        id: Its id; default a new random one. Unique among workflows.
        on_dependency_failure: What a task does when a dependency is discarded,
            cancelled or deleted: ``"cancel"`` (it is cancelled, and so are the
            tasks waiting for it) or ``"run"`` (it runs once every dependency
            finished, whatever the outcome). A task may say otherwise.

    Raises:
        InvalidInputError: A name or id is not a string of 1 to 200 characters,
            or the policy is neither ``"cancel"`` nor ``"run"``.
    """

    def __init__(
        self,
        name: str = "workflow",
        *,
        id: str | None = None,
        on_dependency_failure: OnDependencyFailure = "cancel",
    ) -> None:
        self.name = _name("workflow name", name)
        self.id = _name("workflow id", id) if id is not None else uuid.uuid4().hex
        self.on_dependency_failure = _policy(on_dependency_failure)
        self._tasks: dict[str, WorkflowTask] = {}

    @property
    def tasks(self) -> tuple[WorkflowTask, ...]:
        """The tasks, in the order they were added."""
        return tuple(self._tasks.values())

    def add(
        self,
        name: str,
        args: JobArgs,
        opts: InsertOpts | None = None,
        *,
        deps: Sequence[str | WorkflowTask] = (),
        on_dependency_failure: OnDependencyFailure | None = None,
    ) -> WorkflowTask:
        """Add a task: a job that runs once every task in `deps` completed.

        Raises:
            InvalidInputError: The name is used already or invalid, a dependency
                was not added before, or `args`/`opts` have the wrong type.
        """
        name = _name("task name", name)
        if name in self._tasks:
            raise InvalidInputError(f"workflow {self.name!r} already has a task named {name!r}")
        if not isinstance(args, JobArgs):
            raise InvalidInputError(
                f"task {name!r}: args must be a rivertrio.JobArgs, not {type(args).__name__}"
            )
        if opts is not None and not isinstance(opts, InsertOpts):
            raise InvalidInputError(
                f"task {name!r}: opts must be a rivertrio.InsertOpts, not {type(opts).__name__}"
            )
        if isinstance(deps, str | WorkflowTask):
            deps = [deps]
        names: list[str] = []
        for dep in deps:
            dep_name = dep.name if isinstance(dep, WorkflowTask) else dep
            if dep_name not in self._tasks or (
                isinstance(dep, WorkflowTask) and self._tasks[dep_name] is not dep
            ):
                raise InvalidInputError(
                    f"task {name!r} depends on {dep_name!r}, which is not a task added to "
                    f"this workflow before it"
                )
            if dep_name not in names:
                names.append(dep_name)
        policy = (
            self.on_dependency_failure
            if on_dependency_failure is None
            else _policy(on_dependency_failure)
        )
        task = WorkflowTask(name, args, opts, tuple(names), policy)
        self._tasks[name] = task
        return task


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow's tasks as stored now."""

    id: str
    name: str
    tasks: dict[str, JobRow]
    """Each task's job row, by task name, in the order they were added."""

    @property
    def states(self) -> Counter[JobState]:
        """How many tasks are in each state."""
        return Counter(job.state for job in self.tasks.values())

    @property
    def finished(self) -> bool:
        """Whether every task is finalized (completed, discarded or cancelled)."""
        return all(job.state.finalized for job in self.tasks.values())


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One workflow in a listing."""

    id: str
    name: str
    created_at: datetime
    states: Counter[JobState]
    """How many of its tasks are in each state."""
    cursor: int
    """Pass as ``before`` to `Workflows.list` for the next (older) page."""


class Workflows:
    """Insert and manage workflows with a client: ``Workflows(client).insert(workflow)``.

    Args:
        client: The client whose database, options and flow rules are used.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _schema(self) -> str | None:
        return self._client.driver.configured_schema

    def _params(self, workflow: Workflow) -> list[tuple[JobArgs, InsertOpts]]:
        flow = self._client.config.flow
        params: list[tuple[JobArgs, InsertOpts]] = []
        for task in workflow.tasks:
            cls_opts = type(task.args).insert_opts
            opts = task.opts or InsertOpts()
            if opts.unique is not None or (cls_opts is not None and cls_opts.unique is not None):
                # A duplicate would be another workflow's job, not a task of this one.
                raise InvalidInputError(
                    f"workflow {workflow.name!r}: task {task.name!r} is a unique job; "
                    "workflow tasks cannot be"
                )
            metadata: dict[str, Any] = {
                **((cls_opts.metadata if cls_opts is not None else None) or {}),
                **(opts.metadata or {}),
                WORKFLOW_KEY: workflow.id,
                _NAME_KEY: workflow.name,
                _TASK_KEY: task.name,
                _DEPS_KEY: list(task.deps),
                _ON_FAILURE_KEY: task.on_dependency_failure,
            }
            pending = opts.pending
            if task.deps:
                metadata[WAIT_KEY] = True
                pending = True
                queue = opts.queue or (cls_opts.queue if cls_opts is not None else None)
                rules = flow.get(queue or DEFAULT_QUEUE)
                if rules is not None:
                    # Held once released, as the inserter would have held it.
                    metadata = stamp(rules, type(task.args).kind, encode_args(task.args), metadata)
            params.append(
                (task.args, dataclasses.replace(opts, metadata=metadata, pending=pending))
            )
        return params

    async def insert(self, workflow: Workflow) -> WorkflowInfo:
        """Insert a workflow's tasks, all or none, in one transaction. A checkpoint.

        Tasks without dependencies can run at once; the others wait.

        Raises:
            InvalidInputError: The workflow has no task, or a task is invalid (or
                a unique job: a duplicate would belong to another workflow).
            UnknownJobKindError: A task's kind has no worker in this client's config.
        """
        async with self._client.transaction() as tx:
            return await self.insert_tx(tx, workflow)

    async def insert_tx(self, tx: Tx, workflow: Workflow) -> WorkflowInfo:
        """`insert` inside the caller's transaction (runnable, and notified, on commit)."""
        if not isinstance(workflow, Workflow):
            raise InvalidInputError(
                f"insert takes a rivertrio.Workflow, not {type(workflow).__name__}"
            )
        if not workflow.tasks:
            raise InvalidInputError(f"workflow {workflow.name!r} has no task")
        results = await self._client.insert_many_tx(tx, self._params(workflow))
        ids = {
            task.name: result.job.id for task, result in zip(workflow.tasks, results, strict=True)
        }
        waiting = [task for task in workflow.tasks if task.deps]
        if waiting:
            await tx.run(
                set_dependency_ids,
                self._schema,
                [ids[t.name] for t in waiting],
                [json.dumps([ids[d] for d in t.deps]) for t in waiting],
            )
        return await self._get(tx, workflow.id)

    async def get(self, workflow_id: str) -> WorkflowInfo:
        """A workflow's tasks as stored now. A checkpoint.

        Raises:
            NotFoundError: No task belongs to a workflow with that id.
        """
        return await self._get(self._client.driver, workflow_id)

    async def _get(self, conn: Queryable, workflow_id: str) -> WorkflowInfo:
        workflow_id = _name("workflow id", workflow_id)
        recs = await conn.run(workflow_tasks, self._schema, workflow_id)
        if not recs:
            raise NotFoundError(f"workflow {workflow_id!r} not found")
        jobs = [JobRow.from_record(r) for r in recs]
        return WorkflowInfo(
            id=workflow_id,
            name=str(jobs[0].metadata.get(_NAME_KEY, "")),
            tasks={str(job.metadata.get(_TASK_KEY, job.id)): job for job in jobs},
        )

    async def list(self, *, limit: int = 100, before: int | None = None) -> list[WorkflowSummary]:
        """Workflows, newest first; pass the last one's ``cursor`` as `before` for more.

        A checkpoint. It reads every task of every workflow still stored: for
        a dashboard or a person, not a hot path.

        Raises:
            InvalidInputError: `limit` or `before` is out of range.
        """
        integer("limit", limit, InvalidInputError, maximum=10_000)
        integer("before", before, InvalidInputError, none="for the newest")
        recs = await self._client.driver.run(workflow_list, self._schema, limit, before)
        return [
            WorkflowSummary(
                id=r["id"],
                name=r["name"] or "",
                created_at=r["created_at"],
                states=Counter(JobState(s) for s in r["states"]),
                cursor=r["first_id"],
            )
            for r in recs
        ]

    async def cancel(self, workflow_id: str) -> builtins.list[JobRow]:
        """Cancel every unfinished task of a workflow; returns the rows changed.

        As `Client.job_cancel` does for each: a task not running is cancelled at
        once, a running one is marked and its client cancels its work. A
        checkpoint; all or nothing.

        Raises:
            NotFoundError: No task belongs to a workflow with that id.
        """
        workflow_id = _name("workflow id", workflow_id)
        driver = self._client.driver
        recs = await driver.run(
            workflow_cancel, self._schema, workflow_id, driver.channel(CONTROL_TOPIC)
        )
        if not recs:
            await self._get(driver, workflow_id)  # raises when there is no such workflow
        return [JobRow.from_record(r) for r in recs]

    async def retry(self, workflow_id: str) -> builtins.list[JobRow]:
        """Run a workflow's discarded and cancelled tasks again; returns their rows.

        A retried task with dependencies waits for them again (and runs at once
        if they completed); the others can run at once. A task out of attempts
        gets one more. A checkpoint.

        Raises:
            NotFoundError: No task belongs to a workflow with that id.
        """
        workflow_id = _name("workflow id", workflow_id)
        driver = self._client.driver
        channel = None if self._client.config.poll_only else driver.channel(INSERT_TOPIC)
        recs, _ = await driver.run(workflow_retry, self._schema, workflow_id, channel)
        if not recs:
            await self._get(driver, workflow_id)
        return [JobRow.from_record(r) for r in recs]

    async def outputs(self, job: JobRow) -> dict[str, Any]:
        """What the dependencies of a workflow task recorded (``record_output``), by task name.

        Call it from the task's worker: ``await Workflows(current_client()).outputs(job)``.
        A dependency that recorded nothing maps to None. A checkpoint.

        Raises:
            InvalidInputError: `job` is not a workflow task.
        """
        if not isinstance(job, JobRow) or WORKFLOW_KEY not in job.metadata:
            raise InvalidInputError("outputs() takes the row of a workflow task")
        dep_ids = job.metadata.get(_DEP_IDS_KEY) or []
        if not dep_ids:
            return {}
        recs = await self._client.driver.run(task_outputs, self._schema, [int(i) for i in dep_ids])
        return {r["task"]: None if r["output"] is None else json.loads(r["output"]) for r in recs}
