"""A 3-node NATS cluster under the shipped config, for the scenarios (scenarios.py) and bench/.

Each node is a `RoleServer` (cluster.py) started with the shipped `deploy/nats-cluster.conf`
(and so `deploy/nats-roles.conf`, `sync_interval: always`): the role passwords in its
environment as compose passes them, its name in NATS_SERVER_NAME, and the cluster's loopback
ports on the command line (which replace the config's `nats-1:6222`-style routes). Unlike
its base, tests/harness/nats_cluster.py (no users, a JetStream domain, leaf ports), this is
what compose.yaml runs. Clients get all three URLs (`role_env`, `bus_config`), so TRAINBUS_REPLICAS
left unset gives R3 (libs/events/setup.py `replicas_of`).

    cluster = RoleCluster(root)
    cluster.start()
    await cluster.wait_ready()
    leader = await cluster.stream_leader("TRAINBUS")
    cluster.kill(leader)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libs.events.config import BusConfig
from tests.harness.bus import STREAM_MAX_BYTES, TRAINER_PUBLISH_RETRY_FOR
from tests.harness.nats_cluster import NatsCluster
from tests.harness.strategies import ROOT
from tests.reliability.cluster import RoleServer, role_passwords

CLUSTER_CONF = ROOT / "deploy" / "nats-cluster.conf"


class RoleCluster(NatsCluster):
    """`size` routed nodes n1..n<size> under the shipped config, sharing one set of role
    passwords; the harness's own view of the cluster logs in as admin."""

    def __init__(self, root: Path, *, size: int = 3) -> None:
        self.passwords = role_passwords()
        super().__init__(root, size=size)

    def _node(self, name: str, cluster_args: tuple[str, ...]) -> RoleServer:
        # RoleServer moves its own monitoring port: only the routes come from here.
        routes = cluster_args[cluster_args.index("--cluster"):]
        return RoleServer(self.base_dir / name, passwords=self.passwords, conf=CLUSTER_CONF,
                          env={"NATS_SERVER_NAME": name}, extra_args=routes)

    @property
    def auth(self) -> dict[str, str]:
        return {"user": "admin", "password": self.passwords["admin"]}

    @property
    def monitor_urls(self) -> tuple[str, ...]:
        return tuple(f"http://127.0.0.1:{node.monitor_port}"  # type: ignore[attr-defined]
                     for node in self.nodes.values())

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
