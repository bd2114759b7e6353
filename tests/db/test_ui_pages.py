"""The dashboard's HTML pages against Postgres: what they show, their forms, and escaping."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from rivertrio._driver import Driver
from support.ui import (
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


async def page(http: httpx.AsyncClient, path: str, status: int = 200) -> str:
    response = await http.get(path)
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def rows(html: str) -> list[int]:
    """The job ids a list page shows, in order."""
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)]


async def test_overview_shows_queues_counts_and_pause_buttons(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    await put_queue(driver, "default")
    await put_queue(driver, "email", paused=True)
    await put_job(driver, state="discarded")

    html = await page(http, "/")

    assert '<tr data-queue="default">' in html
    assert re.search(r'data-total="discarded">1<', html)
    assert 'action="/queues/pause"' in html
    assert 'action="/queues/resume"' in html  # email is paused
    assert "pill-paused" in html


async def test_jobs_page_filters_and_pages_newest_first(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    failed = [await put_job(driver, state="discarded", kind="email") for _ in range(60)]
    await put_job(driver, state="completed", kind="email")

    first = await page(http, "/jobs?state=discarded")
    assert rows(first) == failed[::-1][:50]
    older = re.search(r'href="(/jobs\?[^"]*before=\d+)"', first)
    assert older is not None
    second = await page(http, older.group(1).replace("&amp;", "&"))
    assert rows(second) == failed[::-1][50:]
    assert "« Newest" in second
    assert "Older »" not in second

    assert rows(await page(http, "/jobs?kind=email&state=completed")) == [failed[-1] + 1]
    assert rows(await page(http, "/jobs?kind=nothing")) == []


async def test_a_bad_filter_is_explained_on_the_page(http: httpx.AsyncClient) -> None:
    html = await page(http, "/jobs?q=%7Bbroken", status=400)
    assert "args search: &#39;{broken&#39; is not valid JSON" in html


async def test_job_page_shows_args_metadata_and_every_attempt(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    job_id = await put_job(
        driver,
        state="retryable",
        kind="send_email",
        args={"to": "a@example.com"},
        metadata={"source": "signup"},
        errors=[error(1, "smtp down", "first trace"), error(2, "smtp still down", "second trace")],
        attempted_by=["host-1", "host-2"],
        tags=["europe"],
    )

    html = await page(http, f"/jobs/{job_id}")

    assert "&#34;to&#34;: &#34;a@example.com&#34;" in html  # pretty-printed
    assert "&#34;source&#34;: &#34;signup&#34;" in html
    assert '<span class="tag">europe</span>' in html
    attempts = re.findall(
        r"<b>Attempt (\d+)</b>\s*<span class=\"muted\">by</span> "
        r"<span class=\"mono\">([\w-]+)</span>",
        html,
    )
    assert attempts == [("2", "host-2"), ("1", "host-1")]
    assert html.index("smtp still down") < html.index("second trace") < html.index("first trace")
    assert f'action="/jobs/{job_id}/retry"' in html
    assert f'action="/jobs/{job_id}/cancel"' in html
    assert f'action="/jobs/{job_id}/delete"' in html


async def test_page_actions_change_the_job_and_say_so(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    token = await csrf_token(http)
    job_id = await put_job(driver, state="discarded")

    response = await post(http, f"/jobs/{job_id}/retry", csrf=token)
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{job_id}?done=retried"
    html = await page(http, response.headers["location"])
    assert "Job made available to run again." in html
    assert await job_state(driver, job_id) == "available"

    response = await post(http, f"/jobs/{job_id}/cancel", csrf=token)
    assert response.headers["location"] == f"/jobs/{job_id}?done=cancelled"
    assert await job_state(driver, job_id) == "cancelled"

    response = await post(http, f"/jobs/{job_id}/delete", csrf=token)
    assert response.headers["location"] == "/jobs?done=deleted"
    assert await job_state(driver, job_id) is None
    assert "Job deleted." in await page(http, "/jobs?done=deleted")


async def test_pause_form_pauses_the_queue(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    await put_queue(driver, "email")
    response = await post(http, "/queues/pause", {"queue": "email"}, csrf=token)
    assert response.headers["location"] == "/?done=paused"
    html = await page(http, "/?done=paused")
    assert "Queue paused" in html
    assert 'action="/queues/resume"' in html


async def test_bulk_confirmation_names_the_count(http: httpx.AsyncClient, driver: Driver) -> None:
    token = await csrf_token(http)
    failed = [await put_job(driver, state="discarded", queue="mail") for _ in range(3)]
    html = await page(http, "/jobs/bulk?action=retry&state=discarded&queue=mail")
    assert "Retry 3 jobs?" in html
    up_to = re.search(r'name="up_to" value="(\d+)"', html)
    assert up_to is not None

    response = await post(
        http,
        "/jobs/bulk",
        {"action": "retry", "state": "discarded", "queue": "mail", "up_to": up_to.group(1)},
        csrf=token,
    )
    assert response.status_code == 303
    html = await page(http, response.headers["location"])
    assert "3 job(s) made available to run again." in html
    assert [await job_state(driver, i) for i in failed] == ["available"] * 3


async def test_a_notice_only_says_what_the_dashboard_would(http: httpx.AsyncClient) -> None:
    html = await page(http, "/jobs?done=%3Cb%3Ehacked%3C%2Fb%3E&n=%3Cscript%3E")
    assert "hacked" not in html
    assert "<script>" not in html.split("<body", 1)[1].replace('<script src="', "")


# -- workflows --------------------------------------------------------------------------------


def text_of(html: str, start: str, end: str = "</tr>") -> str:
    """The text (tags removed) from the first `start` in `html` to the next `end`."""
    part = html.split(start, 1)[1].split(end, 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", part))


async def test_workflows_page_lists_each_with_its_counts_newest_first(
    http: httpx.AsyncClient, driver: Driver, database_url: str, migrated_schema: str
) -> None:
    older, newer = await put_workflows(
        database_url, migrated_schema, [diamond("<b>older</b>"), diamond("nightly")]
    )
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'completed', finalized_at = now() WHERE id = $1",
        newer.tasks["extract"].id,
    )

    html = await page(http, "/workflows")

    assert re.findall(r'<tr data-workflow="(\w+)">', html) == [newer.id, older.id]
    row = text_of(html, f'<tr data-workflow="{newer.id}">')
    assert "nightly" in row
    assert " 4 " in row  # tasks
    assert "3 pending · 1 completed" in row
    assert "in progress" in row
    assert "1 available · 3 pending" in text_of(html, f'<tr data-workflow="{older.id}">')
    assert f'href="/workflows/{newer.id}"' in html
    assert "&lt;b&gt;older&lt;/b&gt;" in html
    assert '<a href="/workflows" aria-current="page">Workflows</a>' in html


async def test_workflows_page_pages_newest_first(
    http: httpx.AsyncClient, database_url: str, migrated_schema: str
) -> None:
    infos = await put_workflows(
        database_url, migrated_schema, [diamond(f"w{n}") for n in range(51)]
    )

    first = await page(http, "/workflows")
    assert re.findall(r'<tr data-workflow="(\w+)">', first) == [i.id for i in infos[:0:-1]]
    older = re.search(r'href="(/workflows\?before=\d+)"', first)
    assert older is not None
    second = await page(http, older.group(1))
    assert re.findall(r'<tr data-workflow="(\w+)">', second) == [infos[0].id]
    assert "« Newest" in second
    assert "Older »" not in second


async def test_workflow_page_lists_its_tasks_with_their_dependencies(
    http: httpx.AsyncClient, database_url: str, migrated_schema: str
) -> None:
    (info,) = await put_workflows(database_url, migrated_schema, [diamond()])
    ids = {name: job.id for name, job in info.tasks.items()}

    html = await page(http, f"/workflows/{info.id}")

    assert rows(html) == list(ids.values())  # in the order they were added
    for job_id in ids.values():
        assert f'<a href="/jobs/{job_id}">{job_id}</a>' in html
    load = text_of(html, f'<tr data-id="{ids["load"]}">')
    assert "load ui_step pending waiting for dependencies clean, enrich" in load
    assert f'<a href="/jobs/{ids["clean"]}">clean</a>, <a href="/jobs/{ids["enrich"]}">' in html
    assert "waiting" not in text_of(html, f'<tr data-id="{ids["extract"]}">')
    assert html.count("waiting for dependencies") == 3
    assert f'action="/workflows/{info.id}/cancel"' in html
    assert "/retry" not in html  # nothing discarded or cancelled yet
    # And each task's page leads back to its workflow.
    assert f'href="/workflows/{info.id}"' in await page(http, f"/jobs/{ids['load']}")


async def test_a_workflow_id_may_hold_any_text(
    http: httpx.AsyncClient, database_url: str, migrated_schema: str
) -> None:
    (info,) = await put_workflows(database_url, migrated_schema, [diamond(id="orders/42?x#y")])
    listed = await page(http, "/workflows")
    assert 'href="/workflows/orders%2F42%3Fx%23y"' in listed
    html = await page(http, "/workflows/orders%2F42%3Fx%23y")
    assert rows(html) == [job.id for job in info.tasks.values()]
    assert 'action="/workflows/orders%2F42%3Fx%23y/cancel"' in html


async def test_unknown_workflow_is_the_404_page(http: httpx.AsyncClient) -> None:
    html = await page(http, "/workflows/nope", status=404)
    assert "workflow &#39;nope&#39; not found" in html


async def test_cancel_and_retry_a_workflow_from_its_page(
    http: httpx.AsyncClient, driver: Driver, database_url: str, migrated_schema: str
) -> None:
    token = await csrf_token(http)
    (info,) = await put_workflows(database_url, migrated_schema, [diamond()])
    ids = [job.id for job in info.tasks.values()]

    response = await post(http, f"/workflows/{info.id}/cancel", csrf=token)
    assert response.status_code == 303
    assert response.headers["location"] == f"/workflows/{info.id}?done=workflow-cancelled&n=4"
    assert [await job_state(driver, i) for i in ids] == ["cancelled"] * 4
    html = await page(http, response.headers["location"])
    assert "4 task(s) cancelled" in html
    assert f'action="/workflows/{info.id}/retry"' in html
    assert "/cancel" not in html  # every task is finished
    assert "finished" in text_of(await page(http, "/workflows"), f'data-workflow="{info.id}"')

    response = await post(http, f"/workflows/{info.id}/retry", csrf=token)
    assert response.headers["location"] == f"/workflows/{info.id}?done=workflow-retried&n=4"
    # The first task can run; the others wait for it again.
    assert [await job_state(driver, i) for i in ids] == ["available"] + ["pending"] * 3


# -- hostile rows ---------------------------------------------------------------------------

# Each payload would run or inject markup if any page put it in unescaped.
HOSTILE = {
    "kind": "<script>alert('kind')</script>",
    "queue": "<img src=x onerror=alert('queue')>",
    "args": "</code><script>alert('args')</script>",
    "metadata": "<svg onload=alert('metadata')>",
    "error": "<script>alert('error')</script>",
    "trace": "</pre><iframe src=javascript:alert('trace')>",
    "worker": "<b onmouseover=alert('worker')>w</b>",
    "tag": "<a href=javascript:alert('tag')>t</a>",
    "leader": "<script>alert('leader')</script>",
    "periodic": "\"><script>alert('periodic')</script>",
}


@pytest.fixture
async def hostile_job(driver: Driver) -> int:
    await put_queue(driver, HOSTILE["queue"])
    await driver.execute(
        "INSERT INTO /*schema*/river_leader (leader_id, elected_at, expires_at) "
        "VALUES ($1, now(), now() + interval '15 seconds')",
        HOSTILE["leader"],
    )
    return await put_job(
        driver,
        state="discarded",
        kind=HOSTILE["kind"],
        queue=HOSTILE["queue"],
        args={"x": HOSTILE["args"], HOSTILE["args"]: 1},
        metadata={
            HOSTILE["metadata"]: HOSTILE["metadata"],
            "periodic": True,
            "river:periodic_job_id": HOSTILE["periodic"],
        },
        errors=[error(1, HOSTILE["error"], HOSTILE["trace"])],
        attempted_by=[HOSTILE["worker"]],
        tags=[HOSTILE["tag"]],
    )


def assert_inert(html: str, *names: str) -> None:
    """No payload appears as markup; each named one appears as text."""
    for name, payload in HOSTILE.items():
        assert payload not in html, f"{name} rendered unescaped"
    for name in names:
        escaped = (
            HOSTILE[name]
            .replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace('"', "&#34;")
            .replace("'", "&#39;")
        )
        assert escaped in html, f"{name} is not shown as text"
    elements = Elements()
    elements.feed(html)
    assert elements.problems == []


class Elements(HTMLParser):
    """What a browser would build from a page that could run code: scripts, handlers, URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("iframe", "object", "embed", "base"):
            self.problems.append(f"<{tag}>")
        if tag == "script" and not re.fullmatch(
            r"/static/[^/]+/app\.js", dict(attrs).get("src") or ""
        ):
            self.problems.append(f"script {attrs}")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"<{tag} {name}={value}>")


async def test_hostile_strings_render_as_text_on_every_page(
    http: httpx.AsyncClient, hostile_job: int
) -> None:
    assert_inert(await page(http, "/"), "queue", "leader", "worker")
    assert_inert(await page(http, "/jobs"), "kind", "queue", "error")
    assert_inert(
        await page(http, f"/jobs/{hostile_job}"),
        "kind",
        "queue",
        "metadata",
        "error",
        "trace",
        "worker",
        "tag",
    )
    assert_inert(await page(http, "/periodic"), "kind", "queue", "periodic")
    bulk = await page(
        http,
        "/jobs/bulk?" + httpx.QueryParams({"action": "delete", "kind": HOSTILE["kind"]}).__str__(),
    )
    assert_inert(bulk, "kind")
    bad = await page(http, "/jobs?" + str(httpx.QueryParams({"state": HOSTILE["kind"]})), 400)
    assert_inert(bad)
    assert "is not a job state" in bad


async def test_hostile_args_are_shown_in_full_as_json_text(
    http: httpx.AsyncClient, hostile_job: int
) -> None:
    html = await page(http, f"/jobs/{hostile_job}")
    assert "&#34;x&#34;: &#34;&lt;/code&gt;&lt;script&gt;alert(&#39;args&#39;)" in html


async def test_every_page_sends_a_strict_content_security_policy(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    paths = ("/", "/jobs", f"/jobs/{job_id}", "/periodic", "/workflows", "/api/overview", "/nope")
    for path in paths:
        response = await http.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp, path
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "style=" not in response.text  # CSP allows no inline style either


async def test_assets_are_versioned_and_served_by_the_package(
    http: httpx.AsyncClient,
) -> None:
    html = await page(http, "/")
    css = re.search(r'href="(/static/[^"/]+/app\.css)"', html)
    js = re.search(r'src="(/static/[^"/]+/app\.js)"', html)
    assert css is not None and js is not None
    for path, kind in ((css.group(1), "text/css"), (js.group(1), "text/javascript")):
        response = await http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)
        assert "immutable" in response.headers["cache-control"]
    stale = await http.get(css.group(1).replace("/static/", "/static/0.0.0-old"))
    assert stale.status_code == 404
    # Nothing is fetched from another host: a dashboard must work offline.
    assert not re.search(r'(src|href)="(https?:)?//', html)
