"""The research loop on the dashboard (issue 20) in a real browser: a failed job's page shows
what it was re-run from, its experiment, tags and note, the `code` failure's traceback and the
trainer's log lines; the jobs table filters by experiment and tag as GET /api/v1/jobs does.

A host-pool worker fails jobs on cue (tests/harness/scripted.py); skipped where Chromium or
Playwright is missing, as tests/dashboard/test_browser.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from libs.events.config import BusConfig
from tests.dashboard.stack import Console, browser_missing
from tests.harness.api import ApiStack
from tests.harness.polling import wait_status
from tests.harness.scripted import SECRET, scripted_host_worker

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

MISSING = browser_missing()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


async def test_a_rerun_failure_shows_its_origin_traceback_log_and_filters(
    stack: ApiStack, config: BusConfig, browser: BrowserContext
) -> None:
    async with scripted_host_worker(config):
        first = (await stack.client.post("/api/v1/trainings", json={
            "strategy": "dash", "pool": "host", "experiment": "e1",
            "tags": {"fail": "yes"}, "note": "first try"})).json()["job_id"]
        await wait_status(stack.client, first, {"failed"})
        rerun = await stack.client.post(f"/api/v1/jobs/{first}/rerun",
                                        json={"pool": "host", "note": "again"})
        assert rerun.status_code == 202, rerun.text
        second = rerun.json()["job_id"]
        await wait_status(stack.client, second, {"failed"})

    page = await browser.new_page()
    console = Console()
    console.watch(page)
    await page.goto(f"{stack.url}/#/jobs/{second}")
    await page.locator("#job-status[data-status=failed]").wait_for(timeout=30_000)
    assert await page.locator("#derived-from").inner_text() == first
    facts = await page.locator("dl.facts").inner_text()
    assert "e1" in facts and "fail=yes" in facts and "again" in facts
    traceback = page.locator("#traceback")
    await traceback.wait_for()
    text = await traceback.inner_text()
    assert "ValueError: shape mismatch: 17 != 16" in text and " shape_check" in text
    assert SECRET not in text
    log = page.locator("#trainer-log:has-text('building the model for')")
    await log.wait_for(timeout=15_000)
    assert SECRET not in await log.inner_text()

    # The jobs table: the query box filters as the API does.
    await page.click("nav.tabs a[data-tab=jobs]")
    rows = page.locator("#jobs-table tbody tr")
    await page.locator(f'#jobs-table tr[data-job="{second}"]').wait_for()
    await page.fill("#jobs-query", "experiment:e1 tag:fail=yes")
    await page.locator(f'#jobs-table tr[data-job="{first}"]').wait_for()
    assert sorted(await rows.evaluate_all("rs => rs.map(r => r.dataset.job)")) == sorted(
        [first, second])
    await page.fill("#jobs-query", "experiment:e2")
    await page.locator(f'#jobs-table tr[data-job="{first}"]').wait_for(state="detached")
    assert await rows.count() == 0
    assert console.errors == []
