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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from libs.events.bus import Bus
from libs.events.config import BusConfig
from libs.events.log import reply_fields
from libs.events.schema import AnyEvent, TrainCommand, decode_event
from libs.events.worker.runtime import WorkerRuntime
from tests.harness.strategies import strategy_yaml
from tests.harness.trainers import ServeFn, one_torch_thread, serving
from tests.harness.workspace import Workspace, write_workspace

BARS = 1500
SYMBOLS = ("EURUSD", "GBPUSD")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def trainer_env(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Read-only data and strategies: `tiny` (4 epochs), `slow` (400 epochs, for cancels),
    `long` (40 epochs of small batches, for kills mid-training)."""
    root = tmp_path_factory.mktemp("trainer-env")
    return write_workspace(root / "data", root / "strategies", symbols=SYMBOLS, bars=BARS,
                           seed=7, strategies={
        "tiny": strategy_yaml("tiny", epochs=4),
        "slow": strategy_yaml("slow", epochs=400),
        "long": strategy_yaml("long", epochs=40, batch_size=16),
    })


@contextlib.asynccontextmanager
async def running(
    serve: ServeFn, config: BusConfig, env: Workspace, models_dir: Path, **options: Any
) -> AsyncIterator[WorkerRuntime]:
    """A trainer served in this process until the block ends (then drained)."""
    async with serving(serve, config, data_dir=env.data_dir, strategies_dir=env.strategies_dir,
                       models_dir=models_dir, **options) as runtime:
        yield runtime


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
        found = await self.wait_until(
            lambda: next((item.event for item in self.items if item.kind in kinds), None),
            f"a {'/'.join(kinds)} event", timeout=timeout)
        return found

    async def wait_until(self, condition: Callable[[], Any], what: str, *,
                         timeout: float = 60.0) -> Any:
        """Once `condition()` is truthy (checked whenever an event arrives), its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} for {self.job_id} within {timeout}s; "
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


def direct_run(env: Workspace, models_dir: Path, cmd: TrainCommand) -> Any:
    """`TrainingPipeline.run` of the request the trainers derive from `cmd` (a reference)."""
    from libs.pipeline.pipeline import TrainingPipeline
    from libs.pipeline.storage.models import ModelStorage
    from services.trainers.pipeline_runner import PipelineRunner

    pipeline = TrainingPipeline(data_dir=env.data_dir, strategies_dir=env.strategies_dir,
                                storage=ModelStorage(models_dir))
    return pipeline.run(PipelineRunner.request_for(cmd))
