"""A `BusConfig` for a test server, and a connected, set-up `Bus` for the length of a block."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from libs.events.bus import Bus, connect
from libs.events.config import BusConfig
from libs.events.log import LogMessage, read_log
from libs.events.setup import ensure_jetstream
from tests.harness.nats_server import NatsServer

# The server reserves max_bytes per stream; many test streams share one server.
STREAM_MAX_BYTES = 64 * 1024 * 1024
PUBLISH_RETRY_FOR = 20.0
# Tests around trainers (in-process or real processes) give publishes longer: a trainer must
# outlast a server restarted under it mid-job.
TRAINER_PUBLISH_RETRY_FOR = 30.0


def bus_config(
    server: NatsServer,
    prefix: str = "trainbus",
    *,
    publish_retry_for: float = PUBLISH_RETRY_FOR,
    **overrides: Any,
) -> BusConfig:
    """Connect to `server` with subject prefix `prefix` (which also names the stream and the
    buckets); `overrides` are further `BusConfig` fields."""
    values: dict[str, Any] = {
        "urls": (server.url,),
        "prefix": prefix,
        "publish_retry_for": publish_retry_for,
        "publish_timeout": 2.0,
        "stream_max_bytes": STREAM_MAX_BYTES,
    }
    values.update(overrides)
    return BusConfig(**values)


def trainer_bus_config(server: NatsServer, prefix: str = "trainbus", **overrides: Any
                       ) -> BusConfig:
    """`bus_config` with publishes retrying for `TRAINER_PUBLISH_RETRY_FOR`."""
    return bus_config(server, prefix, publish_retry_for=TRAINER_PUBLISH_RETRY_FOR, **overrides)


@contextlib.asynccontextmanager
async def open_bus(config: BusConfig) -> AsyncIterator[Bus]:
    """A connected bus with its stream, consumers and buckets ensured; closed at the end."""
    bus = await connect(config)
    try:
        await ensure_jetstream(bus)
        yield bus
    finally:
        await bus.close()


async def log_messages(bus: Bus) -> list[LogMessage]:
    """Every message of the log, in order, as the fold sees them."""
    messages: list[LogMessage] = []
    await read_log(bus.js, bus.names, messages.append)
    return messages
