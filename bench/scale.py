"""Capacity in simulation: 1,000 heartbeating workers and 10,000 queued jobs on a 3-node cluster.

    .venv/bin/python bench/scale.py [--workers 1000] [--jobs 10000] [--connections 4]
        [--concurrency 64] [--small] [--json out.json]

No torch and no trainer processes: this measures what grows with trainers and jobs in NATS
and in trainbus's own readers. Three nodes under the shipped deploy/nats-cluster.conf
(tests/reliability/role_cluster.py: R3, `sync_interval: always`), every client as the admin
user with the three URLs. In phases:

1. heartbeats: `--workers` simulated workers put their heartbeat (libs/events/heartbeat.py
   `put_heartbeat`, a real `WorkerHeartbeat`) into KV `<prefix>_workers` every
   `WorkerSettings.heartbeat_interval` (3 s; TTL `BusConfig.workers_ttl`, 15 s), spread over
   `--connections` connections, from now to the end; each put's latency is kept, by phase;
2. dispatch: `--jobs` train commands published (`publish_command`, pool `any`, dedupe ids),
   `--concurrency` in flight, as the API does under load: commands/s;
3. projection: `Projector` (libs/events/projector.py) from an empty KV over the whole log
   (the commands: one queued job state each, R3 KV puts): events/s; then the audit's replay
   (libs/events/audit.py, the fold alone): events/s;
4. reads that grow with workers: `read_workers` (the API's /workers and, per submission with
   pool `auto`, routing.py `resolve_pool`) over the live heartbeats, timed.

Then the table: rates, latencies, KV keys, consumers, the log's bytes per queued job, the
pool consumer's pending commands, and what held (every worker live in the end, no put error
or timeout, heartbeat p99 well inside the TTL margin, the projector caught up) or did not.
`--small` is 100 workers and 1,000 jobs. Exit 1 when something did not hold.

On a shared 2-core machine the three nodes, the simulated workers and the projector share the
CPUs; the figures are a floor for separate machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.events.audit import replay
from libs.events.bus import Bus, connect, publish_command
from libs.events.heartbeat import (
    WorkerHeartbeat,
    WorkerKindName,
    put_heartbeat,
    read_workers,
)
from libs.events.log import stream_last_seq
from libs.events.projector import Projector, read_bucket
from libs.events.routing import resolve_pool
from libs.events.schema import TrainCommand
from libs.events.setup import ensure_jetstream
from libs.events.worker.runtime import WorkerSettings
from tests.reliability.role_cluster import RoleCluster
from tests.reliability.scenarios import percentile

PREFIX = "scale"
PUT_TIMEOUT = 5.0  # the worker runtime's own bound on one heartbeat put
STREAM_BYTES = 512 * 1024 * 1024


@dataclass
class Beats:
    """Heartbeat put latencies (seconds) by phase, and what failed."""

    phase: str = "warm-up"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    timeouts: int = 0
    puts: int = 0

    def record(self, seconds: float) -> None:
        self.latencies.setdefault(self.phase, []).append(seconds)
        self.puts += 1


def heartbeat(index: int, started: float) -> WorkerHeartbeat:
    kind: WorkerKindName = "host" if index % 10 == 0 else "container"
    return WorkerHeartbeat(
        worker_id=f"sim-{index:05d}", kind=kind, pools=[kind, "any"],
        host=f"machine-{index // 8:04d}", pid=10_000 + index, device="cpu",
        capabilities={"threads": 2, "torch": "2.x", "cuda": False}, capacity=1, running=[],
        started_at=started, updated_at=time.time())


async def worker(bus: Bus, index: int, interval: float, stop: asyncio.Event,
                 beats: Beats) -> None:
    started = time.time()
    await asyncio.sleep(random.Random(index).uniform(0, interval))  # spread, as in life
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(put_heartbeat(bus, heartbeat(index, started)), PUT_TIMEOUT)
            beats.record(time.perf_counter() - t0)
        except TimeoutError:
            beats.timeouts += 1
        except Exception:  # a failed put is a figure here, not a crash
            beats.errors += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.perf_counter() - t0)))


async def dispatch(bus: Bus, jobs: int, concurrency: int) -> tuple[float, int]:
    """(commands/s, failures) publishing `jobs` train commands, `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        command = TrainCommand(job_id=f"scale-{i:06d}", strategy="rsi_mlp",
                               symbols=("EURUSD", "GBPUSD"), timeframes=("1h",), seed=i,
                               requested_by="bench-scale")
        async with gate:
            try:
                await publish_command(bus, command, pool="any")
            except Exception:  # counted: the table says whether dispatch held
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    return jobs / (time.perf_counter() - t0), failures


async def project(bus: Bus, last_seq: int) -> float:
    """Events/s of a projector catching up from an empty KV to `last_seq`."""
    projector = Projector(bus, publish_rejections=False)
    t0 = time.perf_counter()
    await projector.start()
    try:
        await projector.wait_for(last_seq, timeout=600)
    finally:
        await projector.stop()
    return last_seq / (time.perf_counter() - t0)


async def timed(rounds: int, make: Callable[[], Awaitable[object]]) -> float:
    """The median seconds of `rounds` awaits of `make()`."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await make()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


async def simulate(root: Path, args: argparse.Namespace) -> dict[str, object]:
    nodes = RoleCluster(root / "nats")
    nodes.start()
    buses: list[Bus] = []
    stop = asyncio.Event()
    beats = Beats()
    tasks: list[asyncio.Task[None]] = []
    try:
        await nodes.wait_ready()
        config = nodes.bus_config("admin", prefix=PREFIX, stream_max_bytes=STREAM_BYTES)
        admin = await connect(config)
        buses.append(admin)
        await ensure_jetstream(admin)
        interval = WorkerSettings.heartbeat_interval
        for c in range(args.connections):
            bus = await connect(config)
            buses.append(bus)
            await ensure_jetstream(bus)
            tasks += [asyncio.create_task(worker(bus, i, interval, stop, beats))
                      for i in range(c, args.workers, args.connections)]
        # Warm-up: two intervals, so every worker has put at least once.
        await asyncio.sleep(2 * interval + 0.5)
        beats.phase = "idle"
        await asyncio.sleep(interval)
        print(f"{args.workers} workers heartbeating every {interval:g}s "
              f"over {args.connections} connections")

        beats.phase = "dispatch"
        rate, publish_failures = await dispatch(admin, args.jobs, args.concurrency)
        print(f"dispatched {args.jobs} commands: {rate:,.0f}/s, {publish_failures} failed")

        beats.phase = "projection"
        _, last_seq = await stream_last_seq(admin.js, admin.names)
        projector_rate = await project(admin, last_seq)
        t0 = time.perf_counter()
        states = await replay(admin, until_seq=last_seq)
        replay_rate = last_seq / (time.perf_counter() - t0)
        print(f"projector {projector_rate:,.0f} events/s, audit replay {replay_rate:,.0f}/s")

        beats.phase = "reads"
        live = await read_workers(admin)
        read_s = await timed(5, lambda: read_workers(admin))
        route_s = await timed(5, lambda: resolve_pool(admin, None, "auto"))
        await asyncio.sleep(interval)  # a full round of heartbeats beside the reads

        info = await admin.js.stream_info(admin.names.stream)
        jobs_keys = len(await read_bucket(admin.js, admin.names.jobs_bucket, stall_timeout=60))
        workers_keys = len(await read_bucket(admin.js, admin.names.workers_bucket))
        pending = (await admin.js.consumer_info(admin.names.stream,
                                                admin.names.consumer("any"))).num_pending
        consumers = await admin.js.consumers_info(admin.names.stream)
        durable = sorted(str(c.config.durable_name) for c in consumers if c.config.durable_name)
        stop.set()
        await asyncio.gather(*tasks)
        ttl = config.workers_ttl
        all_beats = [x for xs in beats.latencies.values() for x in xs]
        p99 = percentile(all_beats, 99)
        holds = {
            f"every worker live ({len(live)}/{args.workers})": len(live) == args.workers,
            f"no heartbeat put failed ({beats.errors} errors, {beats.timeouts} timeouts "
            f"of {beats.puts + beats.errors + beats.timeouts})":
                beats.errors == 0 and beats.timeouts == 0,
            f"heartbeat p99 {p99 * 1000:.0f} ms < 10% of the TTL margin "
            f"({(ttl - interval) * 100:.0f} ms)": p99 < 0.1 * (ttl - interval),
            f"every command stored ({publish_failures} failed)": publish_failures == 0,
            f"the projector caught up ({jobs_keys - 1} jobs in KV, {len(states)} replayed)":
                jobs_keys - 1 == args.jobs == len(states),
            f"the `any` consumer holds them all ({pending} pending)": pending == args.jobs,
        }
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{socket.gethostname()}, {os.cpu_count()} CPUs",
            "nodes": len(nodes.names), "workers": args.workers, "jobs": args.jobs,
            "connections": args.connections, "interval_s": interval, "ttl_s": ttl,
            "dispatch_per_s": rate, "projector_events_per_s": projector_rate,
            "replay_events_per_s": replay_rate,
            "read_workers_ms": read_s * 1000, "auto_route_ms": route_s * 1000,
            "heartbeat_ms": {phase: {q: percentile(xs, q) * 1000 for q in (50, 99)}
                             for phase, xs in beats.latencies.items()},
            "heartbeat_puts_per_s": args.workers / interval,
            "kv_keys": {"jobs": jobs_keys, "workers": workers_keys},
            "consumers": info.state.consumer_count, "durable_consumers": durable,
            "stream_messages": info.state.messages, "stream_bytes": info.state.bytes,
            "stream_bytes_per_job": info.state.bytes / args.jobs,
            "replicas": info.config.num_replicas,
            "holds": holds,
        }
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for bus in buses:
            with contextlib.suppress(Exception):
                await bus.close()
        nodes.stop()


def table(result: dict[str, object]) -> list[str]:
    r = result
    hb = r["heartbeat_ms"]
    assert isinstance(hb, dict)
    rows = [
        ("cluster", f"{r['nodes']} nodes, R{r['replicas']}, fsync always ({r['machine']})"),
        ("workers / connections", f"{r['workers']} / {r['connections']} "
                                  f"({r['heartbeat_puts_per_s']:.0f} heartbeat puts/s, "
                                  f"every {r['interval_s']:g}s, TTL {r['ttl_s']:g}s)"),
        ("dispatch (train commands)", f"{r['dispatch_per_s']:,.0f}/s"),
        ("projector catch-up", f"{r['projector_events_per_s']:,.0f} events/s"),
        ("audit replay (fold only)", f"{r['replay_events_per_s']:,.0f} events/s"),
        ("read_workers / auto route", f"{r['read_workers_ms']:.0f} ms / "
                                      f"{r['auto_route_ms']:.0f} ms"),
        *((f"heartbeat put, {phase}", f"p50 {v[50]:.1f} ms, p99 {v[99]:.1f} ms")
          for phase, v in hb.items()),
        ("KV keys", f"jobs {r['kv_keys']['jobs']} (with _checkpoint), "  # type: ignore[index]
                    f"workers {r['kv_keys']['workers']}"),  # type: ignore[index]
        ("consumers on the log", f"{r['consumers']}: durable "
                                 f"{', '.join(r['durable_consumers'])}, the rest the "  # type: ignore[arg-type]
                                 "readers' ordered ones"),
        ("log", f"{r['stream_messages']} messages, {r['stream_bytes']:,} B, "
                f"{r['stream_bytes_per_job']:.0f} B per queued job"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    holds = r["holds"]
    assert isinstance(holds, dict)
    lines += ["", *(f"{'holds' if ok else 'DOES NOT HOLD'}: {what}" for what, ok in holds.items())]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="100 workers, 1,000 jobs")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    if args.small:
        args.workers, args.jobs = 100, 1000
    with tempfile.TemporaryDirectory(prefix="trainbus-scale-") as tmp:
        result = asyncio.run(simulate(Path(tmp), args))
    print()
    for line in table(result):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    holds = result["holds"]
    assert isinstance(holds, dict)
    return 0 if all(holds.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
