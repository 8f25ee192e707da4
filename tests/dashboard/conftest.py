"""Fixtures of the dashboard tests: the real backend and a real container trainer on a real
nats-server (tests/harness/api.py), sample data sized for the dashboard, and the browser.
`config` is the shared one (tests/harness/fixtures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from libs.events.config import BusConfig
from tests.dashboard.stack import chromium, make_dashboard_workspace
from tests.harness.api import ApiStack, api_stack
from tests.harness.workspace import Workspace

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext


@pytest.fixture(scope="session")
def dash_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_dashboard_workspace(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
async def stack(config: BusConfig, dash_workspace: Workspace, models_dir: Path
                ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, dash_workspace, models_dir) as running:
        yield running


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium context (the tests that use it skip where Chromium is missing)."""
    async with chromium(tmp_path) as context:
        yield context
