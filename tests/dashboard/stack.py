"""Helpers of the browser tests: the system Chromium driven by Playwright, with every console
error and page error collected, and the strategies the dashboard tests train."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.strategies import example_variant
from tests.harness.workspace import Workspace, write_workspace

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

CHROMIUM = Path(os.environ.get("TRAINBUS_CHROMIUM", "/usr/bin/chromium"))
# Offline, quiet, reproducible: no first-run UI, no network of its own, a fresh profile.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: install Debian's chromium (python3 dev.py test "
                "does it with apt-get)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e .[dev])"
    return None


DASH_BARS = 4000  # with zigzag 1%: all three classes in the test slice


def make_dashboard_workspace(base: Path) -> Workspace:
    """EURUSD 1h sample data and three variants of the example strategy, without early
    stopping: `dash` (8 epochs), `dash_quick` (3 epochs) and `dash_long` (400 epochs: it runs
    until the test has watched it move, then the test cancels it)."""
    strategies = {
        name: example_variant(
            name, {"early_stopping": None, "epochs": epochs, "batch_size": batch,
                   "labels": {"source": "zigzag", "zigzag_threshold": 0.01}},
            description=f"The example strategy, {epochs} epochs (dashboard tests).")
        for name, epochs, batch in (("dash", 8, 64), ("dash_quick", 3, 64),
                                    ("dash_long", 400, 64))
    }
    return write_workspace(base / "data", base / "strategies", symbols=["EURUSD"],
                           bars=DASH_BARS, seed=42, strategies=strategies)


@dataclass
class Console:
    """What the page said on its console (errors) and threw (page errors)."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_console(message: Any) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text} at {message.location}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """The system Chromium, headless, with a fresh profile (a persistent context: Playwright
    takes the user data dir itself). Pages open at 1280x800."""
    from playwright.async_api import async_playwright

    profile = tmp_path / "chromium-profile"
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800}, accept_downloads=True,
        )
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


def artifact(name: str) -> Path:
    """Where a screenshot goes (tests/artifacts/, ignored by git; kept after the run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
