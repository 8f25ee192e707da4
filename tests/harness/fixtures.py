"""pytest fixtures shared by the test folders (registered for all tests by tests/conftest.py).

- `nats_server`: a fresh server per test (kill/restart freely).
- `nats_server_module`: one server shared by a test module; tests isolate themselves with a
  unique subject prefix (see `unique_prefix`), which also names the stream and buckets.
- `workspace`, `config`, `stack`: the API tests' data and strategies (session), a bus config
  of the test's own prefix on the module's server, and the real backend with a real
  container trainer on it (tests/harness/api.py). A folder may override any of them.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness.bus import bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.workspace import Workspace, api_workspace

if TYPE_CHECKING:
    from libs.events.config import BusConfig
    from tests.harness.api import ApiStack

_counter = itertools.count(1)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "jetstream") as server:
        yield server


@pytest.fixture(scope="module")
def nats_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats") / "jetstream") as server:
        yield server


@pytest.fixture
def unique_prefix() -> str:
    """A subject prefix no other test in this session uses."""
    return f"t{next(_counter)}"


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return api_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture
def config(nats_server_module: NatsServer, unique_prefix: str) -> BusConfig:
    """Publishes give up after 3 s: an API request during an outage answers 503 quickly."""
    return bus_config(nats_server_module, unique_prefix, publish_retry_for=3.0)


@pytest.fixture
async def stack(config: BusConfig, workspace: Workspace, tmp_path: Path
                ) -> AsyncIterator[ApiStack]:
    from tests.harness.api import api_stack

    async with api_stack(config, workspace, tmp_path / "models") as running:
        yield running
