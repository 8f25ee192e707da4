"""A 3-node NATS cluster under the shipped config, for the scenarios (scenarios.py) and bench/.

Each node is a `RoleServer` (cluster.py) started with the shipped `deploy/nats-cluster.conf`
(and so `deploy/nats-roles.conf`, `sync_interval: always`): the role passwords in its
environment as compose passes them, its name in NATS_SERVER_NAME, and the cluster's loopback
ports on the command line (which replace the config's `nats-1:6222`-style routes). Unlike
tests/harness/nats_cluster.py (no users, a JetStream domain, leaf ports), this is what
compose.yaml runs. Clients get all three URLs (`role_env`, `bus_config`), so TRAINBUS_REPLICAS
left unset gives R3 (libs/events/setup.py `replicas_of`).

    cluster = RoleCluster(root)
    cluster.start()
    await cluster.wait_ready()
    leader = await cluster.stream_leader("TRAINBUS")
    cluster.kill(leader)
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import StreamInfo

from libs.events.config import BusConfig
from tests.harness.bus import STREAM_MAX_BYTES, TRAINER_PUBLISH_RETRY_FOR
from tests.harness.nats_server import free_port
from tests.harness.strategies import ROOT
from tests.reliability.cluster import RoleServer, role_passwords

CLUSTER_CONF = ROOT / "deploy" / "nats-cluster.conf"
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class RoleCluster:
    """`size` routed nodes n1..n<size>, sharing one set of role passwords."""

    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.root = Path(root)
        self.passwords = role_passwords()
        self.names = [f"n{i + 1}" for i in range(size)]
        route_ports = {name: free_port() for name in self.names}
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports.values())
        self.nodes = {
            name: RoleServer(self.root / name, passwords=self.passwords, conf=CLUSTER_CONF,
                             env={"NATS_SERVER_NAME": name},
                             extra_args=("--cluster", f"nats://127.0.0.1:{route_ports[name]}",
                                         "--routes", routes))
            for name in self.names
        }

    # --- addresses ---

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes.values())

    def url(self, name: str) -> str:
        return self.nodes[name].url

    @property
    def monitor_urls(self) -> tuple[str, ...]:
        return tuple(f"http://127.0.0.1:{node.monitor_port}" for node in self.nodes.values())

    def pids(self) -> dict[str, int]:
        return {name: pid for name, node in self.nodes.items() if (pid := node.pid) is not None}

    # --- what the processes get (cluster.py's RoleAccess) ---

    def role_env(self, role: str) -> dict[str, str]:
        return {"NATS_URL": ",".join(self.urls), "NATS_USER": role,
                "NATS_PASSWORD": self.passwords[role],
                # The backend's durability preflight reads every node's fsync policy here.
                "TRAINBUS_NATS_MONITOR_URLS": ",".join(self.monitor_urls)}

    def bus_config(self, role: str, **overrides: Any) -> BusConfig:
        values: dict[str, Any] = {"urls": self.urls, "user": role,
                                  "password": self.passwords[role],
                                  "publish_retry_for": TRAINER_PUBLISH_RETRY_FOR,
                                  "publish_timeout": 2.0, "stream_max_bytes": STREAM_MAX_BYTES}
        values.update(overrides)
        return BusConfig(**values)

    def violations(self) -> list[str]:
        return [line for node in self.nodes.values() for line in node.log_text().splitlines()
                if "Publish Violation" in line or "Subscription Violation" in line]

    # --- lifecycle ---

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def kill(self, name: str) -> None:
        """SIGKILL one node: no flush, no goodbye."""
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        """The killed node again, on its ports and store (it catches up from the others)."""
        self.nodes[name].start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def running(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.running]

    # --- the cluster's view (as the admin user) ---

    async def _request(self, subject: str) -> dict[str, Any] | None:
        """One JetStream API request through the first running node that answers."""
        for name in self.running():
            try:
                nc = await nats.connect(self.url(name), user="admin",
                                        password=self.passwords["admin"],
                                        allow_reconnect=False, connect_timeout=2)
            except _NATS_ERRORS:
                continue
            try:
                reply = await nc.request(subject, b"", timeout=3)
            except _NATS_ERRORS:
                continue
            finally:
                await nc.close()
            answer: dict[str, Any] = json.loads(reply.data)
            if "error" not in answer:
                return answer
        return None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """JetStream answers (it has a meta leader) through every running node."""
        deadline = time.monotonic() + timeout
        pending = set(self.running())
        while pending:
            for name in sorted(pending):
                if await _account_info_answers(self.url(name), self.passwords["admin"]):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"JetStream cluster not ready after {timeout}s: {pending}")
            if pending:
                await asyncio.sleep(0.1)

    async def stream_info(self, stream: str) -> StreamInfo | None:
        answer = await self._request(f"$JS.API.STREAM.INFO.{stream}")
        return StreamInfo.from_response(answer) if answer is not None else None

    async def stream_leader(self, stream: str, timeout: float = 30.0) -> str:
        """The running node that leads `stream` (waits while it has none after a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.stream_info(stream)
            leader = info.cluster.leader if info is not None and info.cluster else None
            if leader is not None and leader in self.running():
                return leader
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream {stream} has no leader after {timeout}s")
            await asyncio.sleep(0.1)

    async def replicas_current(self, stream: str, timeout: float = 60.0) -> None:
        """Until every replica of `stream` is online and current (a restarted node caught up):
        only then may another node die without the stream losing its quorum."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.stream_info(stream)
            replicas = (info.cluster.replicas or []) if info is not None and info.cluster \
                else []
            if (len(replicas) == len(self.names) - 1
                    and all(r.current and not r.offline for r in replicas)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas of {stream} not current after {timeout}s: "
                                   f"{replicas}")
            await asyncio.sleep(0.2)


async def _account_info_answers(url: str, admin_password: str) -> bool:
    async def quiet(_err: Exception) -> None:
        return None

    try:
        nc = await nats.connect(url, user="admin", password=admin_password,
                                allow_reconnect=False, connect_timeout=1, error_cb=quiet)
    except _NATS_ERRORS:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except _NATS_ERRORS:
        return False
    finally:
        await nc.close()
