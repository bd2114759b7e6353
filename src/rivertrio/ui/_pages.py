"""The HTML pages, and the forms they post: rendered with Jinja2, everything escaped."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .. import __version__
from .._exceptions import InvalidInputError
from .._job import AttemptError, JobRow, JobState
from .._workflow import WORKFLOW_KEY, Workflows
from . import _actions, _format, _overview, _queries
from ._filter import DISPLAY_STATES, Filter
from ._http import (
    identity,
    int_param,
    job_id,
    jobs_url,
    read_filter,
    read_form,
    root,
    route_path,
    workflow_id,
    workflow_url,
)
from ._overview import COUNT_CAP
from ._security import SESSION_COOKIE, safe_next
from ._state import dashboard

__all__ = [
    "bulk_action",
    "bulk_confirm_page",
    "error_page",
    "job_action",
    "job_page",
    "jobs_page",
    "login",
    "login_page",
    "logout",
    "overview_page",
    "periodic_page",
    "queue_action",
    "static_asset",
    "workflow_action",
    "workflow_page",
    "workflows_page",
]

log = logging.getLogger("rivertrio.ui")

# The messages an action's redirect may ask a page to show: a fixed list, so a
# crafted link can make the page say nothing it would not say by itself.
_NOTICES = {
    "retried": "Job made available to run again.",
    "cancelled": "Job cancelled (a running job is told to stop).",
    "deleted": "Job deleted.",
    "paused": "Queue paused: no client fetches its jobs until it is resumed.",
    "resumed": "Queue resumed.",
    "bulk-retried": "{n} job(s) made available to run again.",
    "bulk-deleted": "{n} job(s) deleted.",
    "workflow-retried": "{n} task(s) made to run again (a task with dependencies waits for them).",
    "workflow-cancelled": "{n} task(s) cancelled (a running task is told to stop).",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("rivertrio.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["stamp"] = _format.stamp
_templates.filters["iso"] = _format.iso
_templates.filters["pretty_json"] = _format.pretty_json
_templates.globals["count_text"] = _format.count_text
_templates.globals["state_counts"] = _format.state_counts
_templates.globals["finished"] = _format.finished
_templates.globals["chart_bars"] = _format.chart
_templates.globals["cap"] = COUNT_CAP
_templates.globals["DISPLAY_STATES"] = [s.value for s in DISPLAY_STATES]


def _render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    state = dashboard(request)
    prefix = root(request)
    notice = _NOTICES.get(request.query_params.get("done", ""))
    if notice is not None:
        n = request.query_params.get("n", "")
        notice = notice.format(n=f"{int(n):,}" if n.isdigit() and len(n) < 12 else "Some")
    now: datetime = context.pop("now", None) or datetime.now().astimezone()
    context.setdefault("nav", "")
    client = state.client
    html = _templates.get_template(template).render(
        root=prefix,
        asset=lambda name: prefix + state.assets[name].path,
        csrf=state.auth.csrf_token(identity(request)),
        read_only=state.read_only,
        signed_in=state.auth.token is not None and identity(request) == "token",
        refresh_ms=int(state.refresh_seconds * 1000),
        schema=client.driver.schema if client is not None else "",
        where=client.driver.where if client is not None else "",
        version=__version__,
        notice=notice,
        jobs_url=lambda filter=None, **extra: jobs_url(prefix, filter, **extra),
        workflow_url=lambda workflow_id: workflow_url(prefix, workflow_id),
        ago=lambda value: _format.ago(value, now),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a page (as JSON under ``/api/``)."""
    if route_path(request).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    try:
        return _render(request, "error.html", status_code=status, status=status, message=message)
    except Exception:  # never fail to report a failure
        log.exception("rivertrio ui: rendering the error page failed")
        return Response(message, status_code=status, media_type="text/plain")


async def _now(request: Request) -> datetime:
    now: datetime = await dashboard(request).require_client().driver.fetchval("SELECT now()")
    return now


# -- pages --------------------------------------------------------------------------------


async def overview_page(request: Request) -> Response:
    view = await dashboard(request).overview()
    return _render(request, "overview.html", view=view, now=view.now, nav="overview")


async def jobs_page(request: Request) -> Response:
    state = dashboard(request)
    client = state.require_client()
    try:
        filter = read_filter(request.query_params)
        before = int_param(request.query_params.get("before"), "before")
        problem = None
    except InvalidInputError as exc:
        filter, before, problem = Filter(), None, str(exc)
    page = await _queries.job_page(client, filter, before=before)
    # The state tabs show counts when they count what is listed: no filter
    # but the state, or one queue.
    queues, totals = await _overview.state_counts(client, state.exact)
    counts = None
    if not filter.kinds and filter.args is None and len(filter.queues) <= 1:
        counts = totals
        if filter.queues:
            counts = queues.get(filter.queues[0], _overview.QueueSummary(filter.queues[0]))
    return _render(
        request,
        "jobs.html",
        status_code=400 if problem else 200,
        nav="jobs",
        now=await _now(request),
        filter=filter,
        raw_q=request.query_params.get("q", ""),
        problem=problem,
        page=page,
        before=before,
        counts=counts,
        queue_names=sorted(queues),
        kinds=await _queries.known_kinds(client),
        api_url=jobs_url("/api", filter, before=before),
    )


@dataclass(frozen=True, slots=True)
class _Attempt:
    number: int
    worker: str | None
    error: AttemptError | None
    outcome: str | None


def _attempts(row: JobRow) -> list[_Attempt]:
    """The job's attempts, newest first: who worked each, and how it failed.

    ``attempted_by`` gains the worker's id at every attempt (River keeps the
    last 100), so its last entry is the latest attempt's.
    """
    by = row.attempted_by
    errors = {e.attempt: e for e in row.errors}
    attempts = []
    for number in range(row.attempt, 0, -1):
        index = len(by) - 1 - (row.attempt - number)
        error = errors.pop(number, None)
        outcome = None
        if error is None and number == row.attempt:
            outcome = {
                JobState.RUNNING: "running now",
                JobState.COMPLETED: "completed",
                JobState.CANCELLED: "cancelled",
            }.get(row.state)
        attempts.append(_Attempt(number, by[index] if index >= 0 else None, error, outcome))
    # Errors no attempt number accounts for (rows written by other tools).
    attempts += [_Attempt(e.attempt, None, e, None) for e in errors.values()]
    return attempts


async def job_page(request: Request) -> Response:
    row = await dashboard(request).require_client().job_get(job_id(request))
    metadata = json.dumps(row.metadata, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    workflow = row.metadata.get(WORKFLOW_KEY)
    return _render(
        request,
        "job.html",
        nav="jobs",
        now=await _now(request),
        job=row,
        attempts=_attempts(row),
        metadata_json=_format.pretty_json(metadata),
        workflow=workflow if isinstance(workflow, str) else None,
        can_retry=row.state not in (JobState.RUNNING, JobState.AVAILABLE),
        can_cancel=not row.state.finalized,
        can_delete=row.state is not JobState.RUNNING,
    )


async def periodic_page(request: Request) -> Response:
    items = await _queries.periodic_jobs(dashboard(request).require_client())
    now = await _now(request)
    return _render(request, "periodic.html", nav="periodic", now=now, items=items)


async def workflows_page(request: Request) -> Response:
    before = int_param(request.query_params.get("before"), "before", "a workflow cursor")
    page = await _queries.workflow_list(dashboard(request).require_client(), before=before)
    now = await _now(request)
    return _render(request, "workflows.html", nav="workflows", now=now, page=page, before=before)


async def workflow_page(request: Request) -> Response:
    info = await Workflows(dashboard(request).require_client()).get(workflow_id(request))
    return _render(
        request,
        "workflow.html",
        nav="workflows",
        now=await _now(request),
        workflow=info,
        tasks=_format.task_lines(info),
        can_retry=bool(info.states[JobState.DISCARDED] or info.states[JobState.CANCELLED]),
        can_cancel=not info.finished,
    )


def _bulk_action_name(value: str | None) -> Literal["retry", "delete"]:
    if value == "retry":
        return "retry"
    if value == "delete":
        return "delete"
    raise InvalidInputError(f"action must be retry or delete, not {value!r}")


async def bulk_confirm_page(request: Request) -> Response:
    state = dashboard(request)
    action = _bulk_action_name(request.query_params.get("action"))
    if state.read_only:
        return error_page(request, 403, "the dashboard is read-only: actions are turned off")
    filter = read_filter(request.query_params)
    count, up_to = await _queries.count_matching(state.require_client(), filter, _actions.BULK_CAP)
    return _render(
        request,
        "bulk.html",
        nav="jobs",
        action=action,
        filter=filter,
        count=count,
        up_to=up_to,
        bulk_cap=_actions.BULK_CAP,
    )


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"), root(request) + "/")
    if dashboard(request).auth.token is None:
        return RedirectResponse(target, status_code=303)
    return _render(request, "login.html", target=target, failed=False)


async def static_asset(request: Request) -> Response:
    asset = dashboard(request).assets.get(request.path_params["name"])
    if asset is None or asset.version != request.path_params["version"]:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        asset.body,
        media_type=asset.content_type,
        headers={"cache-control": "public, max-age=31536000, immutable"},
    )


# -- forms --------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    auth = dashboard(request).auth
    form = await read_form(request)
    target = safe_next(form.get("next"), root(request) + "/")
    if auth.token is None:
        return RedirectResponse(target, status_code=303)
    if not auth.check_token(form.get("token") or ""):
        return _render(request, "login.html", status_code=401, target=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    response.set_cookie(
        SESSION_COOKIE,
        auth.session_value(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or forwarded == "https",
        path=root(request) + "/",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(root(request) + "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=root(request) + "/")
    return response


async def job_action(request: Request, action: Literal["retry", "cancel", "delete"]) -> Response:
    client = dashboard(request).require_client()
    row = await _actions.job_action(client, action, job_id(request))
    prefix = root(request)
    if action == "delete":
        return RedirectResponse(f"{prefix}/jobs?done=deleted", status_code=303)
    done = "retried" if action == "retry" else "cancelled"
    return RedirectResponse(f"{prefix}/jobs/{row.id}?done={done}", status_code=303)


async def workflow_action(request: Request, action: Literal["retry", "cancel"]) -> Response:
    client = dashboard(request).require_client()
    workflow = workflow_id(request)
    rows = await _actions.workflow_action(client, action, workflow)
    done = "workflow-retried" if action == "retry" else "workflow-cancelled"
    target = f"{workflow_url(root(request), workflow)}?done={done}&n={len(rows)}"
    return RedirectResponse(target, status_code=303)


async def bulk_action(request: Request) -> Response:
    client = dashboard(request).require_client()
    form = await read_form(request)
    action = _bulk_action_name(form.get("action"))
    filter = read_filter(form)
    up_to = int_param(form.get("up_to"), "up_to")
    if up_to is None:
        return RedirectResponse(jobs_url(root(request), filter), status_code=303)
    _, done = await _actions.bulk(client, action, filter, up_to)
    key = "bulk-retried" if action == "retry" else "bulk-deleted"
    return RedirectResponse(jobs_url(root(request), filter, done=key, n=done), status_code=303)


async def queue_action(request: Request, action: Literal["pause", "resume"]) -> Response:
    client = dashboard(request).require_client()
    name = (await read_form(request)).get("queue") or ""
    if action == "pause":
        await client.queue_pause(name)
    else:
        await client.queue_resume(name)
    done = "paused" if action == "pause" else "resumed"
    return RedirectResponse(f"{root(request)}/?done={done}", status_code=303)
