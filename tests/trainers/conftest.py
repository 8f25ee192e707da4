"""Fixtures for the trainer tests: tiny strategies and data, buses, trainers, event readers.

Every test gets its own subject prefix (so its own stream, consumers and buckets) on a server
shared by the module, unless it needs to kill the server (then `nats_server`, one per test).
Training is real and small: 1500 synthetic 1h bars per symbol, an MLP with one hidden layer of
16, a handful of epochs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from libs.events.bus import Bus, connect
from libs.events.config import BusConfig
from libs.events.log import reply_fields
from libs.events.schema import AnyEvent, TrainCommand, decode_event
from libs.events.setup import ensure_jetstream
from libs.events.worker.runtime import WorkerRuntime
from libs.pipeline.data import write_synthetic
from tests.harness.nats_server import NatsServer

BARS = 1500
SYMBOLS = ("EURUSD", "GBPUSD")
STRATEGY_SEED = 11  # training.seed of STRATEGY

STRATEGY = """
name: {name}
description: tiny strategy for the trainer tests
training_data:
  symbols: {{mode: multi_symbol, list: [EURUSD, GBPUSD]}}
  timeframes: {{mode: single, timeframe: 1h}}
  history_required: 50
indicators:
  rsi_14: {{type: rsi, period: 14}}
  macd_12_26_9: {{type: macd, fast_period: 12, slow_period: 26, signal_period: 9}}
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
  architecture: {{hidden_layers: [16], activation: relu, dropout: 0.2}}
  features: {{lookback_periods: 1}}
training:
  epochs: {epochs}
  batch_size: {batch_size}
  learning_rate: 0.005
  optimizer: adam
  labels: {{source: zigzag, zigzag_threshold: 0.01}}
  data_split: {{train: 0.7, validation: 0.15, test: 0.15}}
  seed: {seed}
"""


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread. The MLPs here are tiny: a second thread buys nothing, and
    on a 2-core machine shared with other work two OpenMP threads thrash (10x slower measured).
    Weights are bit-identical across thread counts, so this changes speed only."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def strategy_yaml(name: str, *, epochs: int, batch_size: int = 64) -> str:
    return STRATEGY.format(name=name, epochs=epochs, batch_size=batch_size, seed=STRATEGY_SEED)


@dataclass(frozen=True)
class TrainerEnv:
    data_dir: Path
    strategies_dir: Path


@pytest.fixture(scope="session")
def trainer_env(tmp_path_factory: pytest.TempPathFactory) -> TrainerEnv:
    """Read-only data and strategies: `tiny` (4 epochs), `slow` (400 epochs, for cancels),
    `long` (40 epochs of small batches, for kills mid-training)."""
    root = tmp_path_factory.mktemp("trainer-env")
    data_dir, strategies_dir = root / "data", root / "strategies"
    write_synthetic(data_dir, SYMBOLS, "1h", BARS, 7)
    strategies_dir.mkdir()
    (strategies_dir / "tiny.yaml").write_text(strategy_yaml("tiny", epochs=4))
    (strategies_dir / "slow.yaml").write_text(strategy_yaml("slow", epochs=400))
    (strategies_dir / "long.yaml").write_text(strategy_yaml("long", epochs=40, batch_size=16))
    return TrainerEnv(data_dir=data_dir, strategies_dir=strategies_dir)


def bus_config(server: NatsServer, prefix: str, **overrides: Any) -> BusConfig:
    values: dict[str, Any] = {
        "urls": (server.url,),
        "prefix": prefix,
        "publish_retry_for": 30.0,
        "publish_timeout": 2.0,
        "stream_max_bytes": 64 * 1024 * 1024,
    }
    values.update(overrides)
    return BusConfig(**values)


@contextlib.asynccontextmanager
async def open_bus(config: BusConfig) -> AsyncIterator[Bus]:
    bus = await connect(config)
    await ensure_jetstream(bus)
    try:
        yield bus
    finally:
        await bus.close()


ServeFn = Callable[..., Coroutine[Any, Any, None]]  # an async `serve` function


@contextlib.asynccontextmanager
async def running(
    serve: ServeFn, config: BusConfig, env: TrainerEnv, models_dir: Path, **options: Any
) -> AsyncIterator[WorkerRuntime]:
    """A trainer served in this process until the block ends (then drained)."""
    stop = asyncio.Event()
    started: list[WorkerRuntime] = []
    task = asyncio.create_task(serve(
        config, stop, data_dir=env.data_dir, strategies_dir=env.strategies_dir,
        models_dir=models_dir, ready=started.append, **options,
    ))
    try:
        deadline = time.monotonic() + 60
        while not started:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "trainer did not start"
            await asyncio.sleep(0.02)
        await started[0].wait_ready(60)
        yield started[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def command(job_id: str, strategy: str = "tiny", **overrides: Any) -> TrainCommand:
    fields: dict[str, Any] = {"job_id": job_id, "strategy": strategy,
                              "symbols": SYMBOLS, "timeframes": ("1h",), "seed": 3}
    fields.update(overrides)
    return TrainCommand(**fields)


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    event: AnyEvent

    @property
    def kind(self) -> str:
        return self.subject.rsplit(".", 1)[-1]


class JobEvents:
    """Every event of one job as stored in the stream, in order, from the first one."""

    def __init__(self, bus: Bus, job_id: str) -> None:
        self.bus, self.job_id = bus, job_id
        self.items: list[Stored] = []
        self.received_at: list[float] = []  # time.time() when each arrived
        self._changed = asyncio.Event()
        self._sub: Any = None

    async def __aenter__(self) -> JobEvents:
        async def on_msg(msg: Any) -> None:
            seq = reply_fields(msg.reply)[0]
            self.received_at.append(time.time())
            self.items.append(Stored(seq, msg.subject, decode_event(msg.data)))
            self._changed.set()

        self._sub = await self.bus.js.subscribe(
            self.bus.names.job_events(self.job_id), stream=self.bus.names.stream, cb=on_msg,
            ordered_consumer=True, idle_heartbeat=1.0,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    @property
    def kinds(self) -> list[str]:
        return [s.kind for s in self.items]

    def of(self, kind: str) -> list[Any]:
        return [s.event for s in self.items if s.kind == kind]

    async def wait_for(self, *kinds: str, timeout: float = 60.0) -> Any:
        """The first stored event of one of `kinds` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.items:
                if item.kind in kinds:
                    return item.event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kinds} event for {self.job_id} within {timeout}s; "
                                     f"got {self.kinds}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))


async def stored_job_messages(bus: Bus, job_id: str) -> list[tuple[int, str, bytes]]:
    """(seq, subject, data) of every event of the job in the stream, read back directly."""
    out: list[tuple[int, str, bytes]] = []
    info = await bus.js.stream_info(bus.names.stream)
    subject_prefix = f"{bus.names.prefix}.evt.{job_id}."
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await bus.js.get_msg(bus.names.stream, seq, direct=True)
        except nats.js.errors.NotFoundError:  # a gap (none expected) shows as a missing seq
            continue
        if raw.subject and raw.subject.startswith(subject_prefix):
            out.append((seq, raw.subject, raw.data or b""))
    return out


def weights_hash_of_archive(data: bytes) -> str:
    from libs.pipeline.storage.models import weights_sha256
    from services.trainers.pipeline_runner import load_model_archive

    return weights_sha256(load_model_archive(data).model.state_dict())


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


async def object_names(bus: Bus) -> list[str]:
    """Names of the live objects in the models bucket."""
    store = await bus.js.object_store(bus.names.models_bucket)
    try:
        infos = await store.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    return sorted(str(i.name) for i in infos if not i.deleted)


def direct_run(env: TrainerEnv, models_dir: Path, cmd: TrainCommand) -> Any:
    """`TrainingPipeline.run` of the request the trainers derive from `cmd` (a reference)."""
    from libs.pipeline.pipeline import TrainingPipeline
    from libs.pipeline.storage.models import ModelStorage
    from services.trainers.pipeline_runner import PipelineRunner

    pipeline = TrainingPipeline(data_dir=env.data_dir, strategies_dir=env.strategies_dir,
                                storage=ModelStorage(models_dir))
    return pipeline.run(PipelineRunner.request_for(cmd))
