"""Fixtures for the API tests: one nats-server per module, a workspace per session, and the
real app + a real container trainer per test (isolated by a unique subject prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.events.config import BusConfig
from tests.backend.stack import ApiStack, Workspace, api_stack, make_workspace
from tests.events.conftest import bus_config
from tests.harness.nats_server import NatsServer


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture
def config(nats_server_module: NatsServer, unique_prefix: str) -> BusConfig:
    return bus_config(nats_server_module, unique_prefix, publish_retry_for=3.0)


@pytest.fixture
async def stack(config: BusConfig, workspace: Workspace, tmp_path: Path
                ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, workspace, tmp_path / "models") as running:
        yield running
