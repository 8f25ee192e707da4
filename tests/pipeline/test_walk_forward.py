"""Walk-forward evaluation and the evaluation record of a run, on real hourly EURUSD: the
shipped `eurusd_1h_real` example (tuned on that data) with fewer epochs. Every metrics set has
its baselines and backtest; folds are named in progress; a run cancelled inside a fold resumes
in that fold and ends bit-identical to an uninterrupted run; a one-class job is refused."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import Checkpoint
from libs.pipeline.data import write_price_file
from libs.pipeline.dataset import SplitError
from libs.pipeline.device import DeviceManager
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.storage.models import ModelStorage
from tests.harness.market import install_real_data

ROOT = Path(__file__).resolve().parents[2]


def real_example(**training: Any) -> str:
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    strategy["training"] = {**strategy["training"], **training}
    return yaml.safe_dump(strategy, sort_keys=False)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("real-eurusd")
    install_real_data(directory, ("EURUSD", "1h"))
    return directory


@pytest.fixture
def pipeline(real_dir: Path, tmp_path: Path) -> TrainingPipeline:
    return TrainingPipeline(data_dir=real_dir, storage=ModelStorage(tmp_path / "models"),
                            device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))


def assert_scored(metrics: dict[str, Any]) -> None:
    """A full metrics set: named metrics, baselines and lift, per symbol, the backtest."""
    assert {"accuracy", "macro_f1", "weighted_f1"} <= set(metrics)
    assert "precision" not in metrics and "f1_score" not in metrics
    assert set(metrics["baselines"]) == {"majority", "last_confirmed"}
    assert metrics["baselines"]["majority"]["class"] in {"BUY", "HOLD", "SELL"}
    assert metrics["lift"]["majority"]["accuracy"] == pytest.approx(
        metrics["accuracy"] - metrics["baselines"]["majority"]["accuracy"])
    assert set(metrics["per_symbol"]) == {"EURUSD"}
    backtest = metrics["backtest"]
    assert {"model", "buy_and_hold", "majority", "last_confirmed"} <= set(backtest["strategies"])
    model = backtest["strategies"]["model"]
    assert model["net_return"] < model["gross_return"] or model["trades"] == 0
    lo, hi = backtest["lift"]["buy_and_hold"]["ci95"]
    assert lo <= backtest["lift"]["buy_and_hold"]["mean_bar_return"] <= hi
    assert backtest["settings"]["cost_per_turnover"] == 0.00007
    assert 5000 < backtest["settings"]["annualization"] < 7000  # hourly FX bars a year


def test_walk_forward_folds_then_the_final_model(pipeline: TrainingPipeline) -> None:
    updates: list[ProgressUpdate] = []
    request = TrainingRequest(strategy_yaml=real_example(epochs=3,
                                                         walk_forward={"folds": 3}))
    result = pipeline.run(request, updates.append)
    metrics = json.loads((Path(result.model.path) / "metrics.json").read_text())

    walk = metrics["walk_forward"]
    assert walk["mode"] == "expanding" and [f["fold"] for f in walk["folds"]] == [1, 2, 3]
    tests = [tuple(f["test"]) for f in walk["folds"]]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(tests))
    for fold in walk["folds"]:
        assert fold["rows"]["test"] > 0 and fold["rows"]["purged"] > 0
        assert fold["train"][1] <= fold["validation"][0] <= fold["test"][0]
        assert_scored(fold["metrics"])
    accuracies = [f["metrics"]["accuracy"] for f in walk["folds"]]
    assert walk["summary"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 3)
    assert walk["summary"]["accuracy"]["std"] > 0
    # The final model, as configured, and its own record.
    assert_scored(metrics["test"])
    assert metrics["splits"]["per_symbol"]["EURUSD"]["train"]["purged"] > 0
    assert metrics["splits"]["embargo"] == 24  # the label's max_holding_period
    assert metrics["warnings"] == result.warnings
    # Progress names each fold and its epochs; the final model's history is its own.
    folds = [(u.fold, u.epoch) for u in updates if u.phase == "walk_forward" and u.fold]
    assert {f for f, _ in folds} == {1, 2, 3} and (3, 3) in folds
    assert all(u.folds == 3 for u in updates if u.fold)
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, result.epochs_trained + 1))


def test_a_run_cancelled_inside_a_fold_resumes_in_that_fold(pipeline: TrainingPipeline) -> None:
    request = TrainingRequest(strategy_yaml=real_example(epochs=2, walk_forward={"folds": 2},
                                                         early_stopping=None))
    uninterrupted = pipeline.run(request)
    token = CancelToken()
    taken: list[Checkpoint] = []
    folds_started: list[int] = []

    def trip(update: ProgressUpdate) -> None:
        if update.fold and update.epoch == 1:
            folds_started.append(update.fold)
            if update.fold == 2:
                token.cancel("drain")

    with pytest.raises(TrainingCancelled) as info:
        pipeline.run(request, trip, token, checkpoint_callback=taken.append, checkpoint_every=1)
    cp = info.value.checkpoint
    assert cp is not None and cp.meta["walk_forward"]["fold"] == 2
    assert [r["fold"] for r in cp.meta["walk_forward"]["done"]] == [1]

    seen: list[ProgressUpdate] = []
    resumed = pipeline.run(request, seen.append, resume_from=cp)
    assert {u.fold for u in seen if u.fold} == {2}  # fold 1 is not trained again
    assert resumed.weights_sha256 == uninterrupted.weights_sha256
    assert resumed.walk_forward == uninterrupted.walk_forward


def test_a_one_class_training_slice_is_refused_naming_the_field(tmp_path: Path) -> None:
    # A price that rises 0.3 % every hour touches the upper barrier from every bar: all BUY.
    n = 800
    close = 1.1 * 1.003 ** np.arange(n)
    index = pd.date_range("2021-01-04", periods=n, freq="1h", tz="UTC", name="timestamp")
    frame = pd.DataFrame({"open": close, "high": close * 1.0005, "low": close * 0.9995,
                          "close": close, "volume": 1.0}, index=index)
    write_price_file(frame, tmp_path / "UP_1h.parquet")
    text = real_example(labels={"source": "triple_barrier", "max_holding_period": 10,
                                "vol_span": 10}, walk_forward=None)
    pipeline = TrainingPipeline(data_dir=tmp_path)
    with pytest.raises(SplitError) as caught:
        pipeline.prepare(TrainingRequest(strategy_yaml=text, symbols=["UP"]))
    assert caught.value.field == "training.labels"
    assert "every training row is labelled BUY" in str(caught.value)
