"""How the dashboard writes values: times, counts, JSON, charts; and the JSON API's shapes.

The HTML templates and the JSON API both take their values from here, so a
page and the data that refreshes it say the same thing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._flow import WAIT_KEY
from .._job import JobRow, JobState
from .._util import relative_time
from .._workflow import WorkflowInfo, WorkflowSummary
from ._filter import DISPLAY_STATES
from ._overview import COUNT_CAP, Overview, QueueSummary, SeenClient
from ._queries import JobPage, JobSummary, PeriodicSummary, WorkflowPage

__all__ = [
    "MAX_SHOWN_JSON",
    "TaskLine",
    "ago",
    "chart",
    "count_text",
    "finished",
    "iso",
    "job_json",
    "overview_json",
    "page_json",
    "periodic_json",
    "pretty_json",
    "stamp",
    "state_counts",
    "summary_json",
    "task_lines",
    "workflow_json",
    "workflow_page_json",
]

# A task's dependencies by task name, as `rivertrio.Workflow` stores them (see
# `rivertrio._workflow` for every key a task carries).
_DEPS_KEY = "rivertrio:deps"

#: Longest args or metadata shown on a job page; the rest is cut (the JSON API has it all).
MAX_SHOWN_JSON = 200_000


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC, or None."""
    return None if value is None else value.astimezone(UTC).isoformat()


def stamp(value: datetime | None) -> str:
    """A time as ``2026-01-02 15:04:05 UTC``, or an em dash."""
    return "\u2014" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def ago(value: datetime | None, now: datetime) -> str:
    """A time relative to `now`: ``3m ago``, ``in 2h``, ``just now``."""
    return "\u2014" if value is None else relative_time(value, now)


def count_text(queue: QueueSummary, state: str) -> str:
    """A count as shown: ``1,234``, or ``10,000+`` when it is only a lower bound."""
    n = queue.counts.get(state, 0)
    return f"{n:,}+" if state in queue.at_least else f"{n:,}"


def pretty_json(text: str | None) -> str:
    """JSON text indented for reading; text that is not JSON as it is. Cut past `MAX_SHOWN_JSON`."""
    if text is None:
        return "null"
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):
        shown = text
    if len(shown) > MAX_SHOWN_JSON:
        shown = (
            shown[:MAX_SHOWN_JSON] + f"\n\u2026 ({len(shown) - MAX_SHOWN_JSON:,} more characters)"
        )
    return shown


def state_counts(states: Counter[JobState]) -> list[tuple[str, int]]:
    """The states a workflow's tasks are in, each with how many, in display order."""
    return [(s.value, states[s]) for s in DISPLAY_STATES if states[s]]


def finished(states: Counter[JobState]) -> bool:
    """Whether every task counted is finalized."""
    return all(s.finalized for s, n in states.items() if n)


@dataclass(frozen=True, slots=True)
class TaskLine:
    """One task of a workflow, as its page and the API show it."""

    name: str
    job: JobRow
    deps: list[tuple[str, int | None]]
    """Each dependency's task name and job id (None: its job is gone)."""
    waiting: bool
    """Whether it is held until its dependencies settle."""


def task_lines(info: WorkflowInfo) -> list[TaskLine]:
    """A workflow's tasks, in the order they were added."""
    lines = []
    for name, job in info.tasks.items():
        deps = job.metadata.get(_DEPS_KEY)
        names = [str(d) for d in deps] if isinstance(deps, list) else []
        lines.append(
            TaskLine(
                name=name,
                job=job,
                deps=[(d, info.tasks[d].id if d in info.tasks else None) for d in names],
                # A task its dependencies cancelled keeps the mark (for a retry):
                # only a pending one is still waiting.
                waiting=job.state is JobState.PENDING and WAIT_KEY in job.metadata,
            )
        )
    return lines


def chart(completed: Sequence[int], discarded: Sequence[int]) -> dict[str, Any]:
    """The per-minute chart: a viewBox ``0 0 len 100``, one unit wide per minute.

    Each series is one SVG path of bars (discarded stacked on completed), so a
    page with many queues stays small; `minutes` carries each minute's figures
    for the tooltips of the large chart.
    """
    totals = [c + d for c, d in zip(completed, discarded, strict=True)]
    top = max(totals, default=0) or 1
    ok_path: list[str] = []
    bad_path: list[str] = []
    for i, (ok, bad) in enumerate(zip(completed, discarded, strict=True)):
        ok_h, bad_h = ok / top * 100, bad / top * 100
        if ok:
            ok_path.append(f"M{i + 0.12:g} {100 - ok_h - bad_h:.2f}h0.76v{ok_h:.2f}h-0.76z")
        if bad:
            bad_path.append(f"M{i + 0.12:g} {100 - bad_h:.2f}h0.76v{bad_h:.2f}h-0.76z")
    return {
        "ok_path": "".join(ok_path),
        "bad_path": "".join(bad_path),
        "minutes": [
            {"x": i, "completed": ok, "discarded": bad, "ago": len(totals) - 1 - i}
            for i, (ok, bad) in enumerate(zip(completed, discarded, strict=True))
        ],
        "width": len(totals),
        "peak": max(totals, default=0),
        "completed": sum(completed),
        "discarded": sum(discarded),
    }


# -- the JSON API -------------------------------------------------------------------------


def _queue_json(queue: QueueSummary) -> dict[str, Any]:
    return {
        "name": queue.name,
        "paused": queue.paused,
        "has_row": queue.has_row,
        "updated_at": iso(queue.updated_at),
        "counts": {s.value: queue.counts.get(s.value, 0) for s in DISPLAY_STATES},
        "counts_text": {s.value: count_text(queue, s.value) for s in DISPLAY_STATES},
        "at_least": sorted(queue.at_least),
        "per_minute": {
            "completed": queue.completed,
            "discarded": queue.discarded,
            "cancelled": queue.cancelled,
        },
    }


def _client_json(client: SeenClient) -> dict[str, Any]:
    return {
        "id": client.client_id,
        "last_seen": iso(client.last_seen),
        "running": client.running,
        "alive": client.alive,
    }


def overview_json(view: Overview) -> dict[str, Any]:
    """The overview as the API serves it."""
    leader = view.leader
    return {
        "now": iso(view.now),
        "queues": [_queue_json(q) for q in view.queues],
        "totals": _queue_json(view.totals),
        "leader": None
        if leader is None
        else {
            "id": leader.client_id,
            "elected_at": iso(leader.elected_at),
            "expires_at": iso(leader.expires_at),
        },
        "clients": [_client_json(c) for c in view.clients],
        "count_cap": COUNT_CAP,
        "counted_at": iso(view.counted_at),
    }


def _args_json(encoded: str) -> Any:
    # Args the json module cannot read (nested deeper than it recurses) are served as text.
    try:
        return json.loads(encoded)
    except (ValueError, RecursionError):
        return encoded


def summary_json(job: JobSummary) -> dict[str, Any]:
    """One job of a list as the API serves it."""
    return {
        "id": job.id,
        "state": job.state,
        "queue": job.queue,
        "kind": job.kind,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "args": _args_json(job.args),
        "tags": job.tags,
        "created_at": iso(job.created_at),
        "scheduled_at": iso(job.scheduled_at),
        "attempted_at": iso(job.attempted_at),
        "finalized_at": iso(job.finalized_at),
        "attempted_by": job.attempted_by,
        "last_error": job.last_error,
    }


def page_json(page: JobPage) -> dict[str, Any]:
    """A page of jobs as the API serves it."""
    return {"jobs": [summary_json(j) for j in page.jobs], "next_before": page.next_before}


def job_json(row: JobRow) -> dict[str, Any]:
    """A whole job as the API serves it."""
    return {
        "id": row.id,
        "state": row.state.value,
        "queue": row.queue,
        "kind": row.kind,
        "priority": row.priority,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "args": _args_json(row.encoded_args),
        "metadata": row.metadata,
        "tags": row.tags,
        "created_at": iso(row.created_at),
        "scheduled_at": iso(row.scheduled_at),
        "attempted_at": iso(row.attempted_at),
        "finalized_at": iso(row.finalized_at),
        "attempted_by": row.attempted_by,
        "errors": [
            {"at": iso(e.at), "attempt": e.attempt, "error": e.error, "trace": e.trace}
            for e in row.errors
        ],
    }


def periodic_json(items: Sequence[PeriodicSummary]) -> dict[str, Any]:
    """The periodic schedules as the API serves them."""
    return {
        "periodic": [
            {
                "kind": p.kind,
                "queue": p.queue,
                "periodic_id": p.periodic_id,
                "total": p.total,
                "discarded": p.discarded,
                "last_created": iso(p.last_created),
                "next_at": iso(p.next_at),
                "last_id": p.last_id,
                "last_state": p.last_state,
                "last_finalized_at": iso(p.last_finalized_at),
            }
            for p in items
        ]
    }


def _states_json(states: Counter[JobState]) -> dict[str, int]:
    return {s.value: states[s] for s in DISPLAY_STATES}


def workflow_page_json(page: WorkflowPage) -> dict[str, Any]:
    """A page of workflows as the API serves it."""
    return {
        "workflows": [_workflow_summary_json(w) for w in page.workflows],
        "next_before": page.next_before,
    }


def _workflow_summary_json(workflow: WorkflowSummary) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "name": workflow.name,
        "created_at": iso(workflow.created_at),
        "tasks": workflow.states.total(),
        "states": _states_json(workflow.states),
        "finished": finished(workflow.states),
        "cursor": workflow.cursor,
    }


def workflow_json(info: WorkflowInfo) -> dict[str, Any]:
    """A workflow with its tasks as the API serves it (``/api/jobs/ID`` has a task's all)."""
    return {
        "id": info.id,
        "name": info.name,
        "states": _states_json(info.states),
        "finished": info.finished,
        "tasks": [
            {
                "name": line.name,
                "job_id": line.job.id,
                "kind": line.job.kind,
                "queue": line.job.queue,
                "state": line.job.state.value,
                "attempt": line.job.attempt,
                "max_attempts": line.job.max_attempts,
                "deps": [{"task": name, "job_id": job_id} for name, job_id in line.deps],
                "waiting": line.waiting,
                "created_at": iso(line.job.created_at),
                "finalized_at": iso(line.job.finalized_at),
            }
            for line in task_lines(info)
        ],
    }
