"""pytest fixtures for a real nats-server (registered for all tests by tests/conftest.py).

- `nats_server`: a fresh server per test (kill/restart freely).
- `nats_server_module`: one server shared by a test module; tests isolate themselves with a
  unique subject prefix (see `unique_prefix`), which also names the stream and buckets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.nats_server import NatsServer

_counter = itertools.count(1)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nats_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats") / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique_prefix() -> str:
    """A subject prefix no other test in this session uses."""
    return f"t{next(_counter)}"
