"""Fixtures of the dashboard tests: the real backend and a real container trainer on a real
nats-server (tests/backend/stack.py), sample data sized for the dashboard, and the browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.events.config import BusConfig
from tests.backend.stack import ApiStack, Workspace, api_stack
from tests.dashboard.stack import make_dashboard_workspace
from tests.events.conftest import bus_config
from tests.harness.nats_server import NatsServer


@pytest.fixture(scope="session")
def dash_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_dashboard_workspace(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture
def config(nats_server_module: NatsServer, unique_prefix: str) -> BusConfig:
    return bus_config(nats_server_module, unique_prefix, publish_retry_for=3.0)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
async def stack(config: BusConfig, dash_workspace: Workspace, models_dir: Path
                ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, dash_workspace, models_dir) as running:
        yield running
