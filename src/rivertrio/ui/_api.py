"""The JSON API under ``/api/``: what the pages show, and the same actions, for scripts."""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._exceptions import InvalidInputError
from .._workflow import Workflows
from . import _actions, _format, _queries
from ._http import identity, int_param, job_id, read_filter, read_form, workflow_id
from ._state import dashboard

__all__ = [
    "bulk_action",
    "csrf",
    "job",
    "job_action",
    "jobs",
    "overview",
    "periodic",
    "queue_action",
    "workflow",
    "workflow_action",
    "workflows",
]

_MAX_LIMIT = 500


async def overview(request: Request) -> Response:
    return JSONResponse(_format.overview_json(await dashboard(request).overview()))


def _limit(request: Request) -> int:
    limit = int_param(request.query_params.get("limit"), "limit", f"from 1 to {_MAX_LIMIT}")
    if limit is not None and limit > _MAX_LIMIT:
        raise InvalidInputError(f"limit: {limit} is not from 1 to {_MAX_LIMIT}")
    return limit or _queries.PAGE_SIZE


async def jobs(request: Request) -> Response:
    client = dashboard(request).require_client()
    filter = read_filter(request.query_params)
    before = int_param(request.query_params.get("before"), "before")
    page = await _queries.job_page(client, filter, before=before, limit=_limit(request))
    return JSONResponse(_format.page_json(page))


async def job(request: Request) -> Response:
    row = await dashboard(request).require_client().job_get(job_id(request))
    return JSONResponse({"job": _format.job_json(row)})


async def periodic(request: Request) -> Response:
    items = await _queries.periodic_jobs(dashboard(request).require_client())
    return JSONResponse(_format.periodic_json(items))


async def workflows(request: Request) -> Response:
    client = dashboard(request).require_client()
    before = int_param(request.query_params.get("before"), "before", "a workflow cursor")
    page = await _queries.workflow_list(client, before=before, limit=_limit(request))
    return JSONResponse(_format.workflow_page_json(page))


async def workflow(request: Request) -> Response:
    info = await Workflows(dashboard(request).require_client()).get(workflow_id(request))
    return JSONResponse({"workflow": _format.workflow_json(info)})


async def csrf(request: Request) -> Response:
    return JSONResponse({"csrf_token": dashboard(request).auth.csrf_token(identity(request))})


async def job_action(request: Request, action: Literal["retry", "cancel", "delete"]) -> Response:
    client = dashboard(request).require_client()
    row = await _actions.job_action(client, action, job_id(request))
    return JSONResponse({"job": _format.job_json(row)})


async def workflow_action(request: Request, action: Literal["retry", "cancel"]) -> Response:
    client = dashboard(request).require_client()
    rows = await _actions.workflow_action(client, action, workflow_id(request))
    return JSONResponse({"jobs": [_format.job_json(row) for row in rows]})


async def bulk_action(request: Request, action: Literal["retry", "delete"]) -> Response:
    client = dashboard(request).require_client()
    form = await read_form(request, with_query=True)
    filter = read_filter(form)
    if filter.empty:
        raise InvalidInputError(
            f"{action}-matching needs a filter (state, kind, queue or q); "
            "it does not act on every job"
        )
    up_to = int_param(form.get("up_to"), "up_to")
    if up_to is None:
        _, up_to = await _queries.count_matching(client, filter, 0)
    matched, done = (0, 0) if up_to is None else await _actions.bulk(client, action, filter, up_to)
    verb = "retried" if action == "retry" else "deleted"
    return JSONResponse({"matched": matched, verb: done, "up_to": up_to})


async def queue_action(request: Request, action: Literal["pause", "resume"]) -> Response:
    client = dashboard(request).require_client()
    name = (await read_form(request, with_query=True)).get("queue") or ""
    if action == "pause":
        await client.queue_pause(name)
    else:
        await client.queue_resume(name)
    if name == "*":
        return JSONResponse({"queue": None})
    queue = await client.queue_get(name)
    return JSONResponse({"queue": {"name": queue.name, "paused": queue.paused}})
