"""Fixtures for tests against a real nats-server: a connected, set-up `Bus`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.events.bus import Bus
from tests.harness.bus import bus_config, open_bus
from tests.harness.nats_server import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A bus on a fresh server, stream/consumers/buckets ensured."""
    async with open_bus(bus_config(nats_server)) as connected:
        yield connected
