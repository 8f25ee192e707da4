"""One behavioural contract, run against both trainers (eventsourcing-style contract tests).

`TrainerContract` holds the tests; each subclass names a trainer's `serve`; the base class is
deleted at the end so pytest collects only the concrete suites. Real server, real training.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest
import yaml

from libs.events.bus import publish, publish_cancel, publish_command
from libs.events.fold import fold_all
from libs.events.follow import read_job_log
from libs.events.heartbeat import has_live_host_trainer, read_workers
from libs.events.models import fetch_model
from libs.events.schema import CancelCommand, CompletedEvent, EpochEvent, ProgressEvent
from libs.events.worker.runtime import WorkerRuntime
from libs.pipeline.device import DeviceManager
from libs.pipeline.storage.models import ModelStorage, weights_sha256
from services.host_trainer import main as host_trainer
from services.trainers import container as container_trainer
from services.trainers.pipeline_runner import load_model_archive
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import eventually
from tests.harness.strategies import TINY_SEED, strategy_yaml
from tests.harness.trainers import ServeFn
from tests.harness.workspace import Workspace
from tests.trainers.conftest import JobEvents, command, object_names, running

pytestmark = pytest.mark.anyio


class TrainerContract:
    serve: ClassVar[ServeFn]
    kind: ClassVar[str]

    async def test_a_job_runs_to_completed_with_the_model_on_disk_and_in_the_object_store(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ) as runtime:
            async with JobEvents(bus, "full-1") as events:
                await publish_command(bus, command("full-1"), pool=self.kind)
                done = await events.wait_for("completed", "failed")
            # Check the job was claimed by this trainer and completed.
            assert isinstance(done, CompletedEvent), events.kinds
            accepted = events.of("accepted")[0]
            assert accepted.worker_kind == self.kind
            assert accepted.worker_id == runtime.settings.worker_id
            assert accepted.device == DeviceManager().select().device  # cpu, or cuda:0 on a GPU
            # Check the model on disk and the one in the object store are the same weights.
            ref = done.model
            assert ref.local_path
            assert await asyncio.to_thread(Path(ref.local_path).is_dir)
            strategy, version = ref.strategy, ref.version.split("_v")
            local = ModelStorage(tmp_path / "models").load(strategy, int(version[1]), version[0])
            assert weights_sha256(local.model.state_dict()) == ref.weights_sha256
            archive = await fetch_model(bus, ref)
            fetched = load_model_archive(archive)
            assert weights_sha256(fetched.model.state_dict()) == ref.weights_sha256
            assert done.best_epoch is not None
            # The event carries the headline of the evaluation: named metrics, baselines, lift,
            # the backtest beside buy-and-hold, and the warnings metrics.json has too.
            assert {"accuracy", "macro_f1", "baseline_majority_accuracy",
                    "lift_accuracy_vs_last_confirmed", "backtest_net_return",
                    "buy_and_hold_net_return"} <= set(done.test_metrics)
            saved = json.loads(await asyncio.to_thread(
                (Path(ref.local_path) / "metrics.json").read_text))
            assert done.warnings == saved["warnings"]
            assert done.test_metrics["macro_f1"] == saved["test"]["macro_f1"]


    async def test_a_job_without_a_seed_trains_with_the_strategys_seed(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        """Regression: the bus used to default the seed to 0 while the strategy said 11."""
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ):
            async with JobEvents(bus, "seedless-1") as events:
                receipt = await publish_command(bus, command("seedless-1", seed=None),
                                                pool=self.kind)
                done = await events.wait_for("completed", "failed")
            assert isinstance(done, CompletedEvent), events.kinds
            log = await read_job_log(bus, "seedless-1", command_seq=receipt.seq)
        # Check the command left the seed out, and everything after it names the strategy's.
        assert log[0].body.seed is None  # type: ignore[union-attr]
        assert events.of("accepted")[0].seed == TINY_SEED
        assert fold_all(log)["seedless-1"].seed == TINY_SEED
        model_dir = Path(done.model.local_path or "")
        metadata = await asyncio.to_thread((model_dir / "metadata.json").read_text)
        assert json.loads(metadata)["seed"] == TINY_SEED
        saved = yaml.safe_load(await asyncio.to_thread((model_dir / "config.yaml").read_text))
        assert saved["training"]["seed"] == TINY_SEED

    async def test_progress_and_epoch_events_arrive_in_order(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ), JobEvents(bus, "order-1") as events:
            await publish_command(bus, command("order-1"), pool=self.kind)
            await events.wait_for("completed", "failed")
        kinds = events.kinds
        # Check the shape: claimed first, phases, training, then publish and completed last.
        assert kinds[0] == "accepted" and kinds[-1] == "completed", kinds
        assert kinds[-2] == "phase" and events.of("phase")[-1].phase == "publish"
        phases = [e.phase for e in events.of("phase")]
        # The data was prepared while the job was checked: the run starts from its split.
        assert phases[0] == "split" and "training" in phases and "evaluation" in phases
        # Check epochs: every epoch once, in order, each preceded by its own last batch
        # (the latest progress is always flushed before the epoch event).
        epochs = events.of("epoch")
        assert [e.epoch for e in epochs] == [1, 2, 3, 4]
        assert all(e.total_epochs == 4 and e.train_loss is not None for e in epochs)
        for item_index, stored in enumerate(events.items):
            if stored.kind == "epoch":
                before = [s.event for s in events.items[:item_index] if s.kind == "progress"]
                assert before, "no progress before an epoch event"
                last = before[-1]
                assert isinstance(last, ProgressEvent), last
                assert isinstance(stored.event, EpochEvent), stored.event
                assert (last.epoch, last.batch) == (stored.event.epoch, last.total_batches)
        # Check progress moves forward and stays throttled (<= ~4/s plus one flush per epoch).
        progress = events.of("progress")
        positions = [(p.epoch, p.batch) for p in progress]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        span = progress[-1].time - progress[0].time
        assert len(progress) <= 4 * span + len(epochs) + 2
        # Check the stream sequence numbers are the stored order.
        seqs = [s.seq for s in events.items]
        assert seqs == sorted(seqs)

    async def test_cancel_while_running_ends_cancelled_and_publishes_no_model(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ):
            async with JobEvents(bus, "cancel-run") as events:
                await publish_command(bus, command("cancel-run", "slow"), pool=self.kind)
                await events.wait_for("epoch")  # training is under way
                await publish_cancel(bus, "cancel-run", CancelCommand(reason="changed my mind"))
                done = await events.wait_for("cancelled", "completed", "failed", timeout=30)
            # Check it ended cancelled (never failed), with the reason, and nothing after it.
            assert type(done).__name__ == "CancelledEvent", events.kinds
            assert done.reason == "changed my mind"
            assert events.kinds[-1] == "cancelled"
            assert "completed" not in events.kinds and "failed" not in events.kinds
            # Check no model is in the object store, and the checkpoints are cleaned up.
            await eventually(lambda: object_names(bus),
                             lambda names: not [n for n in names if "cancel-run" in n])
            # Check the worker keeps serving: the next job completes.
            async with JobEvents(bus, "after-cancel") as events:
                await publish_command(bus, command("after-cancel"), pool=self.kind)
                assert isinstance(await events.wait_for("completed", "failed"), CompletedEvent)

    async def test_cancel_while_queued_ends_cancelled_without_running(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus:
            # Queued: the command and its cancel are in the log before any trainer runs.
            await publish_command(bus, command("cancel-queued"), pool=self.kind)
            await publish_cancel(bus, "cancel-queued", CancelCommand(reason="not needed"))
            async with JobEvents(bus, "cancel-queued") as events, running(
                type(self).serve, config, trainer_env, tmp_path / "models"
            ):
                done = await events.wait_for("cancelled", "accepted", "completed")
                # Check a later job still runs: the cancelled command was settled.
                async with JobEvents(bus, "next") as next_events:
                    await publish_command(bus, command("next"), pool=self.kind)
                    assert isinstance(await next_events.wait_for("completed", "failed"),
                                      CompletedEvent)
            assert type(done).__name__ == "CancelledEvent"
            assert done.reason == "not needed"
            assert events.kinds == ["cancelled"]  # never accepted, never ran
            assert not list((tmp_path / "models").glob("tiny/*_v*"))[1:]  # only "next"'s

    async def test_bad_commands_are_rejected_and_the_trainer_keeps_serving(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        subject = f"{unique_prefix}.cmd.train.{self.kind}"
        bad_yaml = strategy_yaml("inline", epochs=2).replace("rsi_zone:", "rsi_zone: [")
        unknown_indicator = strategy_yaml("inline", epochs=2).replace("type: rsi,", "type: nope,")
        cases: dict[str, tuple[bytes, str | None]] = {
            # job id -> (raw body, the field the rejection must name)
            "bad-strategy": (_body("bad-strategy", strategy="no_such_strategy"), "strategy"),
            "bad-yaml": (_body("bad-yaml", strategy_yaml=bad_yaml), "strategy_yaml"),
            "bad-indicator": (_body("bad-indicator", strategy_yaml=unknown_indicator),
                              "strategy_yaml"),
            "bad-data": (_body("bad-data", symbols=["NODATA"]), "symbols"),
            "bad-name": (b'{"job_id":"x.*.>","strategy":"tiny","symbols":["EURUSD"],'
                         b'"timeframes":["1h"]}', "job_id"),
            "bad-path": (_body("bad-path", strategy="../../etc/passwd"), "strategy"),
            "bad-json": (b"{not json", None),
            # Data that trains nothing worth a number: refused before the claim, naming the key.
            "one-day": (_body("one-day", start="2020-02-03", end="2020-02-04"),
                        "training.data_split.train"),
            "no-test": (_body("no-test", strategy_yaml=strategy_yaml("inline", epochs=2).replace(
                "test: 0.15", "test: 0.0").replace("train: 0.7", "train: 0.85")),
                        "strategy_yaml"),
        }
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ):
            readers = {job: JobEvents(bus, job) for job in cases}
            for reader in readers.values():
                await reader.__aenter__()
            try:
                for job, (body, _) in cases.items():
                    await publish(bus, subject, body, msg_id=f"train:{job}")
                async with JobEvents(bus, "good-after-bad") as good:
                    await publish_command(bus, command("good-after-bad"), pool=self.kind)
                    assert isinstance(await good.wait_for("completed", "failed"), CompletedEvent)
                for job, (_, field) in cases.items():
                    rejected = await readers[job].wait_for("rejected", "accepted")
                    # Check each bad command became one `rejected` with a reason and the field.
                    assert type(rejected).__name__ == "RejectedEvent", (job, readers[job].kinds)
                    assert rejected.reason, job
                    assert rejected.field == field, (job, rejected.field, rejected.reason)
                    assert readers[job].kinds == ["rejected"], job
            finally:
                for reader in readers.values():
                    await reader.__aexit__(None, None, None)


async def _session(runtime: WorkerRuntime) -> dict:
    return runtime.heartbeat().session or {}


def _body(job_id: str, **fields: object) -> bytes:
    base: dict[str, object] = {"job_id": job_id, "strategy": "tiny", "symbols": ["EURUSD"],
                               "timeframes": ["1h"]}
    base.update(fields)
    if "strategy_yaml" in fields:
        base.pop("strategy")
    return msgspec.json.encode(base)


class TestContainerTrainer(TrainerContract):
    serve = staticmethod(container_trainer.serve)
    kind = "container"

    async def test_accepted_carries_the_strategys_warnings(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        """Keys accepted but ignored (here `training.method`) are announced in `accepted` and
        kept in the folded job state."""
        config = trainer_bus_config(nats_server_module, unique_prefix)
        text = strategy_yaml("inline", epochs=1).replace(
            "training:\n", "training:\n  method: supervised\n")
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ):
            async with JobEvents(bus, "warned-1") as events:
                inline = msgspec.structs.replace(command("warned-1"), strategy=None,
                                                 strategy_yaml=text)
                receipt = await publish_command(bus, inline, pool=self.kind)
                done = await events.wait_for("completed", "failed")
            assert isinstance(done, CompletedEvent), events.kinds
            log = await read_job_log(bus, "warned-1", command_seq=receipt.seq)
        warnings = events.of("accepted")[0].warnings
        assert warnings == [
            "training.method: supervised is the only method; the key changes nothing"]
        assert fold_all(log)["warned-1"].warnings[:1] == tuple(warnings)


class TestHostTrainer(TrainerContract):
    serve = staticmethod(host_trainer.serve)
    kind = "host"

    async def test_its_heartbeat_reports_the_session(
        self, nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
        tmp_path: Path,
    ) -> None:
        config = trainer_bus_config(nats_server_module, unique_prefix)
        async with open_bus(config) as bus, running(
            type(self).serve, config, trainer_env, tmp_path / "models"
        ) as runtime:
            # Check: live in KV as a host trainer, idle, with its device and capabilities.
            (beat,) = await read_workers(bus)
            device = DeviceManager().select()
            assert (beat.kind, beat.pools, beat.device) == ("host", ["host", "any"], device.device)
            assert beat.capabilities["device_type"] == device.type and beat.running == []
            assert beat.session is not None and beat.session["status"] == "idle"
            assert await has_live_host_trainer(bus)
            async with JobEvents(bus, "session-1") as events:
                await publish_command(bus, command("session-1"), pool="host")
                await events.wait_for("epoch")
                running_view = runtime.heartbeat()
                await events.wait_for("completed")
            # Check: the session followed the job (running, then completed with metrics).
            assert running_view.running == ["session-1"]
            assert running_view.session is not None
            assert running_view.session["job_id"] == "session-1"
            assert running_view.session["status"] == "running"
            session = await eventually(lambda: _session(runtime),
                                       lambda view: view.get("status") == "completed")
            assert session["epoch"] == session["total_epochs"] == 4
            assert session["metrics"]["val_loss"] is not None
            assert "test_accuracy" in session["metrics"]


del TrainerContract
