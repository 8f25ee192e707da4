"""The dashboard link `trainbus up` prints (`/?token=...`, as notebook servers do), in a real
browser: the page takes the token once, keeps it for the tab (sessionStorage), removes it from
the address bar, and sends it as `Authorization: Bearer` on its writes, with no token form.

Skipped, with the reason, where the browser or Playwright is missing (as tests/dashboard/
test_browser.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.dashboard.stack import Console, browser_missing
from tests.harness.api import api_stack

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

MISSING = browser_missing()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

TOKEN = "token-link-test-0123456789abcdef"


async def test_the_token_link_is_kept_for_the_tab_and_used_on_writes(
    config: Any, dash_workspace: Any, models_dir: Path, browser: BrowserContext
) -> None:
    from services.backend.security import ApiSecurity

    async with api_stack(config, dash_workspace, models_dir, trainer=False,
                         security=ApiSecurity(auth="token", token=TOKEN)) as stack:
        page = await browser.new_page()
        console = Console()
        console.watch(page)
        writes: list[tuple[str, str | None]] = []
        page.on("request", lambda r: writes.append((r.url, r.headers.get("authorization")))
                if r.method == "POST" else None)
        await page.goto(f"{stack.url}/?token={TOKEN}#/jobs")
        await page.locator("#live[data-state=live]").wait_for(timeout=15_000)
        # Out of the address bar (the route after `#` kept), kept for this tab only.
        assert page.url == f"{stack.url}/#/jobs"
        assert await page.evaluate("window.sessionStorage.getItem('trainbus.token')") == TOKEN
        assert await page.evaluate("window.localStorage.getItem('trainbus.token')") is None
        await page.locator("#f-strategy option[value=dash_quick]").wait_for(state="attached")
        await page.select_option("#f-strategy", "dash_quick")
        await page.click("#f-submit")
        # Accepted at once: the write carried the token, and no token form was needed.
        await page.locator("#jobs-table tbody tr[data-status=queued]").wait_for()
        assert await page.locator("#token-input").count() == 0
        assert [auth for url, auth in writes if url.endswith("/api/v1/trainings")] == [
            f"Bearer {TOKEN}"]
        assert console.errors == []
