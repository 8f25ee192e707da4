"""Run the backend app with uvicorn inside an asyncio loop the caller owns.

uvicorn's `Server.serve()` is used directly (not `uvicorn.run`) so that `trainbus up` can run
the API beside the trainers in one loop, and so that signals stay with the caller: a signal
only sets the caller's `stop` event. Shutdown is ordered and bounded: live SSE streams are told
to end (`runtime.stopping`), uvicorn stops accepting and finishes in-flight requests within
`timeout`, then the lifespan closes the projector and the NATS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from litestar import Litestar

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """Raised when uvicorn cannot start serving (the port is taken, the lifespan failed)."""


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture: the embedding process owns the signals
    (they only set its `stop` event), and nothing is re-raised after shutdown."""

    startup_failed = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn calls sys.exit() when it cannot bind or the lifespan fails; inside a task
        # that SystemExit would tear down the caller's whole event loop.
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            self.startup_failed = True
            self.should_exit = True


def make_server(app: Litestar, *, host: str, port: int, timeout: float = 10.0) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, int(timeout)),
    )
    return _Server(config)


async def serve_until(
    app: Litestar, *, host: str, port: int, stop: asyncio.Event, timeout: float = 10.0,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set. Raises ServerStartError when it cannot start."""
    server = make_server(app, host=host, port=port, timeout=timeout)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    waiter = asyncio.create_task(stop.wait(), name="uvicorn-stop")
    try:
        while not server.started:
            if task.done():
                break
            await asyncio.sleep(0.02)
        if not server.started:
            await task  # uvicorn has logged why
            raise ServerStartError(f"the API could not start on {host}:{port} (port in use?)")
        if started is not None:
            started.set()
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            runtime.stopping.set()  # end SSE streams first, or uvicorn waits for them
        server.should_exit = True
        waiter.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=timeout + 5)
        except TimeoutError:
            log.warning("the API did not stop within %.0fs; cancelling it", timeout + 5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
