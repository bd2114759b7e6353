"""The operator's session in chromium, for tests/scenarios/test_ui_browser.py; the docs' pictures.

Runs in a process of its own (``python -m support.ui_browser URL FAILED HOSTILE WORKFLOW``,
or ``--screenshots URL JOB DIR``):
Playwright's sync API runs an asyncio loop, which must not meet the test
process's trio-asyncio. Exits 0 when every step did what it should.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
from playwright.sync_api import ConsoleMessage, Dialog, Page, expect, sync_playwright

from support.programs import which

HOSTILE_KIND = "<script>alert('kind')</script>"


def call_api(url: str, path: str, **fields: str) -> None:
    """A state change made elsewhere: a script on the JSON API."""
    with httpx.Client(base_url=url) as http:
        token = http.get("api/csrf").json()["csrf_token"]
        response = http.post(path, data=fields, headers={"X-CSRF-Token": token})
        response.raise_for_status()


def operate(url: str, failed: list[int], hostile: int, workflow: str) -> None:
    """The operator's session, in the browser (Playwright's sync API, on a thread)."""
    chromium = which("chromium")
    assert chromium is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        expect.set_options(timeout=10_000)
        trouble: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            trouble.append(f"dialog {dialog.message}")
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                trouble.append(f"console {message.text}")

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: trouble.append(f"page error {exc}"))
        page.on("console", on_console)
        try:
            find_retry_and_see_it_leave(page, url, failed)
            pause_a_queue(page, url)
            hostile_job_is_text(page, url, hostile)
            periodic_jobs_are_listed(page, url)
            a_cancelled_workflow_is_retried(page, url, workflow)
        finally:
            browser.close()
        assert trouble == []


def find_retry_and_see_it_leave(page: Page, url: str, failed: list[int]) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator('[data-total="discarded"]')).to_have_text(str(len(failed) + 1))

    # Filter to the failed jobs.
    page.locator("nav.nav").get_by_role("link", name="Jobs").click()
    page.locator("nav.tabs a.state-discarded").click()
    expect(page).to_have_url(re.compile(r"/jobs\?state=discarded$"))
    rows = page.locator("#job-rows tr")
    expect(rows).to_have_count(len(failed) + 1)

    # Open one: its error is there; retry it.
    page.locator(f'#job-rows tr[data-id="{failed[0]}"] td.kind a').click()
    expect(page.locator("#job-state")).to_have_text("discarded")
    expect(page.get_by_text("smtp refused #0", exact=True)).to_be_visible()
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("Job made available to run again.")
    expect(page.locator("#job-state")).to_have_text("available")

    # It has left the failed list.
    page.locator("nav.nav").get_by_role("link", name="Jobs").click()
    page.locator("nav.tabs a.state-discarded").click()
    expect(rows).to_have_count(len(failed))
    expect(page.locator(f'#job-rows tr[data-id="{failed[0]}"]')).to_have_count(0)

    # A retry made elsewhere leaves the list too, without a reload.
    call_api(url, f"api/jobs/{failed[1]}/retry")
    expect(page.locator(f'#job-rows tr[data-id="{failed[1]}"]')).to_have_count(0)
    expect(rows).to_have_count(len(failed) - 1)
    expect(page.locator('nav.tabs [data-count="discarded"]')).to_have_text(str(len(failed) - 1))


def pause_a_queue(page: Page, url: str) -> None:
    page.goto(url)
    row = page.locator('#queue-rows tr[data-queue="email"]')
    expect(row.locator(".pill")).to_have_text("active")
    row.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Queue paused")
    expect(row.locator(".pill")).to_have_text("paused")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    # Resumed elsewhere: the overview follows.
    call_api(url, "api/queues/resume", queue="email")
    expect(row.locator(".pill")).to_have_text("active")


def hostile_job_is_text(page: Page, url: str, hostile: int) -> None:
    page.goto(f"{url}jobs/{hostile}")
    expect(page.locator("h1 .kind")).to_have_text(HOSTILE_KIND)
    expect(page.get_by_text("<img src=x onerror=alert('error')>", exact=True)).to_be_visible()
    page.goto(f"{url}jobs?state=discarded")
    expect(page.locator(f'#job-rows tr[data-id="{hostile}"] td.kind')).to_have_text(HOSTILE_KIND)


def periodic_jobs_are_listed(page: Page, url: str) -> None:
    page.goto(f"{url}periodic")
    rows = page.locator("#periodic-rows tr")
    expect(rows).to_have_count(1)
    # Refreshed from the JSON API at least once: the rows are rebuilt alike.
    page.locator("body[data-refreshed]").wait_for(state="attached")
    expect(rows).to_have_count(1)
    expect(rows.locator("td.kind")).to_have_text("prune_sessions")


def a_cancelled_workflow_is_retried(page: Page, url: str, workflow: str) -> None:
    page.goto(url)
    page.locator("nav.nav").get_by_role("link", name="Workflows").click()
    row = page.locator(f'#workflow-rows tr[data-workflow="{workflow}"]')
    expect(row.locator("td.states")).to_have_text("1 available · 3 pending")

    # Open it: its tasks, three waiting for their dependencies.
    row.locator("td.kind a").click()
    expect(page.locator("#task-rows tr")).to_have_count(4)
    expect(page.locator("#task-rows .waiting")).to_have_count(3)

    # Cancelled elsewhere (a script on the API); retried from the page.
    call_api(url, f"api/workflows/{workflow}/cancel")
    page.reload()
    expect(page.locator("#task-rows .badge.state-cancelled")).to_have_count(4)
    page.get_by_role("button", name="Retry workflow").click()
    expect(page.get_by_role("status")).to_contain_text("4 task(s) made to run again")
    expect(page.locator("#task-rows .waiting")).to_have_count(3)

    # A task's page leads back to its workflow.
    page.locator("#task-rows tr").first.locator("td.id a").click()
    page.get_by_role("link", name=workflow, exact=True).click()
    expect(page.locator("#task-rows tr")).to_have_count(4)


def screenshots(url: str, failed: int, directory: Path) -> None:
    """The docs' pictures of the dashboard (see support.ui_screenshots)."""
    chromium = which("chromium")
    assert chromium is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        for name, path in [
            ("overview", ""),
            ("jobs", "jobs?state=discarded"),
            ("job", f"jobs/{failed}"),
        ]:
            page.goto(url + path)
            # After the first refresh: what an operator sees once the page is live.
            page.locator("body[data-refreshed]").wait_for(state="attached")
            page.screenshot(path=directory / f"dashboard-{name}.png", full_page=name != "jobs")
        browser.close()


if __name__ == "__main__":
    if sys.argv[1] == "--screenshots":
        screenshots(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        operate(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
