"""The durability preflight (libs/events/durability.py): the rules on plain data, then the
report read from a real 3-node cluster and a real single server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from libs.events.config import BusConfig
from libs.events.durability import (
    DurabilityError,
    ServerSync,
    cluster_size,
    default_replicas,
    judge,
    preflight,
)
from libs.events.setup import replicas_wanted, scale_replicas
from tests.harness.bus import STREAM_MAX_BYTES, open_bus
from tests.harness.nats_cluster import NatsCluster
from tests.harness.nats_server import NatsServer


def test_the_cluster_size_comes_from_the_servers_info() -> None:
    assert cluster_size({"cluster": "c", "connect_urls": ["a:1", "b:1", "c:1"]}) == ("c", 3)
    assert cluster_size({"connect_urls": ["a:1"]}) == (None, 1)  # not clustered
    assert cluster_size({"cluster": "c"}) == ("c", 1)
    assert [default_replicas(n) for n in (1, 2, 3, 5)] == [1, 1, 3, 3]


def test_replicas_shrink_only_when_asked() -> None:
    """Unset TRAINBUS_REPLICAS never scales a stream down: a client whose server reports no
    cluster (a leaf node, `no_advertise`) must not shrink the cluster's R3 to R1."""
    def bus(replicas: int | None, info: Mapping[str, object]) -> Any:
        return SimpleNamespace(config=SimpleNamespace(replicas=replicas),
                               nc=SimpleNamespace(_server_info=info))

    clustered = {"cluster": "c", "connect_urls": ["a", "b", "c"]}
    assert replicas_wanted(bus(None, {}), have=3) == 3  # a leaf's view: keep R3
    assert replicas_wanted(bus(None, clustered), have=1) == 3  # moved to a cluster: scale up
    assert replicas_wanted(bus(1, clustered), have=3) == 1  # asked for: down as well


def test_a_cluster_below_r3_or_fsyncing_on_a_timer_is_warned_about() -> None:
    ok = judge("c", 3, {"TRAINBUS": 3, "KV_trainbus_jobs": 3},
               [ServerSync("n1", True, 120.0)])
    assert ok.warnings == []
    low = judge("c", 3, {"TRAINBUS": 1, "KV_trainbus_jobs": 3}, None)
    assert len(low.warnings) == 1 and "TRAINBUS below R3" in low.warnings[0]
    assert "TRAINBUS_REPLICAS=3" in low.warnings[0]
    timer = judge("c", 3, {"TRAINBUS": 3}, [ServerSync("n2", False, 120.0)])
    assert ["n2 fsyncs every 120 s" in w for w in timer.warnings] == [True]
    # One server: R1 is all there is; nothing to warn about but what the server says.
    assert judge(None, 1, {"TRAINBUS": 1}, None).warnings == []
    assert "cannot keep a quorum" in judge("c", 2, {"TRAINBUS": 1}, None).warnings[0]
    assert "fsync policy unknown" in judge(None, 1, {"TRAINBUS": 1}, None).lines()[0]


@pytest.mark.anyio
async def test_the_preflight_reads_a_real_cluster_and_refuses_when_strict(tmp_path: Path) -> None:
    with NatsCluster(tmp_path / "cluster") as cluster:
        await cluster.wait_ready()
        r1 = BusConfig(urls=cluster.urls, prefix="d1", replicas=1,
                       stream_max_bytes=STREAM_MAX_BYTES)
        async with open_bus(r1) as bus:
            report = await preflight(bus, monitor_urls=cluster.monitor_urls)
            assert (report.cluster, report.servers) == ("trainbus-test", 3)
            assert report.replicas["D1"] == 1
            assert len(report.sync) == 3 and not report.sync_unknown
            # the test servers keep nats-server's default: fsync every 2 minutes
            assert all(not s.sync_always and s.sync_interval_s == 120.0 for s in report.sync)
            assert any("D1" in w and "below R3" in w for w in report.warnings)
            with pytest.raises(DurabilityError, match="below R3"):
                await preflight(bus, strict=True)
        # TRAINBUS_REPLICAS unset: a cluster of three gets R3 everywhere.
        auto = BusConfig(urls=cluster.urls, prefix="d3", stream_max_bytes=STREAM_MAX_BYTES)
        async with open_bus(auto) as bus:
            report = await preflight(bus, strict=True)  # no monitoring: fsync unknown
            assert set(report.replicas.values()) == {3} and report.sync_unknown
            assert len(report.replicas) == 6  # the stream, four buckets, the object store
        # The drift check scales what was made with one replica (a store moved to a cluster):
        # the stream at setup, the buckets by the setup's owner (scale_replicas).
        async with open_bus(BusConfig(urls=cluster.urls, prefix="d1",
                                      stream_max_bytes=STREAM_MAX_BYTES)) as bus:
            assert (await bus.js.stream_info("D1")).config.num_replicas == 3
            await scale_replicas(bus)
            report = await preflight(bus, strict=True)
            assert set(report.replicas.values()) == {3}


@pytest.mark.anyio
async def test_a_single_server_is_reported_as_such(nats_server: NatsServer) -> None:
    async with open_bus(BusConfig(urls=(nats_server.url,), prefix="solo",
                                  stream_max_bytes=STREAM_MAX_BYTES)) as bus:
        report = await preflight(bus, strict=True)
    assert (report.cluster, report.servers, report.warnings) == (None, 1, [])
    assert report.replicas["SOLO"] == 1


@pytest.mark.anyio
async def test_setup_waits_out_a_meta_leader_election(tmp_path: Path) -> None:
    """A process starting while the cluster elects a new JetStream meta leader (its leader was
    just killed) gets timeouts from the API for seconds: setup retries them, it does not fail
    (a trainer used to exit 1 there; found by the cluster chaos bench)."""
    import json
    import urllib.request

    with NatsCluster(tmp_path / "cluster") as cluster:
        await cluster.wait_ready()
        config = BusConfig(urls=cluster.urls, prefix="meta", stream_max_bytes=STREAM_MAX_BYTES)
        async with open_bus(config):
            pass
        def meta_leader() -> str:
            with urllib.request.urlopen(cluster.monitor_urls[0] + "/jsz", timeout=5) as reply:
                return str(json.loads(reply.read())["meta_cluster"]["leader"])

        cluster.kill(await asyncio.to_thread(meta_leader))
        async with open_bus(config) as bus:  # ensure_jetstream inside: no exception
            assert bus.jobs is not None and bus.models is not None
