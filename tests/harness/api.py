"""The real backend app (API + embedded projector) and optionally a real container trainer,
running in the test's event loop against a real nats-server; and the parsing of its SSE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from libs.events.config import BusConfig
from libs.events.embedded import free_port
from libs.events.worker.runtime import WorkerRuntime
from services.backend.app import create_app
from services.backend.security import ApiSecurity
from services.backend.server import serve_until
from services.backend.settings import BackendSettings
from tests.harness.polling import Started
from tests.harness.workspace import Workspace


@dataclass
class ApiStack:
    """The API on http://127.0.0.1:<port> and (optionally) one container trainer."""

    client: httpx.AsyncClient
    config: BusConfig
    settings: BackendSettings
    url: str
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    trainer: WorkerRuntime | None = None


@contextlib.asynccontextmanager
async def api_stack(
    config: BusConfig,
    workspace: Workspace,
    models_dir: Path,
    *,
    trainer: bool = True,
    security: ApiSecurity | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[ApiStack]:
    from services.trainers.container import serve as container_serve

    port = free_port()
    settings = BackendSettings(
        port=port, models_dir=models_dir, strategies_dir=workspace.strategies_dir,
        sse_keepalive=2.0, shutdown_timeout=5.0, **settings_overrides,
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    # API auth off unless a test asks for it (tests/reliability checks the auth itself).
    app = create_app(settings, config, security=security or ApiSecurity.disabled())
    stack = ApiStack(client=httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                              timeout=30.0),
                     config=config, settings=settings, url=f"http://127.0.0.1:{port}",
                     stop=stop)
    stack.tasks.append(asyncio.create_task(
        serve_until(app, host="127.0.0.1", port=port, stop=stop, timeout=5.0, started=started)
    ))
    ready: Started[WorkerRuntime] = Started()
    if trainer:
        stack.tasks.append(asyncio.create_task(container_serve(
            config, stop, data_dir=workspace.data_dir, models_dir=models_dir,
            strategies_dir=workspace.strategies_dir, checkpoint_every=0, drain_timeout=5.0,
            ready=ready,
        )))
    try:
        await asyncio.wait_for(started.wait(), 20)
        if trainer:
            stack.trainer = await ready.wait(*stack.tasks, timeout=60)
            await stack.trainer.wait_ready(30)
        yield stack
    finally:
        stop.set()
        await stack.client.aclose()
        _, pending = await asyncio.wait(stack.tasks, timeout=30)
        for task in pending:
            task.cancel()
        for task in stack.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def iter_sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The frames of a streamed response as they arrive (as `parse_sse` parses them)."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer = (buffer + chunk).replace("\r\n", "\n")
        *blocks, buffer = buffer.split("\n\n")
        for block in blocks:
            for frame in parse_sse(block):
                yield frame
    for frame in parse_sse(buffer):
        yield frame


def parse_sse(text: str) -> list[dict[str, str]]:
    """SSE frames as dicts (event, id, data; comments dropped)."""
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[key] = frame[key] + "\n" + value if key in frame else value
        if frame:
            frames.append(frame)
    return frames
