"""Helpers for the dashboard's tests: the app on a test's schema, and rows in any state.

Rows are written with SQL: a test needs jobs in every state (and hostile ones
no client would write) without running workers to get them there. Workflows
are inserted through `rivertrio.Workflows`, which alone knows how their tasks
record their dependencies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

import rivertrio
from rivertrio._driver import Driver
from rivertrio.ui import create_app

#: The address the in-process client pretends to reach (its Host header).
HOST = "127.0.0.1:8765"
BASE = f"http://{HOST}"

_FINALIZED = ("completed", "cancelled", "discarded")


@asynccontextmanager
async def dashboard(
    database_url: str, schema: str, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard app on `schema` (its lifespan run), and an HTTP client talking to it."""
    app = create_app(database_url=database_url, schema=schema, **settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield http


async def csrf_token(http: httpx.AsyncClient, **headers: str) -> str:
    """The CSRF token the dashboard gives this client."""
    response = await http.get("/api/csrf", headers=headers)
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


async def post(
    http: httpx.AsyncClient,
    path: str,
    data: dict[str, Any] | list[tuple[str, str]] | None = None,
    *,
    csrf: str | None,
    origin: str | None = BASE,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a form as the dashboard's own page would (its Origin, its CSRF token field)."""
    fields: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            values = value if isinstance(value, list) else [value]
            fields += [(key, str(v)) for v in values]
    elif data is not None:
        fields = list(data)
    if csrf is not None:
        fields.append(("csrf_token", csrf))
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    if origin is not None:
        sent["Origin"] = origin
    return await http.post(path, content=urlencode(fields), headers=sent)


async def put_job(
    driver: Driver,
    *,
    state: str = "available",
    kind: str = "task",
    queue: str = "default",
    args: Any = None,
    metadata: dict[str, Any] | None = None,
    errors: Sequence[dict[str, Any]] = (),
    attempted_by: Sequence[str] | None = None,
    tags: Sequence[str] = (),
    attempt: int | None = None,
    finalized_at: datetime | None = None,
) -> int:
    """Write one job row as it would be in `state`; its id."""
    if attempt is None:
        attempt = 0 if state in ("available", "scheduled", "pending") else max(1, len(errors))
    if attempted_by is None:
        attempted_by = [f"worker-{n}" for n in range(1, attempt + 1)]
    finalized = finalized_at or (datetime.now(UTC) if state in _FINALIZED else None)
    job_id: int = await driver.fetchval(
        """
        INSERT INTO /*schema*/river_job (state, attempt, max_attempts, attempted_at,
            attempted_by, errors, finalized_at, scheduled_at, kind, queue, args, metadata, tags)
        VALUES ($1::text::/*schema*/river_job_state, $2::smallint, 25,
            CASE WHEN $2::smallint > 0 THEN now() END, $3, $4::jsonb[], $5,
            CASE WHEN $1::text = 'scheduled' THEN now() + interval '1 hour' ELSE now() END,
            $6, $7, $8::jsonb, $9::jsonb, $10)
        RETURNING id
        """,
        state,
        attempt,
        list(attempted_by) or None,
        [json.dumps(e) for e in errors] or None,
        finalized,
        kind,
        queue,
        json.dumps({"n": 1} if args is None else args),
        json.dumps(metadata or {}),
        list(tags),
    )
    return job_id


@dataclass
class Step(rivertrio.JobArgs, kind="ui_step"):
    label: str = ""


def diamond(name: str = "nightly", **kwargs: Any) -> rivertrio.Workflow:
    """extract, then clean and enrich (each waiting for it), then load (waiting for both)."""
    workflow = rivertrio.Workflow(name, **kwargs)
    extract = workflow.add("extract", Step("extract"))
    clean = workflow.add("clean", Step("clean"), deps=[extract])
    enrich = workflow.add("enrich", Step("enrich"), deps=[extract])
    workflow.add("load", Step("load"), deps=[clean, enrich])
    return workflow


async def put_workflows(
    database_url: str, schema: str, workflows: Sequence[rivertrio.Workflow]
) -> list[rivertrio.WorkflowInfo]:
    """Insert `workflows`, oldest first, as an application would: through `rivertrio.Workflows`."""
    config = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        return [await rivertrio.Workflows(client).insert(w) for w in workflows]


async def put_queue(driver: Driver, name: str, *, paused: bool = False) -> None:
    """Write a ``river_queue`` row, as a producer working `name` would."""
    await driver.execute(
        "INSERT INTO /*schema*/river_queue (name, created_at, updated_at, paused_at) "
        "VALUES ($1, now(), now(), CASE WHEN $2 THEN now() END)",
        name,
        paused,
    )


async def job_state(driver: Driver, job_id: int) -> str | None:
    """The job's state now, or None once it is deleted."""
    state: str | None = await driver.fetchval(
        "SELECT state::text FROM /*schema*/river_job WHERE id = $1", job_id
    )
    return state


def error(attempt: int, message: str, trace: str = "Traceback: ...") -> dict[str, Any]:
    """One ``errors`` element as River writes it."""
    return {
        "at": datetime.now(UTC).isoformat(),
        "attempt": attempt,
        "error": message,
        "trace": trace,
    }
