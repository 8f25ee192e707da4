"""Triple-barrier uniqueness weights reach the training loss: the split carries each training
row's weight (the one labels.sample_weights gives its bar), the trainer weighs the loss by them,
validation stays unweighted, and the run is reproducible. Real EURUSD 1h bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from libs.pipeline import labels as L
from libs.pipeline.dataset import build_symbol_data, combine_multi_symbol_data
from libs.pipeline.model import build_model
from libs.pipeline.storage.models import weights_sha256
from libs.pipeline.strategy import embargo_of, parse_strategy
from libs.pipeline.trainer import TrainingInputError, seed_everything, train
from tests.harness.labels import DOC
from tests.harness.market import install_real_data, load_real


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    install_real_data(root, ("EURUSD", "1h"))
    return root


def _splits(data_dir: Path, weighted: bool):
    strategy = parse_strategy(DOC % (
        "{source: triple_barrier, max_holding_period: 12, vol_span: 24, compute_weights: "
        f"{str(weighted).lower()}}}", ""))
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=data_dir)
    return strategy, combine_multi_symbol_data([data], strategy.training.data_split,
                                               embargo=embargo_of(strategy.training))


def _trained_weights(strategy, splits, sample_weight) -> str:
    seed_everything(0)
    model = build_model(len(splits.feature_names), 3, strategy.model)
    train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, strategy.training,
          sample_weight=sample_weight)
    return weights_sha256(model.state_dict())


def test_each_training_row_carries_its_bars_uniqueness_weight(data_dir: Path) -> None:
    strategy, splits = _splits(data_dir, weighted=True)
    assert splits.w_train is not None and splits.w_train.dtype == np.float32
    assert len(splits.w_train) == splits.n_train
    per_bar = L.sample_weights(load_real("EURUSD", "1h"), strategy.training.labels)
    assert per_bar is not None
    bars = load_real("EURUSD", "1h").index.as_unit("ns").asi8
    train_times = splits.sources[0].times[:splits.n_train]  # one symbol: train rows come first
    at = np.searchsorted(bars, train_times)
    np.testing.assert_array_equal(splits.w_train, per_bar[at].astype(np.float32))
    assert splits.w_train.std() > 0.05  # overlapping labels really weigh differently
    _, plain = _splits(data_dir, weighted=False)
    assert plain.w_train is None


def test_the_weights_change_training_and_the_run_is_reproducible(data_dir: Path) -> None:
    strategy, splits = _splits(data_dir, weighted=True)
    weighted = _trained_weights(strategy, splits, splits.w_train)
    assert weighted == _trained_weights(strategy, splits, splits.w_train)
    assert weighted != _trained_weights(strategy, splits, None)


def test_bad_sample_weights_are_refused(data_dir: Path) -> None:
    strategy, splits = _splits(data_dir, weighted=True)
    for bad in (splits.w_train[:-1], np.full(splits.n_train, np.nan, np.float32),
                np.zeros(splits.n_train, np.float32)):
        with pytest.raises(TrainingInputError, match="sample weights"):
            _trained_weights(strategy, splits, bad)
