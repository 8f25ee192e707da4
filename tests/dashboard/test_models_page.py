"""The dashboard's models page in a real browser: the leaderboard (sorted by the API), the
aliases as badges (an expired one marked), promoting and demoting from a model's row, and the
comparison of two models with the best value of each row highlighted; against the real app, a
real container trainer, real trained models and a real nats-server.

Skipped, with the reason, where Chromium or Playwright is missing (as tests/dashboard/
test_browser.py). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.dashboard.stack import Console, artifact, browser_missing
from tests.harness.api import ApiStack, api_stack
from tests.harness.polling import TERMINAL, wait_status
from tests.harness.strategies import example_variant
from tests.harness.workspace import Workspace

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

MISSING = browser_missing()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@pytest.fixture
def walk_forward_strategy(dash_workspace: Workspace) -> Iterator[str]:
    """`dash_wf`: the quick dashboard strategy with a 2-fold walk-forward, in the shared
    strategies dir for this test only (the models page shows its walk-forward mean)."""
    path = dash_workspace.strategies_dir / "dash_wf.yaml"
    path.write_text(example_variant(
        "dash_wf", {"early_stopping": None, "epochs": 3, "batch_size": 64,
                    "labels": {"source": "zigzag", "zigzag_threshold": 0.01},
                    "walk_forward": {"folds": 2, "mode": "expanding"}},
        description="The example strategy, 3 epochs, 2-fold walk-forward (dashboard tests)."))
    try:
        yield "dash_wf"
    finally:
        path.unlink()


async def train(client: httpx.AsyncClient, runs: list[tuple[str, int]],
                headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Submit one job per (strategy, seed) and wait for each to complete."""
    ids = []
    for strategy, seed in runs:
        accepted = await client.post("/api/v1/trainings", headers=headers,
                                     json={"strategy": strategy, "seed": seed})
        assert accepted.status_code == 202, accepted.text
        ids.append(accepted.json()["job_id"])
    states = [await wait_status(client, job_id, TERMINAL, timeout=180) for job_id in ids]
    assert [s["status"] for s in states] == ["completed"] * len(runs), states
    return states


async def open_models(browser: BrowserContext, url: str) -> tuple[Page, Console]:
    page = await browser.new_page()
    console = Console()
    console.watch(page)
    await page.goto(url)
    await page.locator("#live[data-state=live]").wait_for(timeout=15_000)
    await page.locator("#models-table[data-details=loaded]").wait_for(timeout=15_000)
    return page, console


async def shown_models(page: Page) -> list[str]:
    return await page.locator("#models-table tbody.model > tr[data-model]").evaluate_all(
        "rows => rows.map(r => r.dataset.model)")


def names(models: list[dict[str, Any]]) -> list[str]:
    return [f"{m['strategy']}/{m['version']}" for m in models]


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


async def set_alias(page: Page, model: str, alias: str, expires: str = "") -> None:
    """Fill the model's promote form and submit it (the panel opens when it is closed)."""
    panel = page.locator(f'tr.promote-row[data-promote="{model}"]')
    if not await panel.count():
        await page.locator(f'tr[data-model="{model}"] button.promote-toggle').click()
    await panel.locator("input.alias-name").fill(alias)
    await panel.locator("input.alias-expiry").fill(expires)
    await panel.locator("button.alias-set").click()


async def test_the_leaderboard_lists_sorts_promotes_and_compares_trained_models(
    stack: ApiStack, browser: BrowserContext, walk_forward_strategy: str
) -> None:
    await train(stack.client, [("dash_quick", 0), ("dash", 1), (walk_forward_strategy, 2),
                               (walk_forward_strategy, 3)])
    listed = (await stack.client.get("/api/v1/models")).json()
    assert sorted(names(listed)) == ["dash/1h_v1", "dash_quick/1h_v1", "dash_wf/1h_v1",
                                     "dash_wf/1h_v2"]
    wf_means: dict[str, float] = {}

    page, console = await open_models(browser, stack.url + "/#/models")

    # The leaderboard: both models, newest first as the API lists them, with their headline
    # numbers and what they were trained on (from each model's detail).
    assert await shown_models(page) == names(listed)
    for model in listed:
        name = f"{model['strategy']}/{model['version']}"
        row = page.locator(f'tr[data-model="{name}"]')
        test = model["test_metrics"]
        assert await row.locator("td[data-metric=macro_f1]").inner_text() == pct(test["macro_f1"])
        assert await row.locator("td[data-metric=accuracy]").inner_text() == pct(test["accuracy"])
        net = test["backtest_net_return"]
        assert await row.locator("td[data-metric=backtest_net_return]").inner_text() \
            == f"{net * 100:+.2f}%"
        detail = (await stack.client.get(
            f"/api/v1/models/{model['strategy']}/{model['version']}")).json()
        meta = detail["metadata"]
        assert await row.locator("td.trained .seed").inner_text() == str(meta["seed"])
        assert await row.locator("td.trained .hash").inner_text() == meta["strategy_hash"][:12]
        ranges = list(meta["data_window"]["time_ranges"].values())
        window = f"{min(r[0] for r in ranges)[:10]} .. {max(r[1] for r in ranges)[:10]}"
        assert await row.locator("td.trained .window").inner_text() == window
        assert await row.locator(".badge.alias").count() == 0
        # The walk-forward mean ± std of the folds' macro F1, for the models that have one.
        summary = (detail["metrics"].get("walk_forward") or {}).get("summary") or {}
        cell = await row.locator("td[data-metric=walk_forward_macro_f1]").inner_text()
        if model["strategy"] == walk_forward_strategy:
            mean, std = summary["macro_f1"]["mean"], summary["macro_f1"]["std"]
            assert cell == f"{pct(mean)} ± {std * 100:.1f}"
            wf_means[name] = mean
        else:
            assert cell == "–"
    assert len(wf_means) == 2
    await shoot(page, "models-leaderboard.png")

    # Sorting by a headline metric asks the API, descending then ascending.
    for key in ("accuracy", "backtest_sharpe", "macro_f1"):
        for order in ("desc", "asc"):
            await page.locator(f"th button.sort[data-sort={key}]").click()
            header = page.locator(f"th[data-sort={key}]")
            await page.locator(f"th[data-sort={key}][aria-sort={order}ending]").wait_for()
            expected = names((await stack.client.get(
                "/api/v1/models", params={"sort": key, "order": order})).json())
            await page.wait_for_function(
                "want => Array.from(document.querySelectorAll("
                "'#models-table tbody.model > tr[data-model]')).map(r => r.dataset.model)"
                ".join() === want", arg=",".join(expected))
            assert await header.get_attribute("aria-sort") == f"{order}ending"
            assert page.url.endswith(f"#/models?sort={key}&order={order}")

    # The walk-forward mean is no sort key of the API: the page sorts by it, the models without
    # one last.
    without = [n for n in names(listed) if n not in wf_means]
    for order in ("desc", "asc"):
        await page.locator("th button.sort[data-sort=walk_forward_macro_f1]").click()
        await page.locator(
            f"th[data-sort=walk_forward_macro_f1][aria-sort={order}ending]").wait_for()
        ranked = sorted(wf_means, key=wf_means.__getitem__, reverse=order == "desc")
        await page.wait_for_function(
            "want => Array.from(document.querySelectorAll("
            "'#models-table tbody.model > tr[data-model]')).map(r => r.dataset.model)"
            ".join() === want", arg=",".join(ranked + without))
    await page.locator("th button.sort[data-sort=macro_f1]").click()
    await page.locator("th button.sort[data-sort=macro_f1]").click()

    # Promote from the row: the badge shows, and the API has the alias, set by the dashboard.
    await set_alias(page, "dash/1h_v1", "champion")
    await page.locator('tr[data-model="dash/1h_v1"] .badge.alias[data-alias=champion]').wait_for()
    aliases = (await stack.client.get("/api/v1/models/dash/aliases")).json()
    assert [(a["alias"], a["version"], a["set_by"], a["expires_at"]) for a in aliases] == [
        ("champion", "1h_v1", "dashboard", None)]
    panel = page.locator('tr.promote-row[data-promote="dash/1h_v1"]')
    assert "dash@champion now points at 1h_v1" in await panel.locator(".alias-msg").inner_text()
    assert await panel.locator("li[data-alias=champion] .badge.alias").count() == 1

    # A refusal shows the API's own problem detail.
    await set_alias(page, "dash/1h_v1", "Bad Name")
    refused = await stack.client.put("/api/v1/models/dash/aliases/Bad Name",
                                     json={"version": "1h_v1"})
    assert refused.status_code == 422
    error = panel.locator(".alias-msg.error")
    await error.wait_for()
    assert refused.json()["detail"] in await error.inner_text()
    # A duration the page cannot read is said before anything is sent.
    await set_alias(page, "dash/1h_v1", "challenger", expires="soon")
    assert "Expires after" in await error.inner_text()
    assert len((await stack.client.get("/api/v1/models/dash/aliases")).json()) == 1

    # An alias with an expiry: its badge turns "expired" when the time comes (on the page's
    # clock, no request), and a fresh page shows it expired too.
    await set_alias(page, "dash_quick/1h_v1", "candidate", expires="3s")
    badge = page.locator('tr[data-model="dash_quick/1h_v1"] .badge.alias[data-alias=candidate]')
    await badge.wait_for()
    record = (await stack.client.get("/api/v1/models/dash_quick/aliases")).json()[0]
    assert record["alias"] == "candidate" and record["expires_at"] is not None
    assert abs(record["expires_at"] - record["set_at"] - 3) < 0.01
    await page.locator('tr[data-model="dash_quick/1h_v1"] '
                       '.badge.alias[data-alias=candidate][data-expired=true]').wait_for(
        timeout=10_000)
    assert "expired" in (await badge.get_attribute("class") or "")
    assert "expired" in await badge.inner_text()
    champion = page.locator('tr[data-model="dash/1h_v1"] .badge.alias[data-alias=champion]')
    assert await champion.get_attribute("data-expired") == "false"
    await shoot(page, "models-promote.png")
    await page.reload()
    await page.locator("#models-table[data-details=loaded]").wait_for()
    await page.locator('tr[data-model="dash_quick/1h_v1"] '
                       '.badge.alias.expired[data-alias=candidate]').wait_for()
    # The order survives the reload (it is in the address).
    assert page.url.endswith("#/models?sort=macro_f1&order=asc")

    # Remove it from the row, after saying yes.
    await page.locator('tr[data-model="dash_quick/1h_v1"] button.promote-toggle').click()
    quick = page.locator('tr.promote-row[data-promote="dash_quick/1h_v1"]')
    await quick.locator("button.alias-remove[data-alias=candidate]").click()
    await page.locator("dialog#confirm").wait_for(state="visible")
    assert "dash_quick@candidate" in await page.locator("#confirm-text").inner_text()
    await page.click("#confirm-yes")
    await badge.wait_for(state="detached")
    assert (await stack.client.get("/api/v1/models/dash_quick/aliases")).json() == []
    assert "Removed dash_quick@candidate" in await quick.locator(".alias-msg").inner_text()

    # Compare: tick both, open the comparison: one column per model, the API's best of each
    # row highlighted.
    compare = page.locator("#compare-open")
    assert await compare.is_disabled()
    await page.locator('tr[data-model="dash/1h_v1"] input.pick').check()
    assert await compare.is_disabled()  # one model is no comparison
    await page.locator('tr[data-model="dash_quick/1h_v1"] input.pick').check()
    shown = [n for n in await shown_models(page) if n in ("dash/1h_v1", "dash_quick/1h_v1")]
    assert await compare.is_enabled()
    assert await compare.inner_text() == "Compare 2 models"
    await compare.click()
    table = page.locator("#compare-table")
    await table.wait_for()
    refs = ",".join(shown)
    expected = (await stack.client.get("/api/v1/models/compare", params={"models": refs})).json()
    heads = await table.locator("thead th.model-col").evaluate_all(
        "cells => cells.map(c => c.dataset.model)")
    assert heads == expected["models"] == shown
    highlighted = 0
    for row in expected["rows"]:
        tr = table.locator(f'tbody tr[data-key="{row["key"]}"]')
        best = await tr.locator("td").evaluate_all(
            "cells => cells.flatMap((c, i) => c.classList.contains('best') ? [i] : [])")
        assert best == row["best"], row
        highlighted += bool(best)
        if row["better"] is None:
            assert best == []
    assert highlighted >= 5, expected["rows"]
    macro = next(r for r in expected["rows"] if r["key"] == "macro_f1")
    best_cell = table.locator('tbody tr[data-key="macro_f1"] td.best')
    assert await best_cell.get_attribute("data-model") == shown[macro["best"][0]]
    assert await best_cell.inner_text() == f"{max(macro['values']) * 100:.2f}%"
    assert "champion" in await table.locator('tbody tr[data-key="aliases"]').inner_text()
    # Each model's equity curve on one chart, with the buy & hold of their common bars.
    details = [(await stack.client.get(f"/api/v1/models/{name}")).json() for name in shown]
    if all((d["metrics"]["test"].get("backtest") or {}).get("equity") for d in details):
        chart = page.locator("#compare-equity svg.tb-chart")
        await chart.wait_for()
        labels = await chart.locator("g.tb-series").evaluate_all(
            "groups => groups.map(g => g.dataset.label)")
        assert labels == [*shown, "buy & hold"]
        for name, detail in zip(shown, details, strict=True):
            curve = detail["metrics"]["test"]["backtest"]["equity"]["model"]
            bars = sum(v is not None for v in curve)
            assert await chart.locator(f'g.tb-series[data-label="{name}"]').get_attribute(
                "data-points") == str(bars)
    await shoot(page, "models-compare.png")
    assert page.url.startswith(f"{stack.url}/#/models/compare?models=")

    # Back on the leaderboard, at phone width: no sideways scrolling of the page.
    await page.click("nav.crumbs a")
    await page.locator("#models-table[data-details=loaded]").wait_for()
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # Phones have no table head: the sorts are a menu there.
    await page.select_option("#models-sort", "backtest_net_return:desc")
    expected = names((await stack.client.get(
        "/api/v1/models", params={"sort": "backtest_net_return", "order": "desc"})).json())
    await page.wait_for_function(
        "want => Array.from(document.querySelectorAll("
        "'#models-table tbody.model > tr[data-model]')).map(r => r.dataset.model)"
        ".join() === want", arg=",".join(expected))
    await shoot(page, "models-leaderboard-phone.png")
    # The refused write is a failed resource load, which Chromium logs; nothing else.
    assert [e for e in console.errors if "422" not in e or "Bad%20Name" not in e] == []


async def test_a_comparison_of_unknown_models_says_why(
    config: Any, dash_workspace: Any, models_dir: Path, browser: BrowserContext
) -> None:
    async with api_stack(config, dash_workspace, models_dir, trainer=False) as stack:
        page = await browser.new_page()
        console = Console()
        console.watch(page)
        await page.goto(stack.url + "/#/models/compare?models=dash/1h_v7,dash@nobody")
        error = page.locator("#compare-error")
        await error.wait_for()
        answer = await stack.client.get("/api/v1/models/compare",
                                        params={"models": "dash/1h_v7,dash@nobody"})
        assert answer.status_code == 404
        assert answer.json()["detail"] in await error.inner_text()
        # One model alone is no comparison: the page says so without asking.
        await page.goto(stack.url + "/#/models/compare?models=dash/1h_v1")
        await page.locator("#compare-error:has-text('two or more')").wait_for()
        # The failed request is a failed resource load, which Chromium logs; nothing else.
        assert [e for e in console.errors if "404" not in e] == []


async def test_with_api_auth_on_promoting_asks_for_the_token(
    config: Any, dash_workspace: Any, models_dir: Path, browser: BrowserContext
) -> None:
    from services.backend.security import ApiSecurity

    token = "dashboard-models-token-0123456789"
    async with api_stack(config, dash_workspace, models_dir,
                         security=ApiSecurity(auth="token", token=token)) as stack:
        await train(stack.client, [("dash_quick", 3)],
                    headers={"Authorization": f"Bearer {token}"})
        page, console = await open_models(browser, stack.url + "/#/models")
        # Reads are open; the write is refused and the page asks for the token.
        await set_alias(page, "dash_quick/1h_v1", "champion")
        await page.locator("#token-input").wait_for()
        panel = page.locator('tr.promote-row[data-promote="dash_quick/1h_v1"]')
        assert "Not set" in await panel.locator(".alias-msg.error").inner_text()
        assert (await stack.client.get("/api/v1/models/dash_quick/aliases")).json() == []
        await page.fill("#token-input", token)
        await page.click("#token-form button")
        await page.locator("#banner").wait_for(state="hidden")
        # With the token kept in this browser, setting and removing work.
        await panel.locator("button.alias-set").click()
        badge = page.locator('tr[data-model="dash_quick/1h_v1"] .badge.alias[data-alias=champion]')
        await badge.wait_for()
        aliases = (await stack.client.get("/api/v1/models/dash_quick/aliases")).json()
        assert [(a["alias"], a["version"]) for a in aliases] == [("champion", "1h_v1")]
        await panel.locator("button.alias-remove[data-alias=champion]").click()
        await page.click("#confirm-yes")
        await badge.wait_for(state="detached")
        assert (await stack.client.get("/api/v1/models/dash_quick/aliases")).json() == []
        assert [e for e in console.errors if "401" not in e] == []


async def shoot(page: Page, name: str) -> None:
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=artifact(name), full_page=True)
