"""What the backend holds while it runs: the NATS connection and (by default) the projector.

The HTTP API must answer even when NATS is down (503, at once), so the connection is not a
precondition of starting: `start` tries once, and when NATS is not there yet a background task
keeps trying every few seconds (compose starts the backend beside NATS, not strictly after).
Once connected, nats-py reconnects for ever by itself; `require_bus` refuses while it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from libs.events.bus import Bus, connect
from libs.events.config import BusConfig
from libs.events.durability import DurabilityReport, preflight
from libs.events.errors import BusUnavailable, SetupError, TrainbusBusError
from libs.events.projector import Projector
from libs.events.setup import ensure_jetstream, scale_replicas
from services.backend.errors import Unavailable
from services.backend.settings import BackendSettings

log = logging.getLogger(__name__)

RETRY_EVERY: Final = 2.0


class Runtime:
    """The backend's connection to the bus, for the app's lifespan and its dependencies."""

    def __init__(
        self,
        settings: BackendSettings,
        bus_config: BusConfig,
        *,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.bus_config = bus_config
        # Set when the process is shutting down: live streams end so the server can stop.
        self.stopping = stopping or asyncio.Event()
        self.bus: Bus | None = None
        self.projector: Projector | None = None
        self.last_error: str | None = None
        self.durability: DurabilityReport | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._attach()
        except BusUnavailable as exc:
            self.last_error = str(exc)
            log.warning("%s; the API answers 503 until NATS is reachable", exc)
            self._connector = asyncio.create_task(self._keep_trying(), name="backend-connect")

    async def _attach(self) -> None:
        bus = await connect(self.bus_config)
        try:
            await ensure_jetstream(bus)
            await scale_replicas(bus)
            self.durability = await preflight(
                bus, monitor_urls=self.settings.nats_monitor_urls,
                strict=self.settings.durability == "strict")
            projector = None
            if self.settings.projector == "embedded":
                projector = Projector(bus)
                await projector.start()
        except BaseException:
            await bus.close()
            raise
        self.bus, self.projector, self.last_error = bus, projector, None
        log.info("backend connected to NATS at %s (projector: %s)", self.bus_config.display_urls,
                 self.settings.projector)

    async def _keep_trying(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=RETRY_EVERY)
            if self.stopping.is_set():
                return
            try:
                await self._attach()
                return
            except BusUnavailable as exc:
                self.last_error = str(exc)
            except SetupError as exc:  # a dangerous stream config will not fix itself
                self.last_error = str(exc)
                log.error("cannot use the JetStream setup: %s", exc)
                return

    async def stop(self) -> None:
        """Stop streams, the connector, the projector (flushing it), then the connection."""
        self.stopping.set()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.projector is not None:
            await self.projector.stop()
        if self.bus is not None:
            with contextlib.suppress(TrainbusBusError):
                await self.bus.close()

    def require_bus(self) -> Bus:
        """The bus, when NATS is reachable right now; else `Unavailable` (503)."""
        bus = self.bus
        if bus is None:
            raise Unavailable(
                f"NATS at {self.bus_config.display_urls} is not reachable"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        if not bus.nc.is_connected:
            raise Unavailable(
                f"lost the connection to NATS at {self.bus_config.display_urls}; reconnecting"
            )
        return bus
