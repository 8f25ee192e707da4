"""TrainingPipeline end to end on small real data: result, phases, cancel, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import Checkpoint, CheckpointError
from libs.pipeline.data import DataError
from libs.pipeline.device import DeviceManager
from libs.pipeline.features import feature_names
from libs.pipeline.pipeline import (
    BAD_INPUT_ERRORS,
    RequestError,
    TrainingPipeline,
    TrainingRequest,
    TrainingResult,
    is_bad_input,
)
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.storage.models import ModelStorage, predict
from libs.pipeline.strategy import StrategyError

from .conftest import TINY_STRATEGY_YAML


@pytest.fixture
def pipeline(tiny_data_dir: Path, tiny_strategies_dir: Path, tmp_path: Path) -> TrainingPipeline:
    return TrainingPipeline(
        data_dir=tiny_data_dir,
        strategies_dir=tiny_strategies_dir,
        storage=ModelStorage(tmp_path / "models"),
        device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}),
    )


def saved_dirs(tmp_path: Path) -> list[Path]:
    root = tmp_path / "models"
    return sorted(p for p in root.rglob("*") if p.is_dir()) if root.exists() else []


def test_run_trains_evaluates_and_saves(pipeline: TrainingPipeline, tmp_path: Path) -> None:
    updates: list[ProgressUpdate] = []
    result = pipeline.run(TrainingRequest(strategy="tiny"), updates.append)

    # Check: the result describes what was done
    assert (result.model.strategy, result.model.timeframe, result.model.version) == (
        "tiny",
        "1h",
        1,
    )
    assert Path(result.model.path).is_dir()
    assert result.epochs_trained == 3 and len(result.history) == 3
    assert result.data.symbols == ["EURUSD", "GBPUSD"] and result.data.timeframes == ["1h"]
    assert result.data.train_rows > 1000 and result.data.test_rows > 100
    assert set(result.data.rows) == {"EURUSD", "GBPUSD"}
    assert result.feature_names == list(
        feature_names(pipeline.load_strategy(TrainingRequest(strategy="tiny")), ["1h"])
    )
    assert result.test_metrics["samples"] == result.data.test_rows
    assert len(result.test_metrics["confusion_matrix"]) == 3
    assert result.device.device == "cpu" and result.seed == 11
    assert msgspec.json.decode(msgspec.json.encode(result), type=TrainingResult) == result

    # Check: a phase update as each step starts, in pipeline order (per symbol first)
    phases = [u.phase for u in updates if u.kind == "phase"]
    per_symbol = ["data", "indicators", "fuzzy", "features", "labels"]
    assert phases == per_symbol * 2 + ["split", "model", "training", "evaluation", "save"]
    assert any(u.kind == "batch" for u in updates) and any(u.kind == "epoch" for u in updates)

    # Check: the saved model loads, matches the result, and predicts
    meta = json.loads((Path(result.model.path) / "metadata.json").read_text())
    assert meta["weights_sha256"] == result.weights_sha256
    assert meta["strategy_hash"] == result.strategy_hash
    assert meta["data_fingerprint"] == result.data.data_fingerprint
    loaded = pipeline.storage.load("tiny")
    assert loaded.feature_names == result.feature_names
    assert predict(loaded, np.zeros((2, len(result.feature_names)), np.float32)).shape == (2, 3)


def test_overrides_and_inline_yaml(pipeline: TrainingPipeline) -> None:
    result = pipeline.run(
        TrainingRequest(
            strategy_yaml=TINY_STRATEGY_YAML,
            symbols=["GBPUSD"],
            epochs=1,
            seed=5,
            start="2020-02-03",
        )
    )
    assert result.data.symbols == ["GBPUSD"] and result.epochs_trained == 1 and result.seed == 5
    assert result.data.time_ranges["GBPUSD"][0].startswith("2020-02-03")
    meta = pipeline.storage.load("tiny").metadata
    assert meta["overrides"] == {
        "symbols": ["GBPUSD"],
        "seed": 5,
        "epochs": 1,
        "start": "2020-02-03",
    }


def test_same_request_same_weights(pipeline: TrainingPipeline) -> None:
    a = pipeline.run(TrainingRequest(strategy="tiny", epochs=2))
    b = pipeline.run(TrainingRequest(strategy="tiny", epochs=2))
    assert a.weights_sha256 == b.weights_sha256 and (a.model.version, b.model.version) == (1, 2)


def test_cancel_mid_epoch_saves_nothing(pipeline: TrainingPipeline, tmp_path: Path) -> None:
    token = CancelToken()

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "batch" and update.epoch == 2 and update.batch == 3:
            token.cancel()

    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(TrainingRequest(strategy="tiny"), trip, token)
    assert info.value.phase == "training"
    assert saved_dirs(tmp_path) == []


def test_cancel_before_start_stops_at_the_first_phase(
    pipeline: TrainingPipeline, tmp_path: Path
) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(TrainingRequest(strategy="tiny"), None, token)
    assert info.value.phase == "data"
    assert saved_dirs(tmp_path) == []


def test_cancel_then_resume_ends_with_the_uninterrupted_weights(
    pipeline: TrainingPipeline,
) -> None:
    request = TrainingRequest(strategy="tiny", epochs=3)
    uninterrupted = pipeline.run(request)

    token = CancelToken()
    taken: list[Checkpoint] = []

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "epoch" and update.epoch == 2:
            token.cancel()

    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(request, trip, token, checkpoint_callback=taken.append, checkpoint_every=1)
    cp = info.value.checkpoint
    assert cp is not None and (cp.epoch, cp.batch_in_epoch) == (2, 0)
    assert [c.epoch for c in taken] == [1, 2, 2]  # periodic after 1 and 2, then on cancel
    assert cp.meta["strategy_hash"] == uninterrupted.strategy_hash

    resumed = pipeline.run(request, resume_from=cp)
    assert resumed.weights_sha256 == uninterrupted.weights_sha256
    assert resumed.resumed_from_epoch == 2
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in uninterrupted.history]


def test_resume_refuses_a_checkpoint_of_another_strategy(pipeline: TrainingPipeline) -> None:
    token = CancelToken()
    taken: list[Checkpoint] = []

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "epoch":
            token.cancel()

    with pytest.raises(TrainingCancelled):
        pipeline.run(
            TrainingRequest(strategy="tiny"), trip, token, checkpoint_callback=taken.append
        )
    other = TINY_STRATEGY_YAML.replace("zigzag_threshold: 0.01", "zigzag_threshold: 0.02")
    other = other.replace("name: tiny", "name: tiny_other")  # tiny's lineage is the file's
    with pytest.raises(CheckpointError, match="another strategy hash"):
        pipeline.run(TrainingRequest(strategy_yaml=other), resume_from=taken[-1])


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (TrainingRequest(), RequestError),
        (TrainingRequest(strategy="tiny", strategy_yaml=TINY_STRATEGY_YAML), RequestError),
        (TrainingRequest(strategy="nosuch"), StrategyError),
        (TrainingRequest(strategy="../etc/passwd"), StrategyError),
        (TrainingRequest(strategy_yaml="name: [unclosed"), StrategyError),
        (
            TrainingRequest(strategy_yaml=TINY_STRATEGY_YAML.replace("epochs: 3", "epochz: 3")),
            StrategyError,
        ),
        (TrainingRequest(strategy="tiny", symbols=["AUDJPY"]), DataError),
        (TrainingRequest(strategy="tiny", symbols=["../x"]), DataError),
        (TrainingRequest(strategy="tiny", timeframes=["2h"]), RequestError),
        (TrainingRequest(strategy="tiny", symbols=["EURUSD", "EURUSD"]), RequestError),
        (TrainingRequest(strategy="tiny", start="2030-01-01"), DataError),
    ],
)
def test_bad_input_raises_a_typed_error_and_writes_nothing(
    pipeline: TrainingPipeline, tmp_path: Path, request_: TrainingRequest, error: type
) -> None:
    with pytest.raises(error) as info:
        pipeline.run(request_)
    assert is_bad_input(info.value) and isinstance(info.value, ValueError)
    assert saved_dirs(tmp_path) == []


def test_bad_device_is_bad_input(tiny_data_dir: Path, tiny_strategies_dir: Path) -> None:
    pipe = TrainingPipeline(
        data_dir=tiny_data_dir,
        strategies_dir=tiny_strategies_dir,
        device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "tpu"}),
    )
    with pytest.raises(BAD_INPUT_ERRORS):
        pipe.run(TrainingRequest(strategy="tiny"))


def test_request_decodes_from_json_strictly() -> None:
    decoded = msgspec.json.decode(
        b'{"strategy": "tiny", "symbols": ["EURUSD"], "epochs": 2}', type=TrainingRequest
    )
    assert decoded == TrainingRequest(strategy="tiny", symbols=["EURUSD"], epochs=2)
    for bad in (b'{"strategy": "tiny", "epochs": 0}', b'{"strategy": "tiny", "epoch": 2}'):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=TrainingRequest)


def test_dirs_from_env(
    monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path, tiny_strategies_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAINBUS_DATA_DIR", str(tiny_data_dir))
    monkeypatch.setenv("TRAINBUS_STRATEGIES_DIR", str(tiny_strategies_dir))
    monkeypatch.setenv("TRAINBUS_MODELS_DIR", str(tmp_path / "env-models"))
    monkeypatch.setenv("TRAINBUS_DEVICE", "cpu")
    result = TrainingPipeline().run(TrainingRequest(strategy="tiny", epochs=1, symbols=["EURUSD"]))
    assert Path(result.model.path).parent.parent == tmp_path / "env-models"


def test_request_dirs_override_the_pipeline_defaults(
    tiny_data_dir: Path, tiny_strategies_dir: Path, tmp_path: Path
) -> None:
    pipe = TrainingPipeline(device_manager=DeviceManager(env={}))
    result = pipe.run(
        TrainingRequest(
            strategy="tiny",
            epochs=1,
            symbols=["EURUSD"],
            data_dir=str(tiny_data_dir),
            strategies_dir=str(tiny_strategies_dir),
            models_dir=str(tmp_path / "req-models"),
        )
    )
    assert Path(result.model.path).is_relative_to(tmp_path / "req-models")



def test_an_inline_strategy_cannot_take_over_a_file_strategys_lineage(
    tiny_strategies_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """What a trainer serving the bus checks before it claims a job (an inline strategy comes
    from any sender); the library itself trusts its caller."""
    from libs.events.commands import CommandRejected
    from libs.events.schema import TrainCommand
    from services.trainers.pipeline_runner import PipelineRunner

    runner = PipelineRunner(data_dir=tiny_data_dir, models_dir=tmp_path / "models",
                            strategies_dir=tiny_strategies_dir)

    def inline(text: str) -> TrainCommand:
        return TrainCommand(job_id="j1", strategy_yaml=text, symbols=("EURUSD",),
                            timeframes=("1h",))

    # The file's own content, sent inline (what `trainbus train strategies/tiny.yaml` does).
    assert runner.check(inline(TINY_STRATEGY_YAML)).seed == 11  # the strategy's own
    impostor = TINY_STRATEGY_YAML.replace("epochs: 3", "epochs: 4")
    with pytest.raises(CommandRejected) as refused:
        runner.check(inline(impostor))
    assert refused.value.field == "strategy_yaml"
    assert str(refused.value).startswith(
        "name: 'tiny' is the name of the trainer's strategy file tiny.yaml, whose content differs")
    assert not (tmp_path / "models").exists()  # nothing written into any lineage
    # Under a name of its own it is any strategy.
    runner.check(inline(impostor.replace("name: tiny", "name: tiny_variant")))
