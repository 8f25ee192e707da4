"""No training/serving skew: a saved model predicted from the raw files on its own test window
gives exactly (bit for bit, on CPU) the feature rows and predictions behind its saved test
metrics, for a single-timeframe, a multi-timeframe and a multi-symbol model; a bar predicted
with data that ends at it gives what the full file gives; bad windows are refused by name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from libs.pipeline.data import load_price_data, write_synthetic
from libs.pipeline.device import DeviceManager
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.predict import PredictError, backtest_window, predict_symbol, predict_window
from libs.pipeline.storage.models import FeatureMismatchError, LoadedModel, ModelStorage, predict
from tests.harness.market import install_real_data

ROOT = Path(__file__).resolve().parents[2]


def real_example(**changes: Any) -> str:
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    training = {**strategy["training"], "epochs": 2, "walk_forward": None}
    strategy["training"] = {k: v for k, v in training.items() if v is not None}
    for key, value in changes.items():
        strategy[key] = value
    return yaml.safe_dump(strategy, sort_keys=False)


SHAPES = {
    "single_timeframe": ("real", real_example()),
    "multi_timeframe": ("real", real_example(training_data={
        "symbols": {"mode": "single", "symbol": "EURUSD"},
        "timeframes": {"mode": "multi_timeframe", "list": ["1h", "4h"], "base_timeframe": "1h"},
        "history_required": 60})),
    "multi_symbol": ("synthetic", real_example(training_data={
        "symbols": {"mode": "multi_symbol", "list": ["EURUSD", "GBPUSD"]},
        "timeframes": {"mode": "single", "timeframe": "1h"}, "history_required": 100})),
}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    real = tmp_path_factory.mktemp("real")
    install_real_data(real, ("EURUSD", "1h"))
    synthetic = tmp_path_factory.mktemp("synthetic")
    write_synthetic(synthetic, ["EURUSD", "GBPUSD"], "1h", 4000, 42)
    return {"real": real, "synthetic": synthetic}


def train(data_dir: Path, text: str, models: Path) -> tuple[TrainingPipeline, Any, Any]:
    pipeline = TrainingPipeline(data_dir=data_dir, storage=ModelStorage(models),
                                device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    request = TrainingRequest(strategy_yaml=text)
    result = pipeline.run(request)
    return pipeline, result, pipeline.prepare(request)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_predicting_the_test_window_from_raw_files_reproduces_the_training_exactly(
    shape: str, data_dirs: dict[str, Path], tmp_path: Path
) -> None:
    source, text = SHAPES[shape]
    _, result, prepared = train(data_dirs[source], text, tmp_path / "models")
    loaded = ModelStorage(tmp_path / "models").load(result.model.strategy, result.model.version)
    splits = prepared.splits
    predicted_classes = np.empty(splits.n_test, dtype=np.int64)
    for i, symbol in enumerate(splits.symbols):
        mine = splits.test_symbol == i
        times = pd.DatetimeIndex(pd.to_datetime(splits.test_times[mine], utc=True))
        served = predict_symbol(loaded, symbol, data_dir=data_dirs[source], start=times[0])
        at = served.times.get_indexer(times)
        assert (at >= 0).all(), "every test bar is predicted"
        # The same features, bit for bit, hence the same predictions.
        trained = predict(loaded, splits.x_test[mine])
        np.testing.assert_array_equal(served.outputs[at], trained)
        predicted_classes[mine] = served.outputs[at].argmax(axis=1)
    # ... and the saved test metrics are those predictions' metrics.
    metrics = json.loads((Path(result.model.path) / "metrics.json").read_text())["test"]
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (splits.y_test.astype(np.int64), predicted_classes), 1)
    assert confusion.tolist() == metrics["confusion_matrix"]
    assert float((predicted_classes == splits.y_test).mean()) == metrics["accuracy"]


def test_a_bar_predicted_with_data_ending_at_it_is_the_full_files(
    data_dirs: dict[str, Path], tmp_path: Path
) -> None:
    _, result, _ = train(data_dirs["real"], SHAPES["multi_timeframe"][1], tmp_path / "models")
    loaded = ModelStorage(tmp_path / "models").load(result.model.strategy, result.model.version)
    full = predict_symbol(loaded, "EURUSD", data_dir=data_dirs["real"], start="2018-01-08")
    for t in (full.times[3], full.times[50], full.times[-2]):
        upto = predict_symbol(loaded, "EURUSD", data_dir=data_dirs["real"], start="2018-01-08",
                              end=t)
        assert upto.times[-1] == t
        np.testing.assert_array_equal(upto.outputs[-1], full.outputs[full.times.get_loc(t)])


def test_signals_rows_and_a_backtest_of_a_new_window(
    data_dirs: dict[str, Path], tmp_path: Path
) -> None:
    _, result, _ = train(data_dirs["real"], SHAPES["single_timeframe"][1], tmp_path / "models")
    loaded = ModelStorage(tmp_path / "models").load(result.model.strategy, result.model.version)
    [served] = predict_window(loaded, data_dir=data_dirs["real"], start="2018-01-02",
                              end="2018-01-31")
    rows = served.rows()
    assert rows[0]["time"].startswith("2018-01-02") and rows[-1]["time"].startswith("2018-01-31")
    assert {"p_buy", "p_hold", "p_sell", "signal", "symbol"} <= set(rows[0])
    probabilities = np.array([[r["p_buy"], r["p_hold"], r["p_sell"]] for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Under the confidence threshold, a signal is HOLD.
    threshold = loaded.config.decisions.confidence_threshold
    weak = probabilities.max(axis=1) < threshold
    assert all(r["signal"] == "HOLD" for r, w in zip(rows, weak, strict=True) if w)
    report = backtest_window(loaded, [served], costs=0.0005)
    assert report["settings"]["cost_per_turnover"] == 0.0005
    assert {"model", "buy_and_hold"} <= set(report["strategies"])
    assert report["equity"]["time"][0].startswith("2018-01")


def test_bad_windows_and_mismatched_models_are_refused(
    data_dirs: dict[str, Path], tmp_path: Path
) -> None:
    _, result, _ = train(data_dirs["real"], SHAPES["single_timeframe"][1], tmp_path / "models")
    loaded: LoadedModel = ModelStorage(tmp_path / "models").load(result.model.strategy,
                                                                 result.model.version)
    with pytest.raises(PredictError, match="no bar to predict"):
        predict_symbol(loaded, "EURUSD", data_dir=data_dirs["real"], start="2019-01-01")
    bars = load_price_data("EURUSD", "1h", data_dir=data_dirs["real"]).loc["2018-01-01":]
    with pytest.raises(PredictError, match="history_required = 100"):
        predict_symbol(loaded, "EURUSD", bars=bars, start=bars.index[20])
    with pytest.raises(PredictError, match="without close"):
        predict_symbol(loaded, "EURUSD", bars=bars.drop(columns="close"), start=bars.index[150])
    wrong = dataclasses.replace(loaded, feature_names=list(reversed(loaded.feature_names)))
    with pytest.raises(FeatureMismatchError, match="refusing to mispredict"):
        predict_symbol(loaded=wrong, symbol="EURUSD", data_dir=data_dirs["real"],
                       start="2018-01-02")
