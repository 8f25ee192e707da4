"""LSTM and GRU over sequence windows: the grammar (errors name their path), the windows (equal
to a copy-based construction, never across symbols, the full view a view), and real training on
real hourly EURUSD through TrainingPipeline.run: repeatable, resumable mid-epoch to the same
weights, and predicted from the raw file bit for bit as at training time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import Checkpoint, checkpoint_from_bytes, checkpoint_to_bytes
from libs.pipeline.device import DeviceManager
from libs.pipeline.features import FeatureMatrix
from libs.pipeline.model import build_model, parameter_count
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest, TrainingResult
from libs.pipeline.predict import predict_symbol
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.recurrent import RecurrentModel, recurrent_parameter_count
from libs.pipeline.storage.models import ModelStorage, predict
from libs.pipeline.strategy import StrategyError, parse_strategy
from libs.pipeline.windows import Windows, stack_windows
from tests.harness.market import install_real_data

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6


def recurrent_yaml(kind: str, *, architecture: dict[str, Any] | None = None,
                   features: dict[str, Any] | None = None, epochs: int = 2) -> str:
    """The real-EURUSD example strategy with a small recurrent model and a short training."""
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    strategy["name"] = f"eurusd_{kind}"
    model: dict[str, Any] = {"type": kind, "architecture": architecture or {
        "sequence_length": STEPS, "hidden_size": 12, "num_layers": 2, "dropout": 0.2}}
    if features is not None:
        model["features"] = features
    strategy["model"] = model
    training = {**strategy["training"], "epochs": epochs, "batch_size": 256}
    training.pop("walk_forward")
    training.pop("early_stopping")
    strategy["training"] = training
    return yaml.safe_dump(strategy, sort_keys=False)


# --- the grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "architecture", "features", "path"),
    [
        ("lstm", {"hidden_size": 8}, None, "model.architecture.sequence_length"),
        ("gru", {"sequence_length": 10, "hidden_layers": [8]}, None,
         "model.architecture.hidden_layers"),
        ("lstm", {"sequence_length": 10, "activation": "tanh"}, None,
         "model.architecture.activation"),
        ("lstm", {"sequence_length": 10}, {"lookback_periods": 2},
         "model.features.lookback_periods"),
        ("mlp", {"hidden_layers": [8], "sequence_length": 10}, None,
         "model.architecture.sequence_length"),
        ("gru", {"sequence_length": 1}, None, "model.architecture.sequence_length"),
        ("lstm", {"sequence_length": 10, "num_layers": 0}, None, "model.architecture.num_layers"),
    ],
)
def test_inconsistent_model_settings_are_refused_by_path(
    kind: str, architecture: dict[str, Any], features: dict[str, Any] | None, path: str
) -> None:
    with pytest.raises(StrategyError, match=path.replace(".", r"\.")):
        parse_strategy(recurrent_yaml(kind, architecture=architecture, features=features))


def test_the_reference_grammar_loads_with_its_defaults_and_mlps_are_unchanged() -> None:
    lstm = parse_strategy(recurrent_yaml("lstm", architecture={"sequence_length": 20}))
    arch = lstm.model.architecture
    assert (lstm.model.type, arch.sequence_length, arch.hidden_size, arch.num_layers,
            arch.dropout, arch.bidirectional) == ("lstm", 20, 64, 2, 0.2, False)
    mlp = parse_strategy((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    assert (mlp.model.type, mlp.model.architecture.hidden_layers,
            mlp.model.features.lookback_periods) == ("mlp", (32, 16), 2)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_parameter_count_is_the_built_models(kind: str, bidirectional: bool) -> None:
    arch = parse_strategy(recurrent_yaml(kind, architecture={
        "sequence_length": 5, "hidden_size": 7, "num_layers": 3,
        "bidirectional": bidirectional})).model.architecture
    model = build_model(9, 3, parse_strategy(recurrent_yaml(kind, architecture={
        "sequence_length": 5, "hidden_size": 7, "num_layers": 3,
        "bidirectional": bidirectional})).model)
    assert isinstance(model, RecurrentModel) and model.rnn.bidirectional == bidirectional
    assert parameter_count(model) == recurrent_parameter_count(kind, 9, 3, arch)  # type: ignore[arg-type]
    assert model(torch.zeros(4, 5, 9)).shape == (4, 3)


def test_a_recurrent_model_refuses_plain_rows() -> None:
    from libs.pipeline.trainer import TrainingInputError, train

    strategy = parse_strategy(recurrent_yaml("lstm"))
    model = build_model(3, 3, strategy.model)
    rows, labels = np.zeros((8, 3), np.float32), np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int8)
    with pytest.raises(TrainingInputError, match=f"windows of {STEPS} bars"):
        train(model, rows, labels, rows[:0], labels[:0], strategy.training, epochs=1)


# --- the windows ------------------------------------------------------------------------------


def lagged_matrix(bars: np.ndarray, length: int) -> FeatureMatrix:
    """A FeatureMatrix over (bars, features) values engineered with lags = length - 1."""
    n, width = bars.shape
    names = [f"f{j}" for j in range(width)]
    names += [f"{name}_lag_{k}" for k in range(1, length) for name in names[:width]]
    index = pd.date_range("2024-01-01", periods=n - (length - 1), freq="h", tz="UTC")
    return FeatureMatrix(np.ascontiguousarray(bars.T.astype(np.float32)), tuple(names), index,
                         length - 1)


def naive_windows(bars: np.ndarray, rows: np.ndarray, length: int) -> np.ndarray:
    """Row i of the matrix ends at bar i + length - 1: copy its window bar by bar."""
    return np.stack([bars[i : i + length] for i in rows]).astype(np.float32)


def test_windows_are_the_copied_windows_and_never_cross_symbols() -> None:
    rng = np.random.default_rng(3)
    # Symbol A positive, symbol B negative: a window that crossed would mix signs.
    a, b = rng.uniform(1, 2, (40, 3)), -rng.uniform(1, 2, (30, 3))
    rows_a, rows_b = np.array([0, 1, 2, 7, 8, 20]), np.array([3, 4, 5, 24])  # gaps: purged rows
    windows = stack_windows([(lagged_matrix(a, STEPS), rows_a),
                             (lagged_matrix(b, STEPS), rows_b)], STEPS)
    expected = np.concatenate([naive_windows(a, rows_a, STEPS), naive_windows(b, rows_b, STEPS)])
    got = windows[torch.arange(len(windows))].numpy()
    assert got.shape == (10, STEPS, 3)
    np.testing.assert_array_equal(got, expected)
    assert (got[:6] > 0).all() and (got[6:] < 0).all()
    np.testing.assert_array_equal(windows[2:5].numpy(), expected[2:5])
    # A matrix whose rows were picked by a mask (lags expanded) gives the same windows.
    masked = lagged_matrix(a, STEPS).select(np.isin(np.arange(40 - STEPS + 1), rows_a))
    again = stack_windows([(masked, np.arange(len(rows_a)))], STEPS)
    np.testing.assert_array_equal(again[torch.arange(len(again))].numpy(), expected[:6])


def test_bars_no_window_reads_are_zeroed_so_a_finite_check_sees_only_what_is_read() -> None:
    bars = np.arange(60, dtype=np.float32).reshape(20, 3)
    bars[10] = np.nan  # a purged row's bar, read by no kept window
    windows = stack_windows([(lagged_matrix(bars, 3), np.array([0, 12, 13]))], 3)
    assert windows.is_finite()
    np.testing.assert_array_equal(windows[torch.tensor([1])].numpy()[0], bars[12:15])


def test_the_full_view_does_not_copy() -> None:
    bars = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    windows = Windows(bars, np.array([5, 9, 49]), 6)
    view = windows.numpy_view()
    assert view.shape == (45, 6, 4) and np.shares_memory(view, bars)
    assert windows.view().untyped_storage().data_ptr() == windows.bars.untyped_storage().data_ptr()
    np.testing.assert_array_equal(view[9 - 5], bars[4:10])
    np.testing.assert_array_equal(windows[1:2].numpy()[0], bars[4:10])


# --- real training ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("eurusd")
    install_real_data(data, ("EURUSD", "1h"))
    return data


def make_pipeline(data: Path, models: Path) -> TrainingPipeline:
    return TrainingPipeline(data_dir=data, storage=ModelStorage(models),
                            device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))


@pytest.fixture(scope="module", params=["lstm", "gru"])
def trained(
    request: pytest.FixtureRequest, eurusd: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, TrainingResult]:
    kind = str(request.param)
    models = tmp_path_factory.mktemp(f"models_{kind}")
    result = make_pipeline(eurusd, models).run(
        TrainingRequest(strategy_yaml=recurrent_yaml(kind)))
    return kind, models, result


def test_training_twice_with_the_same_seed_gives_the_same_weights(
    trained: tuple[str, Path, TrainingResult], eurusd: Path, tmp_path: Path
) -> None:
    kind, _, first = trained
    again = make_pipeline(eurusd, tmp_path).run(
        TrainingRequest(strategy_yaml=recurrent_yaml(kind)))
    assert again.weights_sha256 == first.weights_sha256
    assert [h.val_loss for h in again.history] == [h.val_loss for h in first.history]
    assert first.epochs_trained == 2 and first.test_metrics["samples"] > 100


def test_the_saved_model_is_per_step_and_says_its_shape(
    trained: tuple[str, Path, TrainingResult],
) -> None:
    kind, _, result = trained
    saved = Path(result.model.path)
    names = json.loads((saved / "features.json").read_text())["feature_names"]
    assert len(names) == 8 and not any("_lag_" in n for n in names)
    model = json.loads((saved / "metadata.json").read_text())["model"]
    assert (model["type"], model["sequence_length"], model["hidden_size"], model["input_dim"]) \
        == (kind, STEPS, 12, 8)
    assert "hidden_layers" not in model


def test_cancel_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(
    trained: tuple[str, Path, TrainingResult], eurusd: Path, tmp_path: Path
) -> None:
    kind, _, uninterrupted = trained
    pipeline = make_pipeline(eurusd, tmp_path)
    request = TrainingRequest(strategy_yaml=recurrent_yaml(kind))
    token = CancelToken()

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "batch" and update.epoch == 2 and update.batch == 3:
            token.cancel("test")

    taken: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(request, trip, token, checkpoint_callback=taken.append)
    cp = info.value.checkpoint
    assert cp is not None and (cp.epoch, cp.batch_in_epoch) == (1, 3)
    torch.manual_seed(999)  # disturb the global RNG: the resume must restore it
    resumed = pipeline.run(request, resume_from=checkpoint_from_bytes(checkpoint_to_bytes(cp)))
    assert resumed.weights_sha256 == uninterrupted.weights_sha256


def test_predicting_the_test_window_from_the_raw_file_is_bit_identical(
    trained: tuple[str, Path, TrainingResult], eurusd: Path
) -> None:
    kind, models, result = trained
    loaded = ModelStorage(models).load(result.model.strategy, result.model.version)
    prepared = make_pipeline(eurusd, models).prepare(
        TrainingRequest(strategy_yaml=recurrent_yaml(kind)))
    splits = prepared.splits
    assert isinstance(splits.x_test, Windows) and splits.x_test.shape[1:] == (STEPS, 8)
    times = pd.DatetimeIndex(pd.to_datetime(splits.test_times, utc=True))
    served = predict_symbol(loaded, "EURUSD", data_dir=eurusd, start=times[0])
    at = served.times.get_indexer(times)
    assert (at >= 0).all(), "every test bar is predicted"
    trained_outputs = predict(loaded, splits.x_test)
    np.testing.assert_array_equal(served.outputs[at], trained_outputs)
    metrics = json.loads((Path(result.model.path) / "metrics.json").read_text())["test"]
    classes = served.outputs[at].argmax(axis=1)
    assert float((classes == splits.y_test).mean()) == metrics["accuracy"]


def test_walk_forward_folds_hold_windows_of_their_own_rows(eurusd: Path, tmp_path: Path) -> None:
    strategy = yaml.safe_load(recurrent_yaml("gru"))
    strategy["training"]["walk_forward"] = {"folds": 2, "mode": "expanding"}
    prepared = make_pipeline(eurusd, tmp_path).prepare(
        TrainingRequest(strategy_yaml=yaml.safe_dump(strategy, sort_keys=False)))
    assert len(prepared.folds) == 2
    for fold in prepared.folds:
        for x, y in ((fold.splits.x_train, fold.splits.y_train),
                     (fold.splits.x_test, fold.splits.y_test)):
            assert isinstance(x, Windows) and len(x) == len(y) and x.shape[1:] == (STEPS, 8)
        # Each fold's bars are its own copy: at most its rows plus one warm-up per block.
        train = fold.splits.x_train
        assert isinstance(train, Windows) and len(train.bars) < len(train) + STEPS * 4


# --- CUDA -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device: cuDNN's LSTM/GRU kernels run only there")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cudnn_recurrent_training_is_repeatable(kind: str, eurusd: Path, tmp_path: Path) -> None:
    def on_gpu(models: Path) -> TrainingResult:
        pipeline = TrainingPipeline(
            data_dir=eurusd, storage=ModelStorage(models),
            device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cuda"}))
        return pipeline.run(TrainingRequest(strategy_yaml=recurrent_yaml(kind)))

    first, second = on_gpu(tmp_path / "a"), on_gpu(tmp_path / "b")
    assert first.device.device.startswith("cuda")
    assert first.weights_sha256 == second.weights_sha256
    assert [h.train_loss for h in first.history] == [h.train_loss for h in second.history]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_bidirectional_model_reads_each_directions_full_window_state(
    kind: Literal["lstm", "gru"],
) -> None:
    """What reaches the output layer is each direction's state after reading the WHOLE window:
    the forward direction's at the last bar, the backward direction's at the first (torch's
    final hidden state `h_n` of the top layer). The backward state at the last bar has seen one
    bar only, so a change to the window's first bar would not reach that half."""
    torch.manual_seed(3)
    model = RecurrentModel(kind, 4, 3, sequence_length=STEPS, hidden_size=5, num_layers=2,
                           dropout=0.0, bidirectional=True).eval()
    seen: list[torch.Tensor] = []
    model.output.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    x = torch.randn(7, STEPS, 4)
    with torch.no_grad():
        model(x)
        _, state = model.rnn(model.input_scaler(x))
    h_n = state[0] if kind == "lstm" else state
    forward_top, backward_top = h_n[-2], h_n[-1]
    assert torch.equal(seen[0], torch.cat((forward_top, backward_top), dim=1))

    changed = x.clone()
    changed[:, 0] += 1.0  # only the first bar of each window
    with torch.no_grad():
        model(changed)
    backward_half = slice(5, 10)
    assert not torch.allclose(seen[1][:, backward_half], seen[0][:, backward_half])
