"""Fixtures for tests against a real nats-server: a connected, set-up `Bus`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from libs.events.bus import Bus
from tests.harness.bus import bus_config, open_bus
from tests.harness.nats_server import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A bus on a fresh server, stream/consumers/buckets ensured."""
    async with open_bus(bus_config(nats_server)) as connected:
        yield connected


@pytest.fixture
async def forger(nats_server_module: NatsServer) -> AsyncIterator[Client]:
    """An anonymous client: a plain connection of its own, no bus, no credentials, no key of
    a trainer's (what the forgery tests publish with)."""
    client = await nats.connect(nats_server_module.url)
    try:
        yield client
    finally:
        await client.close()
