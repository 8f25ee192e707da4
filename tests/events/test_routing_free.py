"""`auto` routing picks a free trainer (issue 16 item 8): the heartbeats in KV
`<prefix>_workers` on a real nats-server, read by `resolve_pool` as the backend does."""

from __future__ import annotations

import time

import pytest

from libs.events.bus import Bus
from libs.events.heartbeat import WorkerHeartbeat, delete_heartbeat, put_heartbeat
from libs.events.routing import resolve_pool
from tests.harness.bus import bus_config, open_bus
from tests.harness.nats_server import NatsServer

pytestmark = pytest.mark.anyio


def beat(worker_id: str, kind: str, *, running: int = 0, capacity: int = 1,
         pools: tuple[str, ...] | None = None) -> WorkerHeartbeat:
    now = time.time()
    return WorkerHeartbeat(
        worker_id=worker_id, kind=kind, pools=list(pools or (kind, "any")),  # type: ignore[arg-type]
        host="box", pid=1, device="cpu", capacity=capacity,
        running=[f"job-{worker_id}-{n}" for n in range(running)], started_at=now,
        updated_at=now)


async def auto(bus: Bus) -> tuple[str, str]:
    route = await resolve_pool(bus, None, "auto")
    return route.pool, route.reason


async def test_auto_routing_sends_to_an_idle_container_trainer_when_the_host_one_is_busy(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(bus_config(nats_server_module, unique_prefix)) as bus:
        assert await auto(bus) == ("container", "auto: no live trainer")
        await put_heartbeat(bus, beat("host-1", "host", running=1))
        await put_heartbeat(bus, beat("container-1", "container"))
        # Before, a live host trainer took every job, busy or not.
        assert await auto(bus) == ("container", "auto: a container trainer is free (container-1)")
        # A free host trainer is still preferred.
        await put_heartbeat(bus, beat("host-2", "host", running=1, capacity=2))
        assert await auto(bus) == ("host", "auto: a host trainer is free (host-2)")
        # The forced modes do not look at the heartbeats.
        assert (await resolve_pool(bus, None, "container")).pool == "container"
        assert (await resolve_pool(bus, "auto", "host")).pool == "host"
        assert (await resolve_pool(bus, "container", "auto")).reason == "requested"


async def test_when_every_trainer_is_busy_auto_routing_queues_on_any_if_both_kinds_pull_it(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(bus_config(nats_server_module, unique_prefix)) as bus:
        await put_heartbeat(bus, beat("host-1", "host", running=1))
        pool, reason = await auto(bus)
        assert pool == "host" and "no container trainer is live" in reason
        await put_heartbeat(bus, beat("container-1", "container", running=2, capacity=2))
        pool, reason = await auto(bus)
        assert pool == "any" and "every trainer is busy" in reason
        # A container trainer that does not pull `any` would never see a job queued there.
        await put_heartbeat(bus, beat("container-1", "container", running=1,
                                      pools=("container",)))
        pool, reason = await auto(bus)
        assert pool == "host" and "not both kinds pull `any`" in reason
        # A worker gone (its heartbeat deleted) is not counted.
        await delete_heartbeat(bus, "host-1")
        pool, reason = await auto(bus)
        assert pool == "container" and "no host trainer is live" in reason
