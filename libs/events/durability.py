"""How safe the log is on this deployment: replicas, cluster size and the servers' fsync policy.

The durability preflight runs when the backend (or `trainbus up`) sets JetStream up. It reads
the cluster size from the server's INFO (`connect_urls` lists every node's client URL), the
replicas of the stream and the buckets from JetStream, and, where a monitoring URL is given
(`TRAINBUS_NATS_MONITOR_URLS`, each node's `http://host:8222`), every server's `sync_interval`
from `/varz`. It warns when a clustered deployment keeps anything below three replicas (a
single node's loss, or its disk's, loses acknowledged writes) or when a server fsyncs on a
timer rather than on every write (several nodes losing power together can then lose
acknowledged writes, replicas notwithstanding: Jepsen's analysis of NATS 2.12). `--strict`
(TRAINBUS_DURABILITY=strict) turns the warnings into a refusal to start.

The report is plain data (`DurabilityReport`), built by a pure function from what was read
(`judge`), so the rules are tested without a cluster; `read_report` does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from libs.events.errors import SetupError

if TYPE_CHECKING:
    from libs.events.bus import Bus

log = logging.getLogger(__name__)

CLUSTER_REPLICAS: Final = 3  # the Raft quorum that survives one node's loss
MONITOR_TIMEOUT: Final = 3.0


class DurabilityError(SetupError):
    """Strict durability and the deployment falls short: the message lists why."""


@dataclass(frozen=True)
class ServerSync:
    """One server's fsync policy as its `/varz` reports it."""

    server: str
    sync_always: bool
    sync_interval_s: float | None


@dataclass(frozen=True)
class DurabilityReport:
    cluster: str | None
    servers: int
    replicas: dict[str, int]  # stream or bucket stream name -> replicas
    sync: list[ServerSync] = field(default_factory=list)
    sync_unknown: bool = True  # no monitoring URL answered
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the preflight logs: one line of facts, then one per warning."""
        where = (f"cluster {self.cluster} of {self.servers} server(s)" if self.cluster
                 else "a single server")
        replicas = ", ".join(f"{name} R{n}" for name, n in sorted(self.replicas.items()))
        if self.sync_unknown:
            sync = "fsync policy unknown (set TRAINBUS_NATS_MONITOR_URLS to check it)"
        else:
            sync = "fsync " + ", ".join(
                f"{s.server}: {'always' if s.sync_always else _interval(s.sync_interval_s)}"
                for s in self.sync)
        return [f"durability: {where}; {replicas}; {sync}", *self.warnings]


def cluster_size(server_info: dict[str, Any]) -> tuple[str | None, int]:
    """(cluster name, number of servers) from a server's INFO: a clustered server lists every
    node's client URL, itself included, in `connect_urls`."""
    name = server_info.get("cluster")
    if not isinstance(name, str) or not name:
        return None, 1
    urls = server_info.get("connect_urls")
    return name, max(1, len(urls)) if isinstance(urls, list) else 1


def server_cluster(bus: Bus) -> tuple[str | None, int]:
    """`cluster_size` of the server this bus is connected to."""
    return cluster_size(dict(getattr(bus.nc, "_server_info", None) or {}))


def default_replicas(servers: int) -> int:
    """R3 on a cluster of three or more nodes, else R1 (a single server has no peer)."""
    return CLUSTER_REPLICAS if servers >= CLUSTER_REPLICAS else 1


def judge(cluster: str | None, servers: int, replicas: dict[str, int],
          sync: list[ServerSync] | None) -> DurabilityReport:
    """The report and its warnings from what was read (`sync` None: unknown)."""
    warnings: list[str] = []
    if servers >= CLUSTER_REPLICAS:
        low = sorted(name for name, n in replicas.items() if n < CLUSTER_REPLICAS)
        if low:
            warnings.append(
                f"durability: {', '.join(low)} below R{CLUSTER_REPLICAS} on a cluster of "
                f"{servers}: losing one node can lose acknowledged jobs and events "
                "(set TRAINBUS_REPLICAS=3; an existing stream needs `nats stream edit "
                "--replicas 3`, docs/scaling.md)")
    elif servers > 1:
        warnings.append(f"durability: a cluster of {servers} servers cannot keep a quorum of "
                        f"R{CLUSTER_REPLICAS} through the loss of one; run three or more")
    for server in sync or []:
        if not server.sync_always:
            warnings.append(
                f"durability: server {server.server} fsyncs every "
                f"{_interval(server.sync_interval_s)}, not on each write: a power failure of "
                "several nodes can lose acknowledged writes (`sync_interval: always` in the "
                "jetstream block, as deploy/nats-cluster.conf does)")
    return DurabilityReport(cluster=cluster, servers=servers, replicas=replicas,
                            sync=list(sync or []), sync_unknown=sync is None,
                            warnings=warnings)


async def read_report(bus: Bus, monitor_urls: tuple[str, ...] = ()) -> DurabilityReport:
    """Read what `judge` needs from the connected server, JetStream and the monitoring URLs."""
    cluster, servers = server_cluster(bus)
    names = bus.names
    replicas: dict[str, int] = {}
    for stream in (names.stream, *names.bucket_streams):
        try:
            info = await bus.js.stream_info(stream)
        except Exception:  # a bucket not created (yet): no replicas to judge
            continue
        replicas[stream] = int(info.config.num_replicas or 1)
    sync = await _read_sync(monitor_urls) if monitor_urls else None
    return judge(cluster, servers, replicas, sync)


async def preflight(bus: Bus, *, monitor_urls: tuple[str, ...] = (), strict: bool = False
                    ) -> DurabilityReport:
    """Log the report (warnings as warnings); strict: raise DurabilityError on any warning."""
    report = await read_report(bus, monitor_urls)
    facts, *warnings = report.lines()
    log.info("%s", facts)
    for warning in warnings:
        log.warning("%s", warning)
    if strict and warnings:
        raise DurabilityError("strict durability refused this deployment:\n  "
                              + "\n  ".join(warnings))
    return report


async def _read_sync(monitor_urls: tuple[str, ...]) -> list[ServerSync] | None:
    results = await asyncio.gather(*(asyncio.to_thread(_varz, url) for url in monitor_urls))
    known = [r for r in results if r is not None]
    return known or None


def _varz(url: str) -> ServerSync | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/varz",
                                    timeout=MONITOR_TIMEOUT) as response:
            varz = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        log.warning("durability: cannot read %s/varz: %s", url.rstrip("/"), exc)
        return None
    config = (varz.get("jetstream") or {}).get("config") or {}
    interval = config.get("sync_interval")
    return ServerSync(server=str(varz.get("server_name") or url),
                      sync_always=bool(config.get("sync_always")),
                      sync_interval_s=interval / 1e9 if isinstance(interval, int | float)
                      else None)


def _interval(seconds: float | None) -> str:
    if seconds is None:
        return "the default interval (2 min)"
    return f"{seconds:g} s"
