"""The dashboard's sweeps page in a real browser: the list of sweeps, and one sweep's
leaderboard following the sweep live (opened while it runs, it shows the sweep finished
without a reload), ranked as the API ranks it; against the real app, a real container trainer,
the real coordinator (`trainbus sweep`) and a real nats-server.

Skipped, with the reason, where Chromium or Playwright is missing (tests/dashboard/stack.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from libs.events.config import BusConfig
from libs.events.sweep_log import read_sweep
from tests.cli.conftest import cli_env, start_cli
from tests.dashboard.stack import Console, artifact, browser_missing, chromium
from tests.harness.api import ApiStack, api_stack
from tests.harness.bus import open_bus
from tests.harness.polling import wait_until
from tests.harness.strategies import strategy_yaml
from tests.harness.workspace import Workspace, write_workspace

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

MISSING = browser_missing()
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("sweep-dash")
    return write_workspace(root / "data", root / "strategies", symbols=("EURUSD", "GBPUSD"),
                           bars=1500, seed=7, strategies={
        "tiny": strategy_yaml("tiny", epochs=20, batch_size=16)})


@pytest.fixture
async def stack(config: BusConfig, workspace: Workspace, tmp_path: Path
                ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, workspace, tmp_path / "models") as running:
        yield running


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path) as context:
        yield context


async def test_the_sweeps_page_follows_a_sweep_live(
    stack: ApiStack, config: BusConfig, workspace: Workspace, tmp_path: Path,
    browser: BrowserContext,
) -> None:
    env = cli_env(config, workspace, tmp_path / "models")
    async with start_cli("sweep", "tiny", "--param",
                         "training.learning_rate=choice(0.02,0.005,0.01)", "--trials", "3",
                         "--objective", "test.accuracy", "--sampler", "grid", "--seed", "1",
                         "--pool", "any", env=env) as cli, open_bus(config) as bus:
        sweep_id = (await cli.read_until(b"\n")).decode().split()[1]

        async def asked() -> bool:
            return len((await read_sweep(bus, sweep_id)).trials) >= 1

        await wait_until(asked, "the first trial asked", timeout=60)
        page = await browser.new_page()
        console = Console()
        console.watch(page)
        await page.goto(f"{stack.url}/#/sweeps")
        row = page.locator(f"#sweeps-table tr[data-sweep='{sweep_id}']")
        await row.wait_for(timeout=15_000)
        await row.locator("a").click()
        # Opened while it runs: the page polls, so it shows the sweep finished by itself.
        await page.locator("#sweep .badge.s-finished").wait_for(timeout=120_000)
        assert (await cli.result(timeout=60)).rc == 0

    board = (await stack.client.get(f"/api/v1/sweeps/{sweep_id}")).json()
    expected = [str(t["n"]) for t in board["trials"]]
    shown = await page.locator("#sweep-board tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")
    assert shown == expected
    first = page.locator("#sweep-board tbody tr").first
    assert (await first.locator("td[data-label=Rank]").inner_text()).strip() == "1"
    assert "3 of 3 trials told" in await page.locator("#sweep-progress").inner_text()
    assert "training.learning_rate" in await page.locator("#sweep-params").inner_text()
    await page.screenshot(path=str(artifact("sweep-leaderboard.png")), full_page=True)
    assert console.errors == []
