"""`GET /api/v1/workers`: live trainer heartbeats (kind, pools, device, capabilities, jobs)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from libs.events.heartbeat import WorkerHeartbeat, read_workers
from services.backend.runtime import Runtime


class WorkerController(Controller):
    path = "/api/v1/workers"
    tags = ("workers",)

    @get("/", summary="Live workers")
    async def list_workers(self, runtime: NamedDependency[Runtime]) -> list[WorkerHeartbeat]:
        return await read_workers(runtime.require_bus())
