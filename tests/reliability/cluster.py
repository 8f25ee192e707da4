"""A trainbus deployment made of real processes, for the reliability tests and bench/.

- `RoleServer`: nats-server started with the shipped `deploy/nats-server.conf` (and so the
  shipped `deploy/nats-roles.conf`), role passwords generated per run and handed to the server
  through its environment, exactly as compose does; optionally TLS (tests/harness/tls.py).
- `Workspace`: tiny price data and strategies in a directory tree of its own.
- `Cluster`: starts `trainbus container-trainer` / `host-trainer` / `backend` / `projector` as
  subprocesses with one role's credentials each, kills (-9), stops (SIGSTOP), continues and
  terminates them, and keeps every process's log (restarts append to the same file).

Nothing here sleeps to synchronise: readiness is polled (heartbeats in KV, /health, log lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from libs.events.config import BusConfig
from libs.events.embedded import free_port
from tests.harness import workspace as base
from tests.harness.bus import STREAM_MAX_BYTES, TRAINER_PUBLISH_RETRY_FOR
from tests.harness.bus import bus_config as server_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import wait_until
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.strategies import ROOT, strategy_yaml
from tests.harness.tls import TlsFiles

DEPLOY_CONF = ROOT / "deploy" / "nats-server.conf"
ROLES = ("admin", "backend", "trainer", "client", "auditor", "predictor")
SYMBOLS = ("EURUSD", "GBPUSD")
BARS = 1500


# --- credentials and TLS ------------------------------------------------------------------------


def role_passwords() -> dict[str, str]:
    """Fresh passwords. nats-server parses an environment variable's value as a config value:
    one that looks like a number, a date or a boolean is not a string (or fails the whole
    config), so passwords start with a letter and use letters and digits only."""
    return {role: f"p{secrets.token_hex(16)}" for role in ROLES}


def server_env(passwords: Mapping[str, str]) -> dict[str, str]:
    """What the NATS server's environment carries (compose: the nats service's environment)."""
    return {f"NATS_{role.upper()}_PASSWORD": pw for role, pw in passwords.items()}


@runtime_checkable
class RoleAccess(Protocol):
    """NATS under the shipped role config: one `RoleServer`, or a `RoleCluster`
    (tests/reliability/role_cluster.py) of three."""

    passwords: dict[str, str]

    def role_env(self, role: str) -> dict[str, str]: ...

    def bus_config(self, role: str, **overrides: Any) -> BusConfig: ...


class RoleServer(NatsServer):
    """nats-server with the shipped config (roles included), on a free port, its monitoring
    port moved off 8222, the role passwords in its environment; TLS by command-line flags.
    `conf`, `extra_args` and `env` make it one node of a cluster (role_cluster.py)."""

    def __init__(self, root: Path, *, tls: TlsFiles | None = None,
                 passwords: Mapping[str, str] | None = None, conf: Path = DEPLOY_CONF,
                 extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None
                 ) -> None:
        self.passwords = dict(passwords or role_passwords())
        self.tls = tls
        self.monitor_port = free_port()
        self.env = dict(env or {})
        args = ["-c", str(conf), "-m", str(self.monitor_port), *extra_args]
        if tls is not None:
            args += ["--tls", "--tlscert", str(tls.cert), "--tlskey", str(tls.key)]
        super().__init__(root / "jetstream", extra_args=tuple(args))

    def start(self, timeout: float = 15.0) -> None:
        # NatsServer passes its own environment on: lend it the passwords for the start only.
        lent = {**server_env(self.passwords), **self.env}
        saved = {k: os.environ.get(k) for k in lent}
        os.environ.update(lent)
        try:
            super().start(timeout)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def bus_config(self, role: str, **overrides: Any) -> BusConfig:
        values: dict[str, Any] = {"user": role, "password": self.passwords[role],
                                  "publish_retry_for": TRAINER_PUBLISH_RETRY_FOR}
        if self.tls is not None:
            values["tls_ca"] = str(self.tls.ca)
        values.update(overrides)
        return server_config(self, **values)

    def role_env(self, role: str) -> dict[str, str]:
        env = {"NATS_URL": self.url, "NATS_USER": role, "NATS_PASSWORD": self.passwords[role]}
        if self.tls is not None:
            env["NATS_TLS_CA"] = str(self.tls.ca)
        return env

    def connections(self) -> list[dict[str, Any]]:
        """The server's view of its client connections (monitoring /connz, with user and
        TLS version)."""
        import httpx

        url = f"http://127.0.0.1:{self.monitor_port}/connz?auth=true&limit=1024"
        return list(httpx.get(url, timeout=5).json().get("connections") or [])

    def violations(self) -> list[str]:
        """The server's log lines about refused publishes/subscriptions."""
        return [line for line in self.log_text().splitlines()
                if "Publish Violation" in line or "Subscription Violation" in line]


# --- workspace ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Workspace(base.Workspace):
    """Configured directories live under `root/srv` so that a path-traversal attempt from any
    of them still lands inside `root`, where the tests snapshot the tree."""

    root: Path
    models_root: Path
    cwd: Path


STRATEGIES: dict[str, dict[str, Any]] = {  # name -> strategy_yaml options
    "tiny": {"epochs": 4},
    "long": {"epochs": 40, "batch_size": 16},
    "mid": {"epochs": 12, "batch_size": 32},
}


def make_workspace(root: Path) -> Workspace:
    srv = root / "srv"
    written = base.write_workspace(
        srv / "data", srv / "strategies", symbols=SYMBOLS, bars=BARS, seed=7,
        strategies={name: strategy_yaml(name, **options) for name, options in STRATEGIES.items()})
    data_dir, strategies_dir = written.data_dir, written.strategies_dir
    models_root = srv / "models"
    models_root.mkdir(parents=True, exist_ok=True)
    cwd = root / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    return Workspace(root=root, data_dir=data_dir, strategies_dir=strategies_dir,
                     models_root=models_root, cwd=cwd)


def snapshot(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under `root`, outside the `skip` trees."""
    skipped = [s.resolve() for s in skip]
    out: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# --- processes ------------------------------------------------------------------------------------


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """`clean_env` for a trainbus process: one thread, on the CPU, unbuffered, plus `extra`."""
    return clean_env(**{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                        "TRAINBUS_DEVICE": "cpu", **extra})


@dataclass
class Proc:
    """One trainbus process; `start` again after a kill appends to the same log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    peak_rss_kib: int = 0

    def start(self) -> Proc:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def sample_rss(self) -> int:
        """Peak RSS so far (VmHWM, KiB) of the running process; remembered across samples."""
        if self.running:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        return self.peak_rss_kib

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a stopped process must die too
            self.popen.kill()
            self.popen.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code (SIGKILL after `timeout`: then raises)."""
        assert self.popen is not None
        self.sample_rss()
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(30)
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM:\n"
                                 f"{self.log_text()[-3000:]}") from None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Cluster:
    """Trainbus processes around NATS: a `RoleServer` or a `RoleCluster` (role credentials
    per process), or a plain `NatsServer` (everyone connects without credentials)."""

    server: NatsServer | RoleAccess
    workspace: Workspace
    logs: Path
    prefix: str = "trainbus"
    ack_wait: float = 120.0
    max_deliver: int = 4
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, Proc] = field(default_factory=dict)
    api_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)

    # --- environment ---

    def env(self, role: str, **extra: str) -> dict[str, str]:
        values = {
            "TRAINBUS_SUBJECT_PREFIX": self.prefix,
            "TRAINBUS_DATA_DIR": str(self.workspace.data_dir),
            "TRAINBUS_STRATEGIES_DIR": str(self.workspace.strategies_dir),
            "TRAINBUS_MODELS_DIR": str(self.workspace.models_root / "cli"),
            "TRAINBUS_STREAM_MAX_BYTES": str(STREAM_MAX_BYTES),
            "TRAINBUS_ACK_WAIT": f"{self.ack_wait:g}",
            "TRAINBUS_MAX_DELIVER": str(self.max_deliver),
            "TRAINBUS_WORKERS_TTL": "6",
        }
        if isinstance(self.server, RoleAccess):
            values.update(self.server.role_env(role))
        else:
            values["NATS_URL"] = self.server.url
        values.update(extra)
        return child_env(values)

    def bus_config(self, role: str = "admin", **overrides: Any) -> BusConfig:
        if isinstance(self.server, RoleAccess):
            return self.server.bus_config(role, prefix=self.prefix, **overrides)
        assert isinstance(self.server, NatsServer)
        values: dict[str, Any] = {"publish_retry_for": TRAINER_PUBLISH_RETRY_FOR,
                                  "ack_wait": self.ack_wait, "max_deliver": self.max_deliver}
        values.update(overrides)
        return server_config(self.server, self.prefix, **values)

    # --- processes ---

    def _proc(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name=name, argv=argv, env=env, log_path=self.logs / f"{name}.log",
                    cwd=self.workspace.cwd)
        self.procs[name] = proc
        return proc

    def trainer(self, name: str, kind: str = "container", *, checkpoint_every: int = 1,
                checkpoint_interval: float = 0.0, drain_timeout: float = 30.0,
                worker_id: str | None = None) -> Proc:
        """`trainbus <kind>-trainer` as role `trainer` (not started). Checkpoints every epoch
        by default (no seconds between them): the fault tests kill trainers mid-job."""
        argv = [TRAINBUS, f"{kind}-trainer", "--worker-id", worker_id or name,
                "--models-dir", str(self.workspace.models_root / name),
                "--checkpoint-every", str(checkpoint_every),
                "--checkpoint-interval", f"{checkpoint_interval:g}",
                "--ack-wait", f"{self.ack_wait:g}", "--max-deliver", str(self.max_deliver),
                "--drain-timeout", f"{drain_timeout:g}"]
        return self._proc(name, argv, self.env("trainer"))

    def restart_trainer(self, name: str) -> Proc:
        """A new incarnation of a killed trainer: same log, worker id `<name>-r<n>`."""
        proc = self.procs[name]
        index = proc.argv.index("--worker-id") + 1
        proc.argv[index] = f"{name}-r{proc.starts + 1}"
        return proc.start()

    def worker_id(self, name: str) -> str:
        proc = self.procs[name]
        return proc.argv[proc.argv.index("--worker-id") + 1]

    def backend(self, name: str = "backend", *, port: int | None = None,
                projector: str = "external", **extra: str) -> Proc:
        """`trainbus backend` as role `backend`, API auth on with `api_token`."""
        port = port or free_port()
        env = self.env("backend", TRAINBUS_API_PORT=str(port), TRAINBUS_API_HOST="127.0.0.1",
                       TRAINBUS_PROJECTOR=projector, TRAINBUS_API_TOKEN=self.api_token,
                       TRAINBUS_MODELS_DIR=str(self.workspace.models_root / name),
                       TRAINBUS_SHUTDOWN_TIMEOUT="5", **extra)
        self.api_urls[name] = f"http://127.0.0.1:{port}"
        return self._proc(name, [TRAINBUS, "backend"], env)

    def api_url(self, name: str = "backend") -> str:
        return self.api_urls[name]

    def projector(self, name: str = "projector") -> Proc:
        """`trainbus projector` as role `backend` (it writes job state and rejections)."""
        return self._proc(name, [TRAINBUS, "projector"], self.env("backend"))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    # --- CLI ------------------------------------------------------------------------------------

    def cli(self, *args: str, role: str = "client", timeout: float = 120.0,
            **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TRAINBUS, *args], env=self.env(role, **extra), text=True,
                              capture_output=True, timeout=timeout, cwd=self.workspace.cwd,
                              stdin=subprocess.DEVNULL, check=False)

    async def acli(self, *args: str, role: str = "client", timeout: float = 120.0,
                   **extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.cli, *args, role=role, timeout=timeout, **extra)


# --- readiness (polling) --------------------------------------------------------------------------


async def wait_workers(bus: Any, worker_ids: list[str], procs: tuple[Proc, ...],
                       timeout: float = 120.0) -> None:
    from libs.events.heartbeat import read_workers

    async def live() -> bool:
        try:
            have = {w.worker_id for w in await read_workers(bus)}
        except Exception:  # an outage while polling: poll again
            return False
        return set(worker_ids) <= have

    await wait_until(live, f"workers {worker_ids}", timeout=timeout, procs=procs, interval=0.1)


async def wait_http_ok(url: str, proc: Proc, timeout: float = 90.0) -> None:
    import httpx

    async def ok() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"{url}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ok, f"{url}/health", timeout=timeout, procs=(proc,), interval=0.1)


async def wait_log(proc: Proc, text: str, timeout: float = 60.0, *, count: int = 1) -> None:
    await wait_until(lambda: proc.log_text().count(text) >= count, f"{text!r} in {proc.name}",
                     timeout=timeout, procs=(proc,))


@contextlib.contextmanager
def cleanup(cluster: Cluster) -> Iterator[Cluster]:
    try:
        yield cluster
    finally:
        cluster.stop_all()
