"""`GET /health`: NATS reachable, the stream in place, how far the projection lags the log.

200 when NATS is connected, the stream answers and the projection's position is consistent;
503 otherwise (the body says what is wrong). Lag is the stream's last sequence minus the
projection's checkpoint: a few messages while jobs run, growing without bound when no projector
runs. Lag alone cannot tell a blinded projection (a `_checkpoint` put beyond the stream's end
reads as lag 0), so `projector` also says `position`, `stream_last_seq`, `consistent` and the
`problems` (libs/events/projector.py `position_problems`), and when an embedded projector last
rebuilt from the log (`rebuilt_at`, `rebuild_reason`)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from libs.events.projector import Checkpoint, Projection, position_problems
from libs.events.schema import decode_stored
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
                position = await _position(runtime)
                problems = position_problems(position, stream=bus.names.stream, last_seq=last)
                projector.update({
                    "checkpoint": position.checkpoint, "position": position.checkpoint,
                    "stream_last_seq": last, "lag": max(0, last - position.checkpoint),
                    "consistent": not problems, "problems": problems,
                })
            except _NATS_ERRORS as exc:
                stream = {"ok": False, "error": str(exc) or type(exc).__name__}
            if runtime.projector is not None:
                projector.update({"applied_seq": runtime.projector.applied_seq,
                                  "rebuilt_at": runtime.projector.rebuilt_at,
                                  "rebuild_reason": runtime.projector.rebuild_reason})
        ok = connected and stream["ok"] and projector.get("consistent", False)
        report = runtime.durability
        durability: dict[str, Any] = {} if report is None else {
            "cluster": report.cluster, "servers": report.servers, "replicas": report.replicas,
            "fsync_known": not report.sync_unknown, "warnings": report.warnings}
        body = Health(status="ok" if ok else "unavailable", nats=nats_info, stream=stream,
                      projector=projector, durability=durability)
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


async def _position(runtime: Runtime) -> Projection:
    """The projection's position: the embedded projector's own, else the stored checkpoint
    (one KV get, not the whole bucket: health is polled). States are left out; the projector
    checks those when it starts."""
    bus = runtime.bus
    if runtime.projector is not None and bus is not None:
        return Projection(states={}, unreadable={}, checkpoint=runtime.projector.flushed_seq,
                          checkpoint_stream=bus.names.stream)
    empty = Projection(states={}, unreadable={}, checkpoint=0)
    if bus is None or bus.jobs is None:
        return empty
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        entry = await bus.jobs.get(CHECKPOINT_KEY)
        if entry.value:
            try:
                stored = decode_stored(_checkpoint_decoder, entry.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                return Projection(states={}, unreadable={CHECKPOINT_KEY: str(exc)},
                                  checkpoint=0)
            return Projection(states={}, unreadable={}, checkpoint=stored.seq,
                              checkpoint_stream=stored.stream)
    return empty
