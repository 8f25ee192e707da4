"""No label leaks across splits or symbols, on real market data (tests/harness/market.py):

- each label source says truthfully when its label is known (`label_known_at`): recomputed on
  the prices up to T, every label known by T is the same (truncation test, every source);
- no training label depends on a price after the training slice ends: the training labels of a
  real split equal the labels computed on the prices before the validation slice alone;
- two symbols share one test window (one time axis), the zigzag's unconfirmed tail is dropped,
  the embargo drops its bars, walk-forward folds never train on their test block;
- a split too small, or a training slice of one class, is refused naming the field.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.dataset import (
    MIN_TRAIN_ROWS,
    SplitError,
    build_symbol_data,
    check_trainable,
    combine_multi_symbol_data,
    split_data,
)
from libs.pipeline.labels import generate_labels, label_known_at
from libs.pipeline.splits import assign_rows, time_axis, walk_forward_windows
from libs.pipeline.strategy import (
    DataSplitConfig,
    ForwardReturnLabels,
    LabelsConfig,
    StrategyConfig,
    TripleBarrierLabels,
    WalkForwardConfig,
    ZigZagLabels,
    embargo_of,
    parse_strategy,
)
from tests.harness.labels import leaks, random_walk
from tests.harness.market import install_real_data, load_real

SOURCES: dict[str, LabelsConfig] = {
    "zigzag": ZigZagLabels(zigzag_threshold=0.005),
    "zigzag_wide": ZigZagLabels(zigzag_threshold=0.02),
    "triple_barrier": TripleBarrierLabels(max_holding_period=12, vol_span=24),
    "forward_return": ForwardReturnLabels(horizon=6),
}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("data", ["eurusd_1h", "random_walk"])
def test_a_label_known_by_t_is_the_same_computed_on_the_prices_up_to_t(
    source: str, data: str
) -> None:
    prices = load_real("EURUSD", "1h") if data == "eurusd_1h" else random_walk(3000, seed=5)
    cuts = [400, 1111, 1777, 2500, len(prices) - 2]
    assert leaks(prices, SOURCES[source], cuts) == 0


def test_the_truncation_check_catches_a_label_that_claims_to_be_known_too_early() -> None:
    """The check above can fail: a zigzag label claimed known at its own bar leaks."""
    prices = load_real("EURUSD", "1h")

    known = label_known_at(prices, SOURCES["zigzag_wide"])
    at_its_own_bar = np.where(known >= 0, np.arange(len(prices)), -1)
    assert leaks(prices, SOURCES["zigzag_wide"], [1111, 2500], known=at_its_own_bar) > 0


def test_the_zigzag_tail_has_no_label() -> None:
    prices = load_real("EURUSD", "1h")
    cfg = SOURCES["zigzag_wide"]
    labels = generate_labels(prices, cfg)
    known = label_known_at(prices, cfg)
    tail = int(np.flatnonzero(known >= 0)[-1]) + 1
    # From the last leg's running extreme on, nothing is labelled (it used to be all HOLD).
    assert 0 < len(prices) - tail < len(prices) // 2
    assert labels.iloc[tail:].isna().all() and labels.iloc[:tail].notna().all()


def eurusd_strategy(labels: str, **split: float) -> StrategyConfig:
    return parse_strategy(f"""
name: real_split
training_data:
  symbols: {{mode: single, symbol: EURUSD}}
  timeframes: {{mode: single, timeframe: 1h}}
  history_required: 50
indicators: {{rsi_14: {{type: rsi, period: 14}}}}
fuzzy_sets: {{rsi: {{indicator: rsi_14, low: [0, 30, 50], high: [50, 70, 100]}}}}
nn_inputs: [{{fuzzy_set: rsi}}]
training:
  labels: {labels}
  data_split: {{train: {split.get("train", 0.7)}, validation: {split.get("validation", 0.15)},
               test: {split.get("test", 0.15)}}}
""")


LABELS_YAML = {
    "zigzag": "{source: zigzag, zigzag_threshold: 0.005}",
    "triple_barrier": "{source: triple_barrier, max_holding_period: 12, vol_span: 24}",
    "forward_return": "{source: forward_return, horizon: 6}",
}


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("real-data")
    install_real_data(directory, ("EURUSD", "1h"), ("GOOG", "1d"), ("SP500", "1d"))
    return directory


@pytest.mark.parametrize("source", list(LABELS_YAML))
@pytest.mark.parametrize("validation", [0.15, 0.0])
def test_no_training_label_depends_on_prices_after_the_training_slice(
    real_dir: Path, source: str, validation: float
) -> None:
    strategy = eurusd_strategy(LABELS_YAML[source], train=0.85 - validation,
                               validation=validation)
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=real_dir)
    splits = combine_multi_symbol_data([data], strategy.training.data_split,
                                       embargo=embargo_of(strategy.training))
    assert splits.windows is not None and data.prices is not None
    end = splits.windows.train[1]  # the next slice's first bar (validation, or test)
    counts = splits.report["per_symbol"]["EURUSD"]["train"]
    assert counts["purged"] > 0 and counts["kept"] == splits.n_train > 0
    rows = assign_rows(data.times, data.label_times(), data.bar_times(), splits.windows, 0)
    trained = data.features.index[rows["train"].rows]
    np.testing.assert_array_equal(splits.y_train, data.labels[rows["train"].rows])
    # The labels computed on the prices before the slice's end alone are the trainer's labels.
    before = data.prices[data.prices.index < pd.Timestamp(end, tz="UTC")]
    alone = generate_labels(before, strategy.training.labels).loc[trained]
    assert alone.notna().all(), "a training label needs a price after its slice"
    np.testing.assert_array_equal(alone.to_numpy().astype(splits.y_train.dtype), splits.y_train)


def test_two_symbols_share_one_test_window(real_dir: Path) -> None:
    """GOOG (2004-2013) and SP500 (1999-2018), daily: cut at each symbol's own fraction, the
    one's training rows would fall inside the other's test window."""
    text = """
name: two_daily
training_data:
  symbols: {mode: multi_symbol, list: [GOOG, SP500]}
  timeframes: {mode: single, timeframe: 1d}
  history_required: 30
indicators: {rsi_14: {type: rsi, period: 14}}
fuzzy_sets: {rsi: {indicator: rsi_14, low: [0, 30, 50], high: [50, 70, 100]}}
nn_inputs: [{fuzzy_set: rsi}]
training:
  labels: {source: triple_barrier, max_holding_period: 10, vol_span: 20}
"""
    strategy = parse_strategy(text)
    per_symbol = [build_symbol_data(strategy, s, ["1d"], data_dir=real_dir)
                  for s in ("GOOG", "SP500")]
    splits = combine_multi_symbol_data(per_symbol, strategy.training.data_split,
                                       embargo=embargo_of(strategy.training))
    assert splits.windows is not None
    test_start = splits.windows.test[0]
    for i, data in enumerate(per_symbol):
        test_times = splits.test_times[splits.test_symbol == i]
        assert (test_times >= test_start).all()
        # Every training row of every symbol ends before any symbol's test window.
        train_rows = data.times[data.times < splits.windows.validation[0]]
        assert train_rows.max() < test_start
    # GOOG ends in 2013, before the common test window: no test rows, and it says so.
    assert splits.rows["GOOG"].test == 0 and splits.rows["SP500"].test > 0
    own_fraction = per_symbol[0].times[round(len(per_symbol[0]) * 0.7)]
    assert own_fraction < test_start  # where GOOG's own split would have started its test


def test_the_embargo_drops_bars_at_the_start_of_validation_and_test(real_dir: Path) -> None:
    strategy = eurusd_strategy("{source: forward_return, horizon: 3}")
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=real_dir)
    split = strategy.training.data_split
    plain = combine_multi_symbol_data([data], split, embargo=0)
    embargoed = combine_multi_symbol_data([data], split, embargo=25)
    counts = embargoed.report["per_symbol"]["EURUSD"]
    assert counts["validation"]["embargoed"] == 25 and counts["test"]["embargoed"] == 25
    assert counts["train"]["embargoed"] == 0
    assert embargoed.n_val == plain.n_val - 25 and embargoed.n_test == plain.n_test - 25
    # The default embargo is the label's look-ahead.
    assert embargo_of(strategy.training) == 3


@pytest.mark.parametrize("mode", ["expanding", "rolling"])
def test_walk_forward_folds_train_before_their_test_block(real_dir: Path, mode: str) -> None:
    strategy = eurusd_strategy("{source: triple_barrier, max_holding_period: 12, vol_span: 24}")
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=real_dir)
    axis = time_axis([data.times])
    walk = WalkForwardConfig(folds=4, mode=mode)  # type: ignore[arg-type]
    windows = walk_forward_windows(axis, walk, strategy.training.data_split)
    assert len(windows) == 4
    tests = [w.test for w in windows]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(tests))  # back to back
    sizes = []
    for w in windows:
        fold = split_data([data], w, embargo=12)
        assert fold.n_test > 0 and fold.n_train > 0
        rows = assign_rows(data.times, data.label_times(), data.bar_times(), w, 12)["train"].rows
        # No training row, nor any price its label reads, is in the validation or test block.
        assert data.times[rows].max() < w.validation[0] <= w.test[0]
        assert data.label_times()[rows].max() < w.train[1]
        sizes.append(fold.n_train)
    if mode == "expanding":
        assert sizes == sorted(sizes) and sizes[-1] > 2 * sizes[0]
    else:
        assert max(sizes) < 1.3 * min(sizes)


def test_a_split_too_small_or_of_one_class_is_refused(real_dir: Path) -> None:
    strategy = eurusd_strategy(LABELS_YAML["triple_barrier"])
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=real_dir)
    splits = combine_multi_symbol_data([data], strategy.training.data_split)
    check_trainable(splits, regression=False, validation=True)
    small = combine_multi_symbol_data([data.select(slice(0, 120))], DataSplitConfig())
    with pytest.raises(SplitError) as caught:
        check_trainable(small, regression=False, validation=True)
    assert caught.value.field == "training.data_split.train"
    assert f"fewer than the minimum of {MIN_TRAIN_ROWS}" in str(caught.value)
    one_class = data.select(data.labels == 2)
    with pytest.raises(SplitError) as caught:
        check_trainable(combine_multi_symbol_data([one_class], DataSplitConfig()),
                        regression=False, validation=True)
    assert caught.value.field == "training.labels"
    assert "every training row is labelled SELL" in str(caught.value)
