"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright)
against the real backend, a real container trainer and a real nats-server.

Skipped, with the reason, where the browser or Playwright is missing (`python3 dev.py test`
installs chromium with apt-get, as CI does). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.dashboard.stack import Console, artifact, browser_missing
from tests.harness.api import ApiStack, api_stack
from tests.harness.polling import TERMINAL, wait_status

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Locator, Page

MISSING = browser_missing()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


async def open_page(browser: BrowserContext, url: str) -> tuple[Page, Console, list[str]]:
    """A page at `url`, its console errors collected, and every request it makes
    (`METHOD resource-type URL`: `eventsource` is the browser's own EventSource)."""
    page = await browser.new_page()
    console = Console()
    console.watch(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.resource_type} {r.url}"))
    await page.goto(url)
    await page.locator("#live[data-state=live]").wait_for(timeout=15_000)
    return page, console, requests


async def shoot(page: Page, path: Path) -> None:
    """A full-page screenshot from the top (the sticky header stays where it belongs)."""
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=path, full_page=True)


async def no_horizontal_scroll(page: Page) -> bool:
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"))


async def watch_while_running(read: Any, status: Any, enough: Any, timeout: float = 90
                              ) -> tuple[list[Any], str]:
    """Sample `read()` while `status()` says running, keeping each value that differs from the
    last one; stop once `enough(values)` holds or the job ended. Returns the values and the
    last status."""
    seen: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = ""
    while loop.time() < deadline:
        last = await status()
        if last in TERMINAL:
            break
        if last == "running":
            value = await read()
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
            if enough(seen):
                break
        await asyncio.sleep(0.05)
    return seen, last


def distinct_firsts(count: int) -> Any:
    return lambda seen: len({first for first, _ in seen}) >= count


async def bar_width(bar: Locator) -> float:
    return float(await bar.evaluate("el => parseFloat(el.querySelector('.bar').style.width)"))


async def test_a_job_submitted_from_the_form_advances_live_and_cancel_ends_it(
    stack: ApiStack, browser: BrowserContext
) -> None:
    page, console, requests = await open_page(browser, stack.url + "/")
    await page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    # Submit from the form: the strategies and their defaults come from the strategies dir.
    await page.locator("#f-strategy option[value=dash_long]").wait_for(state="attached")
    await page.select_option("#f-strategy", "dash_long")
    assert await page.input_value("#f-symbols") == "EURUSD"
    assert await page.input_value("#f-timeframes") == "1h"
    await page.click("#f-submit")
    row = page.locator("#jobs-table tbody tr").first
    await row.wait_for()
    job_id = await row.get_attribute("data-job")
    assert job_id and (await page.locator(".form-msg a").inner_text()) == job_id
    # Mark the row's nodes: updated in place they keep the mark, rebuilt they would lose it.
    await row.evaluate("el => { el.__kept = true; el.querySelector('.bar').__kept = true; }")
    await shoot(page, artifact("jobs-page-submitted.png"))

    # Check its row advances live: epoch x/y and the bar move while it runs.
    async def row_progress() -> tuple[int, float] | None:
        text = await row.locator(".progress-text").inner_text()
        found = re.search(r"epoch (\d+)/400", text)
        if found is None:
            return None
        return int(found.group(1)), await bar_width(row.locator("[role=progressbar]"))

    seen, status = await watch_while_running(
        row_progress, lambda: row.get_attribute("data-status"), distinct_firsts(3))
    epochs, widths = [e for e, _ in seen], [w for _, w in seen]
    assert len(set(epochs)) >= 3 and epochs == sorted(epochs), (seen, status)
    assert widths == sorted(widths) and widths[-1] > widths[0], seen
    assert "ETA" in await row.locator(".progress-text").inner_text()
    assert await page.locator(f'#jobs-table tr[data-job="{job_id}"]').evaluate(
        "el => el.__kept === true && el.querySelector('.bar').__kept === true")
    await shoot(page, artifact("jobs-page-running.png"))

    # On its page the curves grow epoch by epoch, and the bar moves.
    await row.locator("a.job-link").click()
    await page.locator("#chart-loss svg[data-points]").wait_for()
    # The event log grows by appending: the rows there now are still there, the same nodes.
    await page.locator("#event-log tbody tr[data-kind=epoch]").first.wait_for()
    marked = await page.locator("#event-log tbody tr").evaluate_all(
        "rows => { rows.forEach(r => { r.__kept = true; }); return rows.length; }")

    async def curve_and_bar() -> tuple[int, float]:
        points = await page.locator("#chart-loss svg").get_attribute("data-points")
        return int(points or 0), await bar_width(page.locator("#job-progress [role=progressbar]"))

    seen, status = await watch_while_running(
        curve_and_bar, lambda: page.locator("#job-status").get_attribute("data-status"),
        distinct_firsts(3))
    points = [p for p, _ in seen]
    assert len(set(points)) >= 3 and points == sorted(points), (seen, status)
    assert seen[-1][1] > seen[0][1], seen
    assert await page.locator("#chart-accuracy svg").get_attribute("data-points") != "0"
    kept, rows = await page.locator("#event-log tbody tr").evaluate_all(
        "rows => [rows.filter(r => r.__kept === true).length, rows.length]")
    assert kept == marked and rows > marked, (kept, marked, rows)
    await shoot(page, artifact("job-page-running.png"))

    # Cancel from the page: it asks first (changing one's mind sends nothing).
    cancel = page.locator(".job-head button.cancel")
    await cancel.click()
    dialog = page.locator("dialog#confirm")
    await dialog.wait_for(state="visible")
    assert job_id in await page.locator("#confirm-text").inner_text()
    await page.click("#confirm-no")
    await dialog.wait_for(state="hidden")
    assert not [r for r in requests if r.startswith("POST") and r.endswith("/cancel")]
    await cancel.click()
    await page.click("#confirm-yes")
    await page.locator("#job-status[data-status=cancelled]").wait_for(timeout=30_000)
    state = await wait_status(stack.client, job_id, TERMINAL)
    assert state["status"] == "cancelled" and state["cancel_requested_by"] == "dashboard"
    text = await page.locator("#reason").inner_text()
    assert "cancelled by dashboard" in text and "cancelled from the dashboard" in text
    kinds = await page.locator("#event-log tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)")
    assert kinds[:2] == ["train", "accepted"] and "cancel" in kinds and kinds[-1] == "cancelled"
    await shoot(page, artifact("job-page-cancelled.png"))

    # Live all along: one page load, one live feed, never a poll of the jobs list. Without a
    # token the browser's EventSource reads both streams.
    assert await page.evaluate("window.__sameDocument === true")
    assert sum(r.endswith("/api/v1/stream") for r in requests) == 1, requests
    assert f"GET eventsource {stack.url}/api/v1/stream" in requests, requests
    assert f"GET eventsource {stack.url}/api/v1/jobs/{job_id}/events" in requests, requests
    assert not [r for r in requests if re.search(r"/api/v1/jobs(\?|$)", r)], requests
    assert console.errors == []


async def test_a_completed_job_shows_its_confusion_matrix_model_and_report(
    stack: ApiStack, browser: BrowserContext, models_dir: Path
) -> None:
    job_id = (await stack.client.post("/api/v1/trainings", json={"strategy": "dash"})).json()[
        "job_id"]
    page, console, _ = await open_page(browser, f"{stack.url}/#/jobs/{job_id}")

    await page.locator("#job-status[data-status=completed]").wait_for(timeout=90_000)
    heatmap = page.locator("#confusion svg.tb-confusion")
    await heatmap.wait_for()
    assert await heatmap.get_attribute("data-cells") == "9"
    cells = [int(await c.get_attribute("data-count") or -1)
             for c in await heatmap.locator("rect.tb-cell").all()]
    test = (await stack.client.get(f"/api/v1/models/dash/{job_id}")).json()["metrics"]["test"]
    assert cells == [v for row in test["confusion_matrix"] for v in row]
    assert sum(1 for v in test["class_distribution"]["true"].values() if v) == 3
    assert await page.locator("#chart-loss svg").get_attribute("data-points") == "16"
    assert await page.locator("#chart-lr svg").get_attribute("data-points") == "8"
    accuracy = await page.locator("#test-metrics tr:has(th:text-is('accuracy')) td").inner_text()
    assert accuracy == f"{test['accuracy'] * 100:.1f}%"
    # The evaluation: macro F1 first; with a backtest, its equity curves and strategies.
    macro = await page.locator("#headline-macro-f1 .value").inner_text()
    assert macro == f"{test['macro_f1'] * 100:.1f}%"
    equity = (test.get("backtest") or {}).get("equity") or {}
    if equity.get("time"):
        chart = page.locator("#chart-equity svg.tb-chart")
        assert await chart.get_attribute("data-series") == str(len(equity) - 1)
        rows = await page.locator("#backtest-table tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.strategy)")
        assert rows[:2] == ["model", "buy_and_hold"]
        net = await page.locator("#headline-net-return .value").inner_text()
        assert net == f"{test['backtest']['strategies']['model']['net_return'] * 100:+.2f}%"
    assert (await page.locator("#model-path").inner_text()).endswith("dash/1h_v1")
    done = {t.split("\n")[0] for t in await page.locator("#phases li.done").all_inner_texts()}
    assert {"data", "indicators", "fuzzy", "features", "labels", "training", "evaluation",
            "save"} <= done
    kinds = await page.locator("#event-log tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)")
    assert kinds[:2] == ["train", "accepted"] and kinds[-1] == "completed"
    assert kinds.count("epoch") == 8
    assert await page.locator("#reason").is_hidden()
    await shoot(page, artifact("job-page.png"))
    # The download link serves the model archive.
    async with page.expect_download() as download_info:
        await page.click("#model-download")
    assert (await download_info.value).suggested_filename == "dash-1h_v1.tar.gz"

    # Phone width: one column, no sideways scrolling.
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await no_horizontal_scroll(page)
    await shoot(page, artifact("job-page-phone.png"))

    # The jobs table (no reload): completed, with its best validation accuracy.
    await page.click("nav.tabs a[data-tab=jobs]")
    done_row = page.locator(f'#jobs-table tr[data-job="{job_id}"][data-status=completed]')
    await done_row.wait_for()
    assert re.fullmatch(r"\d+\.\d%", await done_row.locator("td.best").inner_text())
    assert await no_horizontal_scroll(page)
    await shoot(page, artifact("jobs-page-phone.png"))
    await page.set_viewport_size({"width": 1280, "height": 800})
    await shoot(page, artifact("jobs-page.png"))

    # The models page lists it per strategy, with its manifest on demand.
    await page.click("nav.tabs a[data-tab=models]")
    model_row = page.locator('#models tr[data-model="dash/1h_v1"]')
    await model_row.wait_for()
    await model_row.get_by_role("button", name="Manifest").click()
    await page.locator(".manifest-row td.mono:text-is('model.safetensors')").wait_for()
    await shoot(page, artifact("models-page.png"))
    assert console.errors == []

    # The model's report.html, from the backend and straight from the model's directory.
    for url in (f"{stack.url}/reports/dash/{job_id}",
                (models_dir / "dash" / "1h_v1" / "report.html").as_uri()):
        report = await browser.new_page()
        report_console = Console()
        report_console.watch(report)
        await report.goto(url)
        await report.locator("#confusion svg.tb-confusion").wait_for()
        assert await report.locator("#chart-loss svg").get_attribute("data-points") == "16"
        assert await report.locator("#version").inner_text() == "1h_v1"
        assert report_console.errors == [], url
        if url.startswith("file:"):
            await shoot(report, artifact("model-report.png"))
        await report.close()


async def test_workers_cancel_from_the_table_and_a_rejection_in_plain_words(
    stack: ApiStack, browser: BrowserContext
) -> None:
    rejected = (await stack.client.post("/api/v1/trainings", json={
        "strategy": "no_such_strategy", "symbols": ["EURUSD"], "timeframes": ["1h"]})).json()
    assert (await wait_status(stack.client, rejected["job_id"], TERMINAL))["status"] == "rejected"

    page, console, _ = await open_page(browser, stack.url + "/#/workers")
    worker = page.locator("#workers-table tbody tr").first
    await worker.wait_for()
    text = await worker.inner_text()
    assert "container" in text and "cpu" in text and "idle" in text
    assert await page.locator("#nav-workers").inner_text() == "1"
    await shoot(page, artifact("workers-page.png"))

    # The jobs table's own cancel button, filtered to running jobs.
    job_id = (await stack.client.post("/api/v1/trainings",
                                      json={"strategy": "dash_long"})).json()["job_id"]
    await page.click("nav.tabs a[data-tab=jobs]")
    await page.locator(".filters button[data-status=running]").click()
    row = page.locator(f'#jobs-table tr[data-job="{job_id}"][data-status=running]')
    await row.wait_for(timeout=30_000)
    await row.locator("button.cancel").click()
    await page.click("#confirm-yes")
    await row.wait_for(state="detached", timeout=30_000)  # it leaves the "running" filter
    await page.locator(".filters button[data-status=cancelled]").click()
    await page.locator(f'#jobs-table tr[data-job="{job_id}"][data-status=cancelled]').wait_for()
    assert (await wait_status(stack.client, job_id, TERMINAL))["status"] == "cancelled"

    # A rejected job says why, in plain words.
    await page.goto(f"{stack.url}/#/jobs/{rejected['job_id']}")
    reason = page.locator("#reason")
    await reason.wait_for()
    assert "No trainer knows this strategy." in await reason.inner_text()
    assert "no_such_strategy" in await reason.inner_text()
    assert console.errors == []


async def test_with_api_auth_on_the_page_asks_for_the_token_before_writing(
    config: Any, dash_workspace: Any, models_dir: Path, browser: BrowserContext
) -> None:
    from services.backend.security import ApiSecurity

    token = "dashboard-test-token-0123456789"
    async with api_stack(config, dash_workspace, models_dir, trainer=False,
                         security=ApiSecurity(auth="token", token=token)) as stack:
        page, console, _ = await open_page(browser, stack.url + "/")
        await page.locator("#f-strategy option[value=dash_quick]").wait_for(state="attached")
        await page.select_option("#f-strategy", "dash_quick")
        # Reads are open; the first write is refused and the page asks for the token.
        await page.click("#f-submit")
        await page.locator("#token-input").wait_for()
        assert "Not submitted" in await page.locator(".form-msg.error").inner_text()
        await page.fill("#token-input", token)
        await page.click("#token-form button")
        await page.locator("#banner").wait_for(state="hidden")
        await page.click("#f-submit")
        row = page.locator("#jobs-table tbody tr[data-status=queued]")
        await row.wait_for()  # no trainer here: it waits in the queue
        job_id = await row.get_attribute("data-job")
        streams: list[tuple[str, str | None]] = []

        def on_request(request: Any) -> None:
            if (request.url.endswith(f"/{job_id}/events")
                    and "text/event-stream" in request.headers.get("accept", "")):
                streams.append((request.resource_type, request.headers.get("authorization")))

        page.on("request", on_request)
        # Its page follows it with the token (fetch, not EventSource, which cannot send it).
        await row.locator("a.job-link").click()
        await page.locator("#job-status[data-status=queued]").wait_for()
        await page.locator("#event-log tbody tr[data-kind=train]").wait_for()
        assert streams == [("fetch", f"Bearer {token}")], streams
        # The token is kept (this browser only) and used for the cancel as well; the job's
        # stream brings the cancel: the state it sends is the projection's, who asked included.
        await page.locator(".job-head button.cancel").click()
        await page.click("#confirm-yes")
        await page.locator("#job-status[data-status=cancelled]").wait_for()
        assert "cancelled by dashboard" in await page.locator("#reason").inner_text()
        kinds = await page.locator("#event-log tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.kind)")
        assert kinds == ["train", "cancel"]
        await page.click("nav.tabs a[data-tab=jobs]")
        await page.locator(f'#jobs-table tr[data-job="{job_id}"][data-status=cancelled]').wait_for()
        # The 401 itself is a failed resource load, which Chromium logs; nothing else.
        assert [e for e in console.errors if "401" not in e] == []
