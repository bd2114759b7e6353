"""The dashboard's JSON API against Postgres: reads, filters, paging, and every action.

The app runs in-process (its lifespan opening its own client) and is reached
through httpx's ASGI transport on Trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import trio

import rivertrio
import rivertrio.ui
from rivertrio._driver import Driver
from support.ui import (
    BASE,
    csrf_token,
    dashboard,
    diamond,
    error,
    job_state,
    post,
    put_job,
    put_queue,
    put_workflows,
)


@pytest.fixture
async def http(database_url: str, migrated_schema: str) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard(database_url, migrated_schema) as client:
        yield client


@dataclass
class Hold(rivertrio.JobArgs, kind="hold"):
    pass


async def ids(http: httpx.AsyncClient, **params: str | list[str]) -> list[int]:
    response = await http.get("/api/jobs", params=params)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


# -- reads --------------------------------------------------------------------------------


async def test_overview_counts_each_queue_by_state(http: httpx.AsyncClient, driver: Driver) -> None:
    await put_queue(driver, "default")
    await put_queue(driver, "email", paused=True)
    for state in ("available", "available", "running", "discarded", "completed"):
        await put_job(driver, state=state)
    await put_job(driver, state="retryable", queue="email")
    await put_job(driver, state="completed", queue="never-worked")

    data = (await http.get("/api/overview")).json()

    queues = {q["name"]: q for q in data["queues"]}
    assert sorted(queues) == ["default", "email", "never-worked"]
    assert queues["default"]["counts"] == {
        "available": 2,
        "running": 1,
        "scheduled": 0,
        "retryable": 0,
        "pending": 0,
        "completed": 1,
        "discarded": 1,
        "cancelled": 0,
    }
    assert queues["email"]["paused"] is True
    assert queues["email"]["counts"]["retryable"] == 1
    # A queue with jobs but no row: no client works it yet, so it cannot be paused.
    assert queues["never-worked"]["has_row"] is False
    assert data["totals"]["counts"]["completed"] == 2
    # Three jobs finished this minute: the chart's last bar (or the one before it,
    # should a minute have begun since).
    assert sum(data["totals"]["per_minute"]["completed"][-2:]) == 2
    assert sum(data["totals"]["per_minute"]["discarded"][-2:]) == 1
    assert data["leader"] is None


async def test_overview_shows_the_leader_and_the_clients_that_worked_jobs(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    await driver.execute(
        "INSERT INTO /*schema*/river_leader (leader_id, elected_at, expires_at) "
        "VALUES ('go-client-1', now(), now() + interval '15 seconds')"
    )
    await put_job(driver, state="running", attempted_by=["host-a"])
    await put_job(driver, state="running", attempted_by=["host-b", "host-a"])
    await put_job(driver, state="completed", attempted_by=["host-c"])

    data = (await http.get("/api/overview")).json()

    assert data["leader"]["id"] == "go-client-1"
    clients = {c["id"]: c for c in data["clients"]}
    assert sorted(clients) == ["host-a", "host-c"]  # each job's latest attempt
    assert clients["host-a"]["running"] == 2
    assert clients["host-c"]["running"] == 0
    # Ids without rivertrio's marker hold no liveness lock: their liveness is unknown.
    assert clients["host-a"]["alive"] is None


async def test_a_running_clients_liveness_is_read_from_its_lock(
    http: httpx.AsyncClient, database_url: str, migrated_schema: str
) -> None:
    started = trio.Event()
    release = trio.Event()
    workers = rivertrio.Workers()

    @workers.register(Hold)
    async def hold(job: rivertrio.Job[Hold]) -> None:
        started.set()
        await release.wait()

    config = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=1)},
        workers=workers,
    )
    async with rivertrio.open_client(config, database_url=database_url) as worker:
        await worker.insert(Hold())
        with trio.fail_after(10):
            await started.wait()
        data = (await http.get("/api/overview")).json()
        release.set()

    assert [(c["id"], c["alive"], c["running"]) for c in data["clients"]] == [(worker.id, True, 1)]


async def test_job_returns_every_field(http: httpx.AsyncClient, driver: Driver) -> None:
    job_id = await put_job(
        driver,
        state="retryable",
        kind="send_email",
        args={"to": "a@example.com", "n": [1, 2]},
        metadata={"source": "signup"},
        errors=[error(1, "smtp down", "Traceback (most recent call last): ...")],
        attempted_by=["host-1"],
        tags=["europe"],
    )

    job = (await http.get(f"/api/jobs/{job_id}")).json()["job"]

    assert job["state"] == "retryable"
    assert job["kind"] == "send_email"
    assert job["args"] == {"to": "a@example.com", "n": [1, 2]}
    assert job["metadata"] == {"source": "signup"}
    assert job["tags"] == ["europe"]
    assert job["attempted_by"] == ["host-1"]
    assert [(e["attempt"], e["error"]) for e in job["errors"]] == [(1, "smtp down")]
    assert job["errors"][0]["trace"].startswith("Traceback")


async def test_unknown_job_is_404_and_a_bad_id_400(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/jobs/123456")
    assert missing.status_code == 404
    assert missing.json() == {"error": "job 123456 not found"}
    bad = await http.get("/api/jobs/abc")
    assert bad.status_code == 400
    assert "not a job id" in bad.json()["error"]


async def test_filters_by_state_kind_and_queue(http: httpx.AsyncClient, driver: Driver) -> None:
    a = await put_job(driver, state="discarded", kind="email", queue="mail")
    b = await put_job(driver, state="discarded", kind="report", queue="default")
    c = await put_job(driver, state="completed", kind="email", queue="mail")
    d = await put_job(driver, state="available", kind="email", queue="default")

    assert await ids(http) == [d, c, b, a]  # newest first
    assert await ids(http, state="discarded") == [b, a]
    assert await ids(http, state=["discarded", "available"]) == [d, b, a]
    assert await ids(http, kind="email") == [d, c, a]
    assert await ids(http, queue="mail") == [c, a]
    assert await ids(http, kind="email", queue="default", state="available") == [d]
    assert await ids(http, kind="nothing") == []


async def test_text_in_args_is_a_value_a_path_or_a_json_object(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    nested = await put_job(driver, args={"customer": {"id": 42, "email": "ann@example.com"}})
    listed = await put_job(driver, args={"emails": ["bob@example.com", "ann@example.com"]})
    as_text = await put_job(driver, args={"customer": {"id": "42"}})
    other = await put_job(driver, args={"note": "ann@example.com is a substring of nothing"})

    # A bare value: equal to the text anywhere, at any depth, arrays included.
    assert await ids(http, q="ann@example.com") == [listed, nested]
    # A number also matches the number.
    assert await ids(http, q="42") == [as_text, nested]
    # A dotted path and a value (read as JSON when it is JSON).
    assert await ids(http, q="customer.id=42") == [nested]
    assert await ids(http, q='customer.id="42"') == [as_text]
    assert await ids(http, q="customer.email = ann@example.com") == [nested]
    # A JSON object the args contain.
    assert await ids(http, q='{"emails": ["ann@example.com"]}') == [listed]
    # In double quotes: a value, even one that reads as a path.
    path_like = await put_job(driver, args={"token": "id=42"})
    assert await ids(http, q='"id=42"') == [path_like]
    assert await ids(http, q="id=42") == []
    # Not a substring search (no index could serve one).
    assert await ids(http, q="ann") == []
    assert other not in await ids(http, q="substring")


async def test_args_search_that_cannot_be_read_is_refused_with_the_reason(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/api/jobs", params={"q": '{"broken": '})
    assert response.status_code == 400
    assert "is not valid JSON" in response.json()["error"]
    response = await http.get("/api/jobs", params={"state": "failed"})
    assert response.status_code == 400
    assert "'failed' is not a job state" in response.json()["error"]


async def test_hostile_args_search_is_a_value_not_syntax(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    hostile = 'x") || (@ == "y'
    job_id = await put_job(driver, args={"s": hostile})
    await put_job(driver, args={"s": "y"})
    assert await ids(http, q=hostile) == [job_id]
    assert await ids(http, q="it's; DROP TABLE river_job; --") == []
    assert await ids(http, q="\u00e9t\u00e9 \U0001f600") == []


async def test_paging_lists_every_job_once_while_jobs_are_inserted(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    first = [await put_job(driver) for _ in range(120)]
    seen: list[int] = []
    before: int | None = None
    while True:
        params = {"limit": "50"} | ({} if before is None else {"before": str(before)})
        page = (await http.get("/api/jobs", params=params)).json()
        seen += [job["id"] for job in page["jobs"]]
        # Newer jobs arrive between pages: they go before page one, never into the walk.
        await put_job(driver)
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(first, reverse=True)


async def test_periodic_lists_each_schedule_by_its_jobs(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    await put_job(driver, state="completed", kind="digest", metadata={"periodic": True})
    last = await put_job(driver, state="discarded", kind="digest", metadata={"periodic": True})
    await put_job(
        driver,
        state="scheduled",
        kind="cleanup",
        metadata={"periodic": True, "river:periodic_job_id": "nightly"},
    )
    await put_job(driver, state="completed", kind="digest")  # not periodic

    items = (await http.get("/api/periodic")).json()["periodic"]

    summary = [(p["kind"], p["periodic_id"], p["total"], p["discarded"]) for p in items]
    assert summary == [("cleanup", "nightly", 1, 0), ("digest", None, 2, 1)]
    digest = items[1]
    assert (digest["last_id"], digest["last_state"], digest["next_at"]) == (
        last,
        "discarded",
        None,
    )
    assert items[0]["next_at"] is not None


async def test_workflows_are_listed_newest_first_with_their_counts(
    http: httpx.AsyncClient, driver: Driver, database_url: str, migrated_schema: str
) -> None:
    infos = await put_workflows(
        database_url, migrated_schema, [diamond(f"w{n}", id=f"wf-{n}") for n in range(3)]
    )
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'discarded', finalized_at = now() WHERE id = $1",
        infos[2].tasks["extract"].id,
    )

    first = (await http.get("/api/workflows", params={"limit": "2"})).json()

    assert [w["id"] for w in first["workflows"]] == ["wf-2", "wf-1"]
    newest = first["workflows"][0]
    assert newest["name"] == "w2"
    assert newest["tasks"] == 4
    assert {s: n for s, n in newest["states"].items() if n} == {"pending": 3, "discarded": 1}
    assert newest["finished"] is False
    assert newest["created_at"] is not None
    assert first["next_before"] == first["workflows"][1]["cursor"]
    rest = (await http.get("/api/workflows", params={"before": first["next_before"]})).json()
    assert [w["id"] for w in rest["workflows"]] == ["wf-0"]
    assert rest["next_before"] is None
    assert (await http.get("/api/workflows", params={"limit": "501"})).status_code == 400


async def test_workflow_returns_its_tasks_and_their_dependencies(
    http: httpx.AsyncClient, database_url: str, migrated_schema: str
) -> None:
    (info,) = await put_workflows(database_url, migrated_schema, [diamond()])

    data = (await http.get(f"/api/workflows/{info.id}")).json()["workflow"]

    assert (data["id"], data["name"], data["finished"]) == (info.id, "nightly", False)
    assert data["states"]["available"] == 1
    assert data["states"]["pending"] == 3
    tasks = {t["name"]: t for t in data["tasks"]}
    assert list(tasks) == ["extract", "clean", "enrich", "load"]
    assert tasks["load"]["job_id"] == info.tasks["load"].id
    assert tasks["load"]["deps"] == [
        {"task": "clean", "job_id": info.tasks["clean"].id},
        {"task": "enrich", "job_id": info.tasks["enrich"].id},
    ]
    assert [t["waiting"] for t in tasks.values()] == [False, True, True, True]
    assert tasks["extract"]["kind"] == "ui_step"


async def test_unknown_workflow_is_404(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/workflows/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "workflow 'nope' not found"}
    bad = await http.get("/api/workflows", params={"before": "x"})
    assert bad.status_code == 400


# -- actions ------------------------------------------------------------------------------


async def test_retry_cancel_and_delete_a_job(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    failed = await put_job(driver, state="discarded", errors=[error(1, "boom")])
    waiting = await put_job(driver, state="scheduled")

    retried = await post(http, f"/api/jobs/{failed}/retry", csrf=token)
    assert retried.status_code == 200, retried.text
    assert retried.json()["job"]["state"] == "available"
    assert await job_state(driver, failed) == "available"

    cancelled = await post(http, f"/api/jobs/{waiting}/cancel", csrf=token)
    assert cancelled.json()["job"]["state"] == "cancelled"
    assert await job_state(driver, waiting) == "cancelled"

    deleted = await post(http, f"/api/jobs/{waiting}/delete", csrf=token)
    assert deleted.json()["job"]["id"] == waiting
    assert await job_state(driver, waiting) is None
    again = await post(http, f"/api/jobs/{waiting}/delete", csrf=token)
    assert again.status_code == 404


async def test_cancel_and_retry_a_workflow(
    http: httpx.AsyncClient, driver: Driver, database_url: str, migrated_schema: str
) -> None:
    token = await csrf_token(http)
    (info,) = await put_workflows(database_url, migrated_schema, [diamond()])
    ids = [job.id for job in info.tasks.values()]

    cancelled = await post(http, f"/api/workflows/{info.id}/cancel", csrf=token)
    assert cancelled.status_code == 200, cancelled.text
    assert [j["state"] for j in cancelled.json()["jobs"]] == ["cancelled"] * 4
    assert [await job_state(driver, i) for i in ids] == ["cancelled"] * 4

    retried = await post(http, f"/api/workflows/{info.id}/retry", csrf=token)
    assert sorted(j["id"] for j in retried.json()["jobs"]) == ids
    assert [await job_state(driver, i) for i in ids] == ["available"] + ["pending"] * 3

    unknown = await post(http, "/api/workflows/nope/cancel", csrf=token)
    assert unknown.status_code == 404


async def test_a_running_job_is_not_deleted(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    job_id = await put_job(driver, state="running")
    response = await post(http, f"/api/jobs/{job_id}/delete", csrf=token)
    assert response.status_code == 409
    assert "cancel it first" in response.json()["error"]
    assert await job_state(driver, job_id) == "running"


async def test_retry_and_delete_every_job_matching_a_filter(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    token = await csrf_token(http)
    email = [await put_job(driver, state="discarded", kind="email") for _ in range(3)]
    report = await put_job(driver, state="discarded", kind="report")
    running = await put_job(driver, state="running", kind="email")

    retried = await post(
        http, "/api/jobs/retry-matching", {"state": "discarded", "kind": "email"}, csrf=token
    )
    assert retried.json()["matched"] == 3
    assert retried.json()["retried"] == 3
    assert [await job_state(driver, i) for i in email] == ["available"] * 3
    assert await job_state(driver, report) == "discarded"

    deleted = await post(http, "/api/jobs/delete-matching", {"kind": "email"}, csrf=token)
    # The running job matches the filter but is never deleted.
    assert deleted.json() == {"matched": 4, "deleted": 3, "up_to": running}
    assert [await job_state(driver, i) for i in email] == [None] * 3
    assert await job_state(driver, running) == "running"


async def test_a_bulk_action_leaves_jobs_newer_than_its_confirmation_alone(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    token = await csrf_token(http)
    old = await put_job(driver, state="discarded")
    page = await http.get("/jobs/bulk", params={"action": "delete", "state": "discarded"})
    assert "Delete 1 job?" in page.text
    newer = await put_job(driver, state="discarded")

    done = await post(
        http,
        "/jobs/bulk",
        {"action": "delete", "state": "discarded", "up_to": old},
        csrf=token,
    )
    assert done.status_code == 303
    assert "done=bulk-deleted" in done.headers["location"]
    assert await job_state(driver, old) is None
    assert await job_state(driver, newer) == "discarded"


async def test_bulk_action_needs_a_filter(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    job_id = await put_job(driver, state="completed")
    response = await post(http, "/api/jobs/delete-matching", csrf=token)
    assert response.status_code == 400
    assert "needs a filter" in response.json()["error"]
    assert await job_state(driver, job_id) == "completed"


async def test_pause_and_resume_a_queue(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    await put_queue(driver, "email")

    paused = await post(http, "/api/queues/pause", {"queue": "email"}, csrf=token)
    assert paused.json() == {"queue": {"name": "email", "paused": True}}
    assert await driver.fetchval(
        "SELECT paused_at IS NOT NULL FROM /*schema*/river_queue WHERE name = 'email'"
    )
    resumed = await post(http, "/api/queues/resume", {"queue": "email"}, csrf=token)
    assert resumed.json() == {"queue": {"name": "email", "paused": False}}

    unknown = await post(http, "/api/queues/pause", {"queue": "nope"}, csrf=token)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "queue 'nope' not found"}


# -- the dashboard's own client -------------------------------------------------------------


async def test_the_dashboard_client_works_no_queue_and_never_leads(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    waiting = await put_job(driver, state="available")
    app = rivertrio.ui.create_app(database_url=database_url, schema=migrated_schema)
    async with app.router.lifespan_context(app):
        client = app.state.dashboard.client
        assert client is not None and not client.config.queues
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            assert (await http.get("/api/overview")).status_code == 200
        # An insert-only client starts no elector: nobody holds the term.
        assert await driver.fetchval("SELECT count(*) FROM /*schema*/river_leader") == 0
        # And no producer: the job is still waiting.
        assert await job_state(driver, waiting) == "available"
    assert app.state.dashboard.client is None


async def test_an_app_without_a_client_says_why(database_url: str) -> None:
    app = rivertrio.ui.create_app(database_url=database_url)
    transport = httpx.ASGITransport(app=app)  # no lifespan: the client never opens
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        response = await http.get("/api/overview")
    assert response.status_code == 503
    assert "client is not open" in response.json()["error"]


async def test_an_app_uses_a_client_it_is_given(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    config = rivertrio.Config(schema=migrated_schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        app = rivertrio.ui.create_app(client=client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            assert await ids(http, state="discarded") == [job_id]


def test_bad_settings_are_refused_before_anything_opens() -> None:
    with pytest.raises(rivertrio.ConfigError, match="at least 16 characters"):
        rivertrio.ui.create_app(auth_token="short")
    with pytest.raises(rivertrio.ConfigError, match="password must be at least 8"):
        rivertrio.ui.create_app(basic_auth=("ops", "pw"))
    with pytest.raises(rivertrio.ConfigError, match="without ':'"):
        rivertrio.ui.create_app(basic_auth=("a:b", "long enough"))
    with pytest.raises(rivertrio.ConfigError, match="a scheme and host"):
        rivertrio.ui.create_app(allowed_origins=["ops.example.com"])
    with pytest.raises(rivertrio.ConfigError, match="either client= or database_url="):
        rivertrio.ui.create_app(client=object(), schema="x")  # type: ignore[arg-type]
    with pytest.raises(rivertrio.ConfigError, match="refresh_seconds"):
        rivertrio.ui.create_app(refresh_seconds=0)


async def test_counts_past_the_cap_come_from_a_full_count(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    cap = rivertrio.ui._overview.COUNT_CAP
    await driver.execute(
        "INSERT INTO /*schema*/river_job (state, max_attempts, finalized_at, kind, args) "
        "SELECT 'completed', 25, now(), 'bulk', '{}' FROM generate_series(1, $1::int)",
        cap + 5,
    )
    app = rivertrio.ui.create_app(database_url=database_url, schema=migrated_schema)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            first = (await http.get("/api/overview")).json()["totals"]
            # The live count stops at the cap, and says it is a lower bound.
            assert first["counts"]["completed"] == cap
            assert first["counts_text"]["completed"] == f"{cap:,}+"
            assert first["at_least"] == ["completed"]
            with trio.fail_after(30):
                await app.state.dashboard.counted.wait()
            then = (await http.get("/api/overview")).json()
    assert then["totals"]["counts"]["completed"] == cap + 5
    assert then["totals"]["counts_text"]["completed"] == f"{cap + 5:,}"
    assert then["totals"]["at_least"] == []
    assert then["counted_at"] is not None
