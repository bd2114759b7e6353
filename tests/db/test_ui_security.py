"""Who may use the dashboard and change what: authentication, CSRF, origin, read-only, binding."""

from __future__ import annotations

import base64
import functools
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio.ui import create_app, serve
from rivertrio.ui._server import check_bind
from support.cli import UNREACHABLE, assert_one_line_error, invoke
from support.ui import (
    BASE,
    csrf_token,
    dashboard,
    diamond,
    job_state,
    post,
    put_job,
    put_queue,
    put_workflows,
)

TOKEN = "s3cret-token-for-the-tests"


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


# -- read-only ----------------------------------------------------------------------------


@pytest.fixture
async def read_only(database_url: str, migrated_schema: str) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard(database_url, migrated_schema, read_only=True) as client:
        yield client


async def test_read_only_hides_every_action(read_only: httpx.AsyncClient, driver: Driver) -> None:
    await put_queue(driver, "default")
    job_id = await put_job(driver, state="discarded")
    for path in ("/", "/jobs?state=discarded", f"/jobs/{job_id}"):
        html = (await read_only.get(path)).text
        assert 'method="post"' not in html, path
        assert "read-only" in html
    assert "Retry all" not in (await read_only.get("/jobs?state=discarded")).text
    refused = await read_only.get("/jobs/bulk?action=retry&state=discarded")
    assert refused.status_code == 403


async def test_read_only_refuses_every_action(read_only: httpx.AsyncClient, driver: Driver) -> None:
    await put_queue(driver, "default")
    job_id = await put_job(driver, state="discarded")
    token = await csrf_token(read_only)
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"/jobs/{job_id}/retry", {}),
        (f"/jobs/{job_id}/delete", {}),
        (f"/api/jobs/{job_id}/cancel", {}),
        ("/api/jobs/retry-matching", {"state": "discarded"}),
        ("/jobs/bulk", {"action": "delete", "state": "discarded", "up_to": job_id}),
        ("/queues/pause", {"queue": "default"}),
        ("/api/queues/pause", {"queue": "default"}),
    ]
    for path, fields in cases:
        response = await post(read_only, path, fields, csrf=token)
        assert response.status_code == 403, path
        assert "read-only" in response.text
    assert await job_state(driver, job_id) == "discarded"
    assert not await driver.fetchval("SELECT paused_at IS NOT NULL FROM /*schema*/river_queue")


async def test_read_only_hides_and_refuses_workflow_actions(
    read_only: httpx.AsyncClient, driver: Driver, database_url: str, migrated_schema: str
) -> None:
    (info,) = await put_workflows(database_url, migrated_schema, [diamond()])
    html = (await read_only.get(f"/workflows/{info.id}")).text
    assert "Cancel workflow" not in html
    assert 'method="post"' not in html
    token = await csrf_token(read_only)
    for path in (f"/workflows/{info.id}/cancel", f"/api/workflows/{info.id}/retry"):
        response = await post(read_only, path, csrf=token)
        assert response.status_code == 403, path
        assert "read-only" in response.text
    states = [await job_state(driver, job.id) for job in info.tasks.values()]
    assert states == ["available"] + ["pending"] * 3


# -- token ----------------------------------------------------------------------------------


@pytest.fixture
async def with_token(database_url: str, migrated_schema: str) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard(database_url, migrated_schema, auth_token=TOKEN) as client:
        yield client


async def test_token_is_required_for_pages_and_api(with_token: httpx.AsyncClient) -> None:
    page = await with_token.get("/jobs?state=discarded")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fjobs%3Fstate%3Ddiscarded"
    api = await with_token.get("/api/overview")
    assert api.status_code == 401
    assert api.json() == {"error": "authentication required"}
    assert api.headers["www-authenticate"].startswith("Bearer")
    wrong = await with_token.get("/api/overview", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    # The login form and the package's assets need no credentials.
    assert (await with_token.get("/login")).status_code == 200


async def test_bearer_token_is_accepted(with_token: httpx.AsyncClient, driver: Driver) -> None:
    job_id = await put_job(driver, state="discarded")
    assert (await with_token.get("/api/overview", headers=BEARER)).status_code == 200
    token = await csrf_token(with_token, **BEARER)
    response = await post(
        with_token, f"/api/jobs/{job_id}/retry", csrf=token, origin=None, headers=BEARER
    )
    assert response.status_code == 200
    assert await job_state(driver, job_id) == "available"


async def test_login_sets_a_session_and_logout_ends_it(with_token: httpx.AsyncClient) -> None:
    refused = await post(with_token, "/login", {"token": "wrong", "next": "/jobs"}, csrf=None)
    assert refused.status_code == 401
    assert "not the right one" in refused.text

    # An absolute URL is no place to send anyone after signing in.
    elsewhere = await post(
        with_token, "/login", {"token": TOKEN, "next": "//evil.example/"}, csrf=None
    )
    assert elsewhere.headers["location"] == "/"
    signed_in = await post(with_token, "/login", {"token": TOKEN, "next": "/jobs"}, csrf=None)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/jobs"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie  # the session is derived from the token, not the token
    page = await with_token.get("/jobs")
    assert page.status_code == 200
    assert "Sign out" in page.text

    token = await csrf_token(with_token)
    out = await post(with_token, "/logout", csrf=token)
    assert out.status_code == 303
    assert (await with_token.get("/jobs")).status_code == 303


# -- basic auth -----------------------------------------------------------------------------


async def test_basic_auth(database_url: str, migrated_schema: str) -> None:
    settings = {"basic_auth": ("ops", "correct horse")}
    async with dashboard(database_url, migrated_schema, **settings) as http:
        refused = await http.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/", headers=basic("ops", "wrong horse"))).status_code == 401
        assert (await http.get("/", headers=basic("dev", "correct horse"))).status_code == 401
        assert (await http.get("/", headers=basic("ops", "correct horse"))).status_code == 200
        bad = await http.get("/", headers={"Authorization": "Basic !!!"})
        assert bad.status_code == 401


# -- CSRF and origin ------------------------------------------------------------------------


@pytest.fixture
async def http(database_url: str, migrated_schema: str) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard(database_url, migrated_schema) as client:
        yield client


async def test_a_change_without_the_csrf_token_is_refused(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    for token in (None, "", "0" * 40):
        for path in (f"/jobs/{job_id}/delete", f"/api/jobs/{job_id}/delete"):
            response = await post(http, path, csrf=token)
            assert response.status_code == 403, (path, token)
            assert "CSRF token" in response.text
    assert await job_state(driver, job_id) == "discarded"


async def test_a_csrf_token_of_another_identity_is_refused(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    settings = {"auth_token": TOKEN, "basic_auth": ("ops", "correct horse")}
    async with dashboard(database_url, migrated_schema, **settings) as http:
        # A token the basic-auth user was given does not work for the bearer identity.
        token = await csrf_token(http, **basic("ops", "correct horse"))
        response = await post(http, f"/api/jobs/{job_id}/delete", csrf=token, headers=BEARER)
        assert response.status_code == 403
        response = await post(
            http, f"/api/jobs/{job_id}/delete", csrf=token, headers=basic("ops", "correct horse")
        )
        assert response.status_code == 200
    assert await job_state(driver, job_id) is None


async def test_a_change_from_another_origin_is_refused(
    http: httpx.AsyncClient, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    token = await csrf_token(http)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "http://evil.example/page"},
    ):
        response = await post(
            http, f"/jobs/{job_id}/delete", csrf=token, origin=None, headers=headers
        )
        assert response.status_code == 403, headers
        assert response.text == "cross-origin request refused"
    assert await job_state(driver, job_id) == "discarded"
    # The dashboard's own page, as a browser sends it.
    response = await post(
        http, f"/jobs/{job_id}/delete", csrf=token, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 303


async def test_an_allowed_origin_may_send_changes(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded")
    origin = "https://ops.example.com"
    async with dashboard(database_url, migrated_schema, allowed_origins=[origin]) as http:
        token = await csrf_token(http)
        response = await post(http, f"/jobs/{job_id}/retry", csrf=token, origin=origin)
        assert response.status_code == 303
    assert await job_state(driver, job_id) == "available"


async def test_only_form_posts_change_anything(http: httpx.AsyncClient, driver: Driver) -> None:
    job_id = await put_job(driver, state="discarded")
    token = await csrf_token(http)
    headers = {"X-CSRF-Token": token, "Origin": BASE}
    as_json = await http.post(f"/api/jobs/{job_id}/delete", json={}, headers=headers)
    assert as_json.status_code == 415
    for method in ("PUT", "DELETE", "PATCH"):
        response = await http.request(method, f"/api/jobs/{job_id}/delete", headers=headers)
        assert response.status_code == 405, method
    assert (await http.get(f"/api/jobs/{job_id}/delete")).status_code == 405
    assert await job_state(driver, job_id) == "discarded"
    # The header form of the token, as the dashboard's script and a script send it.
    header_token = await http.post(f"/api/jobs/{job_id}/delete", headers=headers)
    assert header_token.status_code == 200


# -- where it listens -----------------------------------------------------------------------


def test_only_loopback_without_authentication() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, 8765, authenticated=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "ops.example.com"):
        with pytest.raises(rivertrio.ConfigError, match=f"refusing to listen on {host}"):
            check_bind(host, 8765, authenticated=False)
        check_bind(host, 8765, authenticated=True)


async def test_cli_refuses_another_address_before_opening_the_database() -> None:
    result = await invoke("ui", "--database-url", UNREACHABLE, "--host", "0.0.0.0")
    assert_one_line_error(result, "refusing to listen on 0.0.0.0", "--auth-token")
    result = await invoke("ui", "--database-url", UNREACHABLE, "--auth-token", "short")
    assert_one_line_error(result, "at least 16 characters")


async def test_serves_over_tcp_with_its_own_client(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    job_id = await put_job(driver, state="discarded", kind="served")
    app = create_app(database_url=database_url, schema=migrated_schema)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve, app, port=0, root_path="/ops"))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/ops/")
        async with httpx.AsyncClient() as http:
            html = (await http.get(url + "jobs")).text
            assert f'href="/ops/jobs/{job_id}"' in html
            assert 'src="/ops/static/' in html
            api = await http.get(url + "api/jobs")
            assert [j["kind"] for j in api.json()["jobs"]] == ["served"]
        nursery.cancel_scope.cancel()


async def test_cli_without_the_ui_extra_says_what_to_install() -> None:
    # Starlette made unimportable, as where only `pip install rivertrio` ran.
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv = ['rivertrio', 'ui']; "
        "from rivertrio._cli import main; main()"
    )
    done = await trio.run_process([sys.executable, "-c", code], capture_stderr=True, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "error: rivertrio.ui needs the 'ui' extra (starlette is missing): "
        "pip install 'rivertrio[ui]'"
    )


async def test_cli_refuses_a_schema_without_rivers_tables(
    database_url: str, empty_schema: str
) -> None:
    result = await invoke("ui", "--database-url", database_url, "--schema", empty_schema)
    assert_one_line_error(result, f"no river_job table in schema '{empty_schema}'", "migrate up")
