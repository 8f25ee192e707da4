"""Fixtures for tests against a real nats-server: a connected, set-up `Bus`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from libs.events.bus import Bus, connect
from libs.events.config import BusConfig
from libs.events.setup import ensure_jetstream
from tests.harness.nats_server import NatsServer

T = TypeVar("T")


def bus_config(server: NatsServer, prefix: str = "trainbus", **overrides: object) -> BusConfig:
    values: dict[str, object] = {
        "urls": (server.url,),
        "prefix": prefix,
        "publish_retry_for": 20.0,
        "publish_timeout": 2.0,
        # The server reserves max_bytes per stream; many test streams share one server.
        "stream_max_bytes": 64 * 1024 * 1024,
    }
    values.update(overrides)
    return BusConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A bus on a fresh server, stream/consumers/buckets ensured."""
    connected = await connect(bus_config(nats_server))
    await ensure_jetstream(connected)
    try:
        yield connected
    finally:
        await connected.close()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `accept(result)`; fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(interval)
