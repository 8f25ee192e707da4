"""A strategy in the reference platform's v3 style (strategies/eurusd_1h_v3_lstm.yaml: raw
indicator inputs with train-fitted normalization, an LSTM over 16-bar windows, focal loss,
triple-barrier labels in the reference's ATR spelling, uniqueness weights) trains end to end
on real EURUSD on the container trainer and the host trainer, with bit-identical weights and
the same metrics as a direct run; the saved model says what it is and how it scales."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from libs.events.bus import publish_command
from libs.events.models import fetch_model
from libs.events.schema import CompletedEvent
from libs.pipeline.evaluate import headline
from libs.pipeline.strategy import check_strategy
from services.host_trainer import main as host_trainer
from services.trainers import container as container_trainer
from services.trainers.pipeline_runner import load_model_archive
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.market import install_real_data
from tests.harness.nats_server import NatsServer
from tests.harness.workspace import Workspace
from tests.trainers.conftest import JobEvents, command, direct_run, running, weights_hash_of_archive

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
STRATEGY = "eurusd_1h_v3_lstm"


@pytest.fixture(scope="module")
def real_env(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Real EURUSD 1h and the repo's v3 strategy, with 3 epochs instead of 8 (time in CI)."""
    root = tmp_path_factory.mktemp("v3-env")
    install_real_data(root / "data", ("EURUSD", "1h"))
    (root / "strategies").mkdir()
    text = (REPO / "strategies" / f"{STRATEGY}.yaml").read_text()
    assert "  epochs: 8\n" in text
    (root / "strategies" / f"{STRATEGY}.yaml").write_text(text.replace("  epochs: 8\n",
                                                                       "  epochs: 3\n"))
    return Workspace(data_dir=root / "data", strategies_dir=root / "strategies")


def test_the_repo_file_loads_with_only_the_documented_warning() -> None:
    report = check_strategy((REPO / "strategies" / f"{STRATEGY}.yaml").read_text())
    assert not report.problems
    assert [w.path for w in report.warnings] == ["training.method"]


async def test_both_trainers_train_it_bit_identically(
    nats_server_module: NatsServer, unique_prefix: str, real_env: Workspace, tmp_path: Path
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix)
    done_by: dict[str, CompletedEvent] = {}
    archives: dict[str, bytes] = {}
    async with open_bus(config) as bus:
        for kind, serve in (("container", container_trainer.serve), ("host", host_trainer.serve)):
            job = f"v3-{kind}"
            async with running(serve, config, real_env, tmp_path / kind), \
                    JobEvents(bus, job) as events:
                await publish_command(bus, command(job, STRATEGY, symbols=("EURUSD",),
                                                   seed=None), pool=kind)
                done = await events.wait_for("completed", "failed")
            assert isinstance(done, CompletedEvent), events.kinds
            assert [w for w in events.of("accepted")[0].warnings if "training.method" in w]
            archives[kind] = await fetch_model(bus, done.model)
            assert weights_hash_of_archive(archives[kind]) == done.model.weights_sha256
            done_by[kind] = done

    reference = await asyncio.to_thread(direct_run, real_env, tmp_path / "direct",
                                        command("direct", STRATEGY, symbols=("EURUSD",),
                                                seed=None))
    for kind, done in done_by.items():
        assert done.model.weights_sha256 == reference.weights_sha256, kind
        assert done.test_metrics == headline(reference.test_metrics), kind

    # What was saved: an LSTM over 16 bars, per-step feature names, the training slice's
    # normalization of the raw inputs (and none of the fuzzy ones).
    version_dir = Path(reference.model.path)
    manifest = json.loads((version_dir / "metadata.json").read_text())
    assert manifest["model"]["type"] == "lstm"
    assert manifest["model"]["sequence_length"] == 16
    features = json.loads((version_dir / "features.json").read_text())
    assert not any("_lag_" in name for name in features["feature_names"])
    assert features["requires_scaling"] is True
    assert sorted(features["normalization"]) == ["1h_macd_12_26_9.line", "1h_roc_10",
                                                 "1h_rsi_14"]
    loaded = load_model_archive(archives["host"])
    assert loaded.model.input_scaler.active  # type: ignore[union-attr]
    shutil.rmtree(tmp_path / "direct", ignore_errors=True)
