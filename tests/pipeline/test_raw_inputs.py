"""Raw indicator inputs (`nn_inputs: [{raw_indicator: id[.output], normalization: ...}]`): the
schema names the path of every bad input; the columns are the indicator's own values, aligned
across timeframes without look-ahead; the normalization is fitted on the training rows only
(every walk-forward fold on its own), saved in model.safetensors and applied by prediction, bit
for bit; a model saved before scaling existed still loads and predicts what it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.data import resample
from libs.pipeline.dataset import DataSplits, symbol_features
from libs.pipeline.device import DeviceManager
from libs.pipeline.features import feature_names
from libs.pipeline.indicators import compute_indicators
from libs.pipeline.model import build_model
from libs.pipeline.normalization import (
    InputScaler,
    feature_normalizations,
    fit_scaler,
    with_identity_scalers,
)
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.predict import predict_symbol
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.storage.layout import json_bytes, sha256_bytes
from libs.pipeline.storage.models import ModelStorage, predict
from libs.pipeline.strategy import StrategyError, check_strategy, dump_yaml, parse_strategy
from tests.harness.market import install_real_data, load_real

ROOT = Path(__file__).resolve().parents[2]

RAW_INPUTS = [
    {"fuzzy_set": "rsi_zone", "timeframes": "all"},
    {"raw_indicator": "macd_12_26_9.histogram", "timeframes": ["1h"], "normalization": "zscore"},
    {"raw_indicator": "adx_14", "normalization": "minmax"},
    {"raw_indicator": "rsi_14"},  # zscore by default
]
METHODS = ("none", "none", "none", "zscore", "minmax", "zscore")  # per unlagged feature


def strategy_text(training: dict[str, Any] | None = None, **changes: Any) -> str:
    """The real EURUSD example, trained briefly (`training` keys changed), with `changes` as
    whole sections."""
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    training = {**strategy["training"], "epochs": 2, "walk_forward": None, **(training or {})}
    strategy["training"] = {k: v for k, v in training.items() if v is not None}
    strategy["nn_inputs"] = RAW_INPUTS
    strategy.update(changes)
    return yaml.safe_dump(strategy, sort_keys=False)


def problems_of(nn_inputs: list[dict[str, Any]]) -> list[str]:
    return [str(p) for p in check_strategy(strategy_text(nn_inputs=nn_inputs)).problems]


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_input", "problem"),
    [
        ({"fuzzy_set": "rsi_zone", "raw_indicator": "rsi_14"},
         "nn_inputs[1]: give exactly one of fuzzy_set or raw_indicator, got both"),
        ({"timeframes": "all"},
         "nn_inputs[1]: give exactly one of fuzzy_set or raw_indicator, got neither"),
        ({"fuzzy_set": "macd_momentum", "normalization": "zscore"},
         'nn_inputs[1].normalization: "zscore" applies to raw_indicator inputs only: fuzzy '
         "memberships are already in [0, 1]; drop it or write none"),
        ({"raw_indicator": "rsi_14", "normalization": "robust"},
         "nn_inputs[1].normalization: invalid enum value 'robust'; expected one of: minmax, "
         "none, zscore"),
        ({"raw_indicator": "rsi_99"},
         "nn_inputs[1].raw_indicator: unknown indicator 'rsi_99'; defined: rsi_14, "
         "macd_12_26_9, adx_14"),
        ({"raw_indicator": "macd_12_26_9.hist"},
         "nn_inputs[1].raw_indicator: macd_12_26_9 has no output 'hist'; outputs: line, "
         "signal, histogram"),
        ({"raw_indicator": "rsi_14.value"},
         "nn_inputs[1].raw_indicator: rsi_14 has a single output; refer to it as 'rsi_14'"),
        ({"raw_indicator": "rsi_14", "timeframes": ["4h"]},
         "nn_inputs[1].timeframes: 4h not in training_data.timeframes (1h)"),
    ],
)
def test_a_bad_input_is_reported_at_its_path(bad_input: dict[str, Any], problem: str) -> None:
    assert problems_of([{"fuzzy_set": "rsi_zone"}, bad_input]) == [problem]


def test_a_raw_input_listed_twice_is_reported() -> None:
    assert problems_of([{"raw_indicator": "rsi_14"}, {"raw_indicator": "rsi_14"}]) == [
        "nn_inputs[1].raw_indicator: 'rsi_14' is listed twice"
    ]


def test_raw_inputs_resolve_their_default_name_their_features_and_round_trip() -> None:
    strategy = parse_strategy(strategy_text())
    assert [nn.normalization for nn in strategy.nn_inputs] == [None, "zscore", "minmax", "zscore"]
    names = feature_names(strategy, ["1h"])
    assert names[3:6] == ("1h_macd_12_26_9.histogram", "1h_adx_14", "1h_rsi_14")
    assert names[6] == "1h_rsi_zone_weak_lag_1" and names[-1] == "1h_rsi_14_lag_2"
    # Lag copies take their base column's method.
    assert feature_normalizations(strategy, ["1h"]) == METHODS * 3
    assert parse_strategy(dump_yaml(strategy)) == strategy  # the saved config.yaml reads back


# --- the columns -------------------------------------------------------------------------------


MULTI_TF = {
    "symbols": {"mode": "single", "symbol": "EURUSD"},
    "timeframes": {"mode": "multi_timeframe", "list": ["1h", "4h"], "base_timeframe": "1h"},
}


def multi_tf_strategy() -> Any:
    return parse_strategy(strategy_text(
        training_data=MULTI_TF,
        nn_inputs=[{"raw_indicator": "rsi_14", "timeframes": "all"}],
        model={"type": "mlp", "features": {"lookback_periods": 0}},
    ))


def test_raw_columns_are_the_indicator_values_and_a_higher_timeframe_waits_for_its_close() -> None:
    strategy = multi_tf_strategy()
    hourly = load_real("EURUSD", "1h")
    prices = {"1h": hourly, "4h": resample(hourly, "4h")}
    matrix = symbol_features(strategy, "EURUSD", prices, "1h").to_frame()
    assert list(matrix.columns) == ["1h_rsi_14", "4h_rsi_14"]

    rsi_1h = compute_indicators(prices["1h"], strategy.indicators)["rsi_14"]
    np.testing.assert_array_equal(
        matrix["1h_rsi_14"].to_numpy(), rsi_1h.loc[matrix.index].to_numpy(dtype=np.float32)
    )
    # Independently: each hour sees the last 4h bar that CLOSED by the hour's own close.
    rsi_4h = compute_indicators(prices["4h"], strategy.indicators)["rsi_14"]
    closes_4h = pd.DataFrame({"close_time": rsi_4h.index + pd.Timedelta("4h"),
                              "rsi": rsi_4h.to_numpy(dtype=np.float32)})
    hours = pd.DataFrame({"close_time": matrix.index + pd.Timedelta("1h")})
    seen = pd.merge_asof(hours, closes_4h, on="close_time", direction="backward")
    np.testing.assert_array_equal(matrix["4h_rsi_14"].to_numpy(), seen["rsi"].to_numpy())


def test_a_row_computed_from_data_ending_at_it_is_the_same() -> None:
    """No look-ahead: cutting the file at a bar (a half-built 4h bar at its end) changes nothing
    on that bar's row."""
    strategy = multi_tf_strategy()
    hourly = load_real("EURUSD", "1h")
    full = symbol_features(strategy, "EURUSD", {"1h": hourly, "4h": resample(hourly, "4h")},
                           "1h").to_frame()
    for at in (301, 1302, 2603, 4999):  # hours 1..3 of a 4h bar and the last bar
        cut = hourly.iloc[: at + 1]
        row = symbol_features(strategy, "EURUSD", {"1h": cut, "4h": resample(cut, "4h")},
                              "1h").to_frame().iloc[-1]
        assert row.name == hourly.index[at]
        np.testing.assert_array_equal(row.to_numpy(), full.loc[row.name].to_numpy())


# --- fitting, saving, predicting ---------------------------------------------------------------


def scaler_of(model: nn.Module) -> InputScaler:
    scaler = model.input_scaler
    assert isinstance(scaler, InputScaler)
    return scaler


def rows_of(x: Any) -> np.ndarray:
    """An MLP's row-major inputs (DataSplits may also hold a recurrent model's windows)."""
    assert isinstance(x, np.ndarray)
    return x


class RecordingPipeline(TrainingPipeline):
    """Remembers, per train_model call, the training rows and the scaler it fitted."""

    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]]

    def train_model(self, model: Any, splits: DataSplits, *args: Any, **kwargs: Any) -> Any:
        outcome = super().train_model(model, splits, *args, **kwargs)
        scaler = scaler_of(model)
        self.calls.append((rows_of(splits.x_train).copy(), scaler.shift.cpu().numpy().copy(),
                           scaler.scale.cpu().numpy().copy()))
        return outcome


def pipeline_for(data_dir: Path, models: Path) -> RecordingPipeline:
    pipeline = RecordingPipeline(data_dir=data_dir, storage=ModelStorage(models),
                                 device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    pipeline.calls = []
    return pipeline


def expected_statistics(rows: np.ndarray, methods: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """shift and scale computed here, straight from numpy, per method."""
    x = rows.astype(np.float64)
    shift = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    for j, method in enumerate(methods):
        if method == "zscore":
            shift[j], scale[j] = x[:, j].mean(), x[:, j].std()
        elif method == "minmax":
            shift[j], scale[j] = x[:, j].min(), x[:, j].max() - x[:, j].min()
    return shift.astype(np.float32), scale.astype(np.float32)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real")
    install_real_data(path, ("EURUSD", "1h"))
    return path


@pytest.fixture(scope="module")
def trained(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    models = tmp_path_factory.mktemp("models")
    pipeline = pipeline_for(real_dir, models)
    request = TrainingRequest(strategy_yaml=strategy_text())
    result = pipeline.run(request)
    return {"pipeline": pipeline, "result": result, "splits": pipeline.prepare(request).splits,
            "models": models}


def test_the_scaler_is_fitted_on_the_training_rows_only(trained: dict[str, Any]) -> None:
    splits: DataSplits = trained["splits"]
    [(x_train, shift, scale)] = trained["pipeline"].calls
    np.testing.assert_array_equal(x_train, splits.x_train)
    methods = METHODS * 3
    want_shift, want_scale = expected_statistics(rows_of(splits.x_train), methods)
    np.testing.assert_allclose(shift, want_shift, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-6, atol=1e-12)
    assert (shift[[m == "none" for m in methods]] == 0).all()
    # All rows (validation and test included) would give other statistics: every mean and
    # standard deviation moves (a min or max may happen to lie in the training rows).
    every_row = np.concatenate([rows_of(x) for x in (splits.x_train, splits.x_val, splits.x_test)])
    all_shift, all_scale = expected_statistics(every_row, methods)
    zscored = [m == "zscore" for m in methods]
    assert not np.isclose(shift[zscored], all_shift[zscored], rtol=1e-4).any()
    assert not np.isclose(scale[zscored], all_scale[zscored], rtol=1e-4).any()

    # features.json says what the model does, feature by feature.
    features = json.loads((Path(trained["result"].model.path) / "features.json").read_text())
    assert features["requires_scaling"] is True
    entry = features["normalization"]["1h_adx_14_lag_1"]
    assert entry["method"] == "minmax"
    assert entry["shift"] == pytest.approx(float(want_shift[4 + 6]), rel=1e-6)
    assert "1h_rsi_zone_weak" not in features["normalization"]


def test_predictions_from_the_saved_model_are_the_training_ones_bit_for_bit(
    trained: dict[str, Any], real_dir: Path
) -> None:
    result, splits = trained["result"], trained["splits"]
    loaded = ModelStorage(trained["models"]).load(result.model.strategy, result.model.version)
    [(_, shift, scale)] = trained["pipeline"].calls
    np.testing.assert_array_equal(scaler_of(loaded.model).shift.numpy(), shift)
    np.testing.assert_array_equal(scaler_of(loaded.model).scale.numpy(), scale)
    times = pd.DatetimeIndex(pd.to_datetime(splits.test_times, utc=True))
    served = predict_symbol(loaded, "EURUSD", data_dir=real_dir, start=times[0])
    at = served.times.get_indexer(times)
    assert (at >= 0).all()
    np.testing.assert_array_equal(served.outputs[at], predict(loaded, splits.x_test))
    # ... and those are the predictions behind the saved test metrics.
    metrics = json.loads((Path(result.model.path) / "metrics.json").read_text())["test"]
    classes = served.outputs[at].argmax(axis=1)
    assert float((classes == splits.y_test).mean()) == metrics["accuracy"]


def test_each_walk_forward_fold_fits_on_its_own_training_slice(real_dir: Path,
                                                              tmp_path: Path) -> None:
    text = strategy_text(training={"epochs": 1, "walk_forward": {"folds": 2}})
    pipeline = pipeline_for(real_dir, tmp_path)
    pipeline.run(TrainingRequest(strategy_yaml=text))
    assert len(pipeline.calls) == 3  # two folds, then the final model
    for x_train, shift, scale in pipeline.calls:
        want_shift, want_scale = expected_statistics(x_train, METHODS * 3)
        np.testing.assert_allclose(shift, want_shift, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(scale, want_scale, rtol=1e-6, atol=1e-12)
    sizes = [len(x) for x, _, _ in pipeline.calls]
    assert sizes[0] < sizes[1] and not np.array_equal(pipeline.calls[0][1], pipeline.calls[1][1])


def test_a_model_saved_without_scaler_buffers_loads_as_it_was(
    real_dir: Path, tmp_path: Path
) -> None:
    fuzzy_only = strategy_text(nn_inputs=[{"fuzzy_set": "rsi_zone"},
                                          {"fuzzy_set": "adx_trend"}])
    pipeline = pipeline_for(real_dir, tmp_path)
    request = TrainingRequest(strategy_yaml=fuzzy_only)
    result = pipeline.run(request)
    [(_, shift, scale)] = pipeline.calls
    assert not shift.any() and (scale == 1).all()  # memberships are not scaled
    x_test = pipeline.prepare(request).splits.x_test
    storage = ModelStorage(tmp_path)
    before = predict(storage.load(result.model.strategy, result.model.version), x_test)

    # Rewrite it as a model of before input scaling: weights without the buffers.
    path = Path(result.model.path)
    state = st_load((path / "model.safetensors").read_bytes())
    assert {"input_scaler.shift", "input_scaler.scale"} <= set(state)
    old = st_save({k: v for k, v in state.items() if not k.startswith("input_scaler.")},
                  metadata={"format": "pt"})
    (path / "model.safetensors").write_bytes(old)
    manifest = json.loads((path / "metadata.json").read_text())
    manifest["files"]["model.safetensors"] = {"sha256": sha256_bytes(old), "bytes": len(old)}
    (path / "metadata.json").write_bytes(json_bytes(manifest))

    loaded = storage.load(result.model.strategy, result.model.version)
    assert scaler_of(loaded.model).active is False
    np.testing.assert_array_equal(predict(loaded, x_test), before)


def test_old_state_dicts_get_identity_buffers_and_nothing_else() -> None:
    strategy = parse_strategy(strategy_text())
    model = build_model(6, 3, strategy.model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("input_scaler.")}
    model.load_state_dict(with_identity_scalers(state, model), strict=True)
    assert scaler_of(model).active is False
    del state["output.bias"]
    with pytest.raises(RuntimeError, match=r"output\.bias"):
        model.load_state_dict(with_identity_scalers(state, model), strict=True)


def test_fit_scaler_is_nan_safe_and_leaves_constant_columns_unscaled() -> None:
    rows = np.array([[1.0, 5.0, np.nan, 2.0], [3.0, 5.0, 4.0, 9.0], [np.nan, 5.0, 8.0, 0.0]],
                    dtype=np.float32)
    scaler = InputScaler(4)
    x = torch.from_numpy(rows)
    assert scaler(x) is x  # identity until fitted, at no cost
    summary = fit_scaler(scaler, rows, ["zscore", "zscore", "minmax", "none"])
    assert [f["method"] for f in summary["features"]] == ["zscore", "zscore", "minmax", "none"]
    np.testing.assert_allclose(scaler.shift.numpy(), [2.0, 5.0, 4.0, 0.0])
    np.testing.assert_allclose(scaler.scale.numpy(), [1.0, 1.0, 4.0, 1.0])
    out = scaler(x).numpy()
    np.testing.assert_allclose(out[1], [1.0, 0.0, 0.0, 9.0])
    assert json.loads(json.dumps(summary)) == summary
    with pytest.raises(ValueError, match="unknown normalization"):
        fit_scaler(scaler, rows, ["zscore", "robust", "none", "none"])


def test_a_fuzzy_input_written_with_normalization_none_is_accepted() -> None:
    text = strategy_text(nn_inputs=[{"fuzzy_set": "rsi_zone", "normalization": "none"}])
    assert parse_strategy(text).nn_inputs[0].resolved_normalization == "none"
    with pytest.raises(StrategyError, match=r"nn_inputs\[0\]: give exactly one"):
        parse_strategy(strategy_text(nn_inputs=[{"normalization": "none"}]))


def test_a_resumed_run_keeps_the_checkpointed_scaler(real_dir: Path, tmp_path: Path) -> None:
    pipeline = pipeline_for(real_dir, tmp_path)
    request = TrainingRequest(strategy_yaml=strategy_text(), epochs=2)
    token = CancelToken()

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "epoch" and update.epoch == 1:
            token.cancel()

    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(request, trip, token, checkpoint_callback=lambda _: None,
                     checkpoint_every=1)
    checkpoint = info.value.checkpoint
    assert checkpoint is not None
    fitted_shift = checkpoint.model_state["input_scaler.shift"].numpy().copy()
    assert (checkpoint.model_state["input_scaler.scale"] != 1).any()  # fitted before the cancel
    # A checkpoint whose scaler differs from what a fit would give: the resume uses it as is.
    doubled = checkpoint.model_state["input_scaler.scale"] * 2
    checkpoint.model_state["input_scaler.scale"] = doubled
    pipeline.run(request, resume_from=checkpoint)
    [(_, shift, scale)] = pipeline.calls
    np.testing.assert_array_equal(scale, doubled.numpy())
    np.testing.assert_array_equal(shift, fitted_shift)
