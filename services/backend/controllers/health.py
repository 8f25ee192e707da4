"""`GET /health`: NATS reachable, the stream in place, how far the projection lags the log.

200 when NATS is connected and the stream answers; 503 otherwise (the body says what is
wrong). Lag is the stream's last sequence minus the projection's checkpoint: a few messages
while jobs run, growing without bound when no projector runs."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from libs.events.projector import Checkpoint
from libs.events.subjects import CHECKPOINT_KEY
from services.backend.dto import Health
from services.backend.runtime import Runtime

_checkpoint_decoder = msgspec.json.Decoder(Checkpoint)
_NATS_ERRORS = (nats.errors.Error, TimeoutError)


class HealthController(Controller):
    path = "/health"
    tags = ("health",)

    @get("/", summary="Liveness and readiness of the backend and the bus")
    async def health(self, runtime: NamedDependency[Runtime]) -> Response[Health]:
        bus = runtime.bus
        connected = bus is not None and bus.nc.is_connected
        nats_info: dict[str, Any] = {"connected": connected,
                                     "url": runtime.bus_config.display_urls}
        if not connected and runtime.last_error:
            nats_info["error"] = runtime.last_error
        stream: dict[str, Any] = {"ok": False}
        projector: dict[str, Any] = {"mode": runtime.settings.projector}
        if bus is not None and connected:
            try:
                info = await bus.js.stream_info(bus.names.stream)
                last = int(info.state.last_seq)
                stream = {"ok": True, "name": bus.names.stream, "messages": info.state.messages,
                          "last_seq": last}
                checkpoint = await _checkpoint(runtime)
                projector.update({"checkpoint": checkpoint, "lag": max(0, last - checkpoint)})
            except _NATS_ERRORS as exc:
                stream = {"ok": False, "error": str(exc) or type(exc).__name__}
            if runtime.projector is not None:
                projector["applied_seq"] = runtime.projector.applied_seq
        ok = connected and stream["ok"]
        body = Health(status="ok" if ok else "unavailable", nats=nats_info, stream=stream,
                      projector=projector)
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


async def _checkpoint(runtime: Runtime) -> int:
    if runtime.projector is not None:
        return runtime.projector.flushed_seq
    bus = runtime.bus
    if bus is None or bus.jobs is None:
        return 0
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        entry = await bus.jobs.get(CHECKPOINT_KEY)
        if entry.value:
            return _checkpoint_decoder.decode(entry.value).seq
    return 0
