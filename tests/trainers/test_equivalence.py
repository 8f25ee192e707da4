"""Same command, three ways: container trainer, host trainer, direct `TrainingPipeline.run`.

All on the device DeviceManager picks (the CPU in CI; one GPU where there is one), so all three
must give bit-identical weights and identical metrics.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.events.bus import publish_command
from libs.events.models import fetch_model
from libs.events.schema import CompletedEvent
from libs.pipeline.device import DeviceManager
from libs.pipeline.evaluate import headline
from services.host_trainer import main as host_trainer
from services.trainers import container as container_trainer
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.workspace import Workspace
from tests.trainers.conftest import (
    JobEvents,
    command,
    direct_run,
    running,
    weights_hash_of_archive,
)

pytestmark = pytest.mark.anyio


async def test_container_host_and_direct_runs_give_identical_weights_and_metrics(
    nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace, tmp_path: Path
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix)
    outcomes: dict[str, tuple[CompletedEvent, list[tuple]]] = {}
    async with open_bus(config) as bus:
        for kind, serve in (("container", container_trainer.serve), ("host", host_trainer.serve)):
            job = f"same-{kind}"
            async with running(serve, config, trainer_env, tmp_path / kind), \
                    JobEvents(bus, job) as events:
                await publish_command(bus, command(job, seed=5), pool=kind)
                done = await events.wait_for("completed", "failed")
            assert isinstance(done, CompletedEvent), events.kinds
            accepted = events.of("accepted")[0]
            assert accepted.worker_kind == kind
            assert accepted.device == DeviceManager().select().device  # cpu, or cuda:0 on a GPU
            history = [(e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy,
                        e.learning_rate) for e in events.of("epoch")]
            # Check the object store copy holds those very weights.
            assert weights_hash_of_archive(await fetch_model(bus, done.model)) == \
                done.model.weights_sha256
            outcomes[kind] = (done, history)

    reference = await asyncio.to_thread(direct_run, trainer_env, tmp_path / "direct",
                                        command("direct", seed=5))
    expected_history = [(h.epoch, h.train_loss, h.train_accuracy, h.val_loss, h.val_accuracy,
                         h.learning_rate) for h in reference.history]
    expected_test = headline(reference.test_metrics)  # what a `completed` event carries
    assert "backtest_net_return" in expected_test and "baseline_majority_accuracy" in expected_test
    for kind, (done, history) in outcomes.items():
        # Check: bit-identical weights, identical per-epoch and test metrics, same best epoch.
        assert done.model.weights_sha256 == reference.weights_sha256, kind
        assert history == expected_history, kind
        assert done.test_metrics == expected_test, kind
        assert done.best_epoch == reference.best_epoch, kind
