"""Alignment, the chronological split, multi-symbol concatenation, and the per-symbol chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.data import DataError, load_price_data
from libs.pipeline.dataset import (
    SymbolData,
    align_features_and_labels,
    build_symbol_data,
    combine_multi_symbol_data,
)
from libs.pipeline.features import FeatureMatrix, feature_names
from libs.pipeline.strategy import DataSplitConfig, StrategyConfig, symbols_of, timeframes_of


def matrix(values: np.ndarray, start: str = "2024-01-08") -> FeatureMatrix:
    values = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    index = pd.date_range(start, periods=len(values), freq="1h", tz="UTC")
    return FeatureMatrix.from_rows(values, tuple(f"f{i}" for i in range(values.shape[1])), index)


def symbol(name: str, n: int, width: int = 2, offset: float = 0.0) -> SymbolData:
    values = np.arange(n * width, dtype=np.float32).reshape(n, width) + offset
    return SymbolData(name, matrix(values), (np.arange(n) % 3).astype(np.int8))


# --- alignment ----------------------------------------------------------------------------


def test_alignment_drops_warm_up_and_undefined_labels_together() -> None:
    values = np.array([[np.nan, 1], [np.nan, 2], [3, 3], [4, 4], [5, 5], [6, 6]])
    features = matrix(values)
    labels = pd.Series([0, 1, 2, 0, np.nan, np.nan], index=features.index)
    data = align_features_and_labels(features, labels, symbol="EURUSD")
    assert data.symbol == "EURUSD" and len(data) == 2
    assert data.features.index.tolist() == features.index[2:4].tolist()
    np.testing.assert_array_equal(data.features.values, [[3, 3], [4, 4]])
    assert data.labels.tolist() == [2, 0] and data.labels.dtype == np.int8
    # contiguous rows are a view, not a copy
    assert np.shares_memory(data.features.columns, features.columns)


def test_alignment_with_a_hole_and_regression_targets() -> None:
    features = matrix(np.array([[1.0], [np.nan], [3.0], [4.0]]))
    data = align_features_and_labels(features, np.array([0.01, 0.02, -0.5, np.nan]))
    assert data.features.index.tolist() == [features.index[0], features.index[2]]
    assert data.labels.dtype == np.float32  # not 0/1/2: a regression target
    assert data.unlabelled == 1  # the last row: defined features, no label
    np.testing.assert_allclose(data.labels, [0.01, -0.5])
    forced = align_features_and_labels(features, np.array([1.0, 1.0, 2.0, 0.0]), regression=True)
    assert forced.labels.dtype == np.float32


def test_alignment_reindexes_labels_and_checks_lengths() -> None:
    features = matrix(np.ones((3, 1)))
    shuffled = pd.Series([2.0, 1.0, 0.0], index=features.index[::-1])
    assert align_features_and_labels(features, shuffled).labels.tolist() == [0, 1, 2]
    # Equal stamps in other memory are matched by value; labels on more bars by their tail.
    copied = pd.Series([0.0, 1.0, 2.0], index=features.index.copy(deep=True))
    assert align_features_and_labels(features, copied).labels.tolist() == [0, 1, 2]
    earlier = features.index[0] - pd.Timedelta(hours=1)
    longer = pd.Series([2, 0, 1, 2], index=features.index.insert(0, earlier), dtype=np.int8)
    assert align_features_and_labels(features, longer).labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="2 labels for 3 feature rows"):
        align_features_and_labels(features, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        SymbolData("X", matrix(np.ones((2, 1))), np.zeros(3))
    empty = align_features_and_labels(matrix(np.full((2, 1), np.nan)), np.zeros(2))
    assert len(empty) == 0


# --- split and combine -----------------------------------------------------------------------


def test_split_is_chronological_by_the_ratios() -> None:
    splits = combine_multi_symbol_data(
        [symbol("A", 100)], DataSplitConfig(train=0.7, validation=0.2, test=0.1)
    )
    assert dict(splits.rows) == {"A": (70, 20, 10)}
    times = symbol("A", 100).features.index
    assert splits.report["boundaries"]["validation_start"] == times[70].isoformat()
    assert splits.report["boundaries"]["test_start"] == times[90].isoformat()
    no_validation = combine_multi_symbol_data(
        [symbol("A", 10)], DataSplitConfig(train=0.8, validation=0.0, test=0.2)
    )
    assert dict(no_validation.rows) == {"A": (8, 0, 2)}


def symbol_from(name: str, start: str, n: int, offset: float = 0.0) -> SymbolData:
    values = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + offset
    return SymbolData(name, matrix(values, start), (np.arange(n) % 3).astype(np.int8))


def test_combine_cuts_every_symbol_on_one_time_axis() -> None:
    # A: 100 hourly rows; B: 50 rows starting 50 hours later (it ends with A).
    a = symbol_from("AAA", "2024-01-08", 100)
    b = symbol_from("BBB", "2024-01-10 02:00", 50, offset=10_000)
    splits = combine_multi_symbol_data([a, b], DataSplitConfig(train=0.6, validation=0.2, test=0.2))
    assert splits.symbols == ("AAA", "BBB") and splits.feature_names == ("f0", "f1")
    # One axis of 100 distinct times: the windows are [..60), [60, 80), [80, ..) for both.
    assert dict(splits.rows) == {"AAA": (60, 20, 20), "BBB": (10, 20, 20)}
    test_start = a.features.index[80]
    assert splits.report["boundaries"]["test_start"] == test_start.isoformat()
    # No training row of either symbol falls inside the test window.
    train_times = np.concatenate([a.times[:60], b.times[:10]])
    assert train_times.max() < splits.test_times.min() == test_start.value
    assert (splits.n_train, splits.n_val, splits.n_test) == (70, 40, 40)
    # Each slice is A's rows, then B's: every symbol in order, no shuffling.
    np.testing.assert_array_equal(splits.x_train[:60], a.features.values[:60])
    np.testing.assert_array_equal(splits.x_train[60:], b.features.values[:10])
    np.testing.assert_array_equal(splits.x_test[:20], a.features.values[80:])
    np.testing.assert_array_equal(splits.y_val[20:], b.labels[10:30])
    assert splits.test_symbol.tolist() == [0] * 20 + [1] * 20
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert isinstance(x, np.ndarray)  # an MLP's rows (a recurrent model reads Windows)
        assert x.dtype == np.float32 and x.flags.c_contiguous
    assert splits.y_train.dtype == np.int8  # classes: one byte a row, widened in tensors
    assert splits.time_ranges["AAA"][0] == "2024-01-08T00:00:00+00:00"
    expected = np.bincount(np.concatenate([a.labels[80:], b.labels[30:]]), minlength=3)
    assert splits.report["label_distribution"]["test"] == dict(
        zip(("BUY", "HOLD", "SELL"), expected.tolist(), strict=True))


def test_combine_refuses_mismatches() -> None:
    split = DataSplitConfig()
    with pytest.raises(ValueError, match="no symbols"):
        combine_multi_symbol_data([], split)
    with pytest.raises(ValueError, match="feature names differ"):
        combine_multi_symbol_data([symbol("A", 10), symbol("B", 10, width=3)], split)
    with pytest.raises(ValueError, match="duplicate symbols"):
        combine_multi_symbol_data([symbol("A", 10), symbol("A", 10)], split)


# --- the per-symbol chain on real files --------------------------------------------------------


def test_build_symbol_data_for_the_example(
    example_strategy: StrategyConfig, sample_data_dir: Path
) -> None:
    data = build_symbol_data(example_strategy, "EURUSD", ["1h"], data_dir=sample_data_dir)
    assert data.features.names == feature_names(example_strategy, ["1h"])
    assert not np.isnan(data.features.values).any()
    assert set(np.unique(data.labels)) == {0, 1, 2}
    # warm-up: MACD(12, 26, 9) needs 33 rows, the two lags 2 more
    prices = load_price_data("EURUSD", "1h", data_dir=sample_data_dir)
    assert data.features.index[0] == prices.index[35]
    # features are informative, not degenerate: every column varies, most mean well inside (0, 1)
    assert (data.features.values.std(axis=0) > 0.05).all()


def test_start_and_history_required(
    example_strategy: StrategyConfig, sample_data_dir: Path
) -> None:
    data = build_symbol_data(
        example_strategy,
        "EURUSD",
        ["1h"],
        data_dir=sample_data_dir,
        start="2020-02-03",
        end="2020-03-31",
    )
    # history_required bars before start warm the indicators up: the first row IS the start
    assert data.features.index[0] == pd.Timestamp("2020-02-03T00:00Z")
    # The bars after the last confirmed zigzag pivot have no label yet: dropped and counted.
    assert data.unlabelled > 0
    assert data.features.index[-1] <= pd.Timestamp("2020-03-31T23:00Z")
    bars = load_price_data("EURUSD", "1h", data_dir=sample_data_dir, end="2020-03-31")
    assert len(data) + data.unlabelled == int((bars.index >= "2020-02-03").sum())


def test_multi_timeframe_from_an_hourly_file(
    load_example: Callable[[str], StrategyConfig], sample_data_dir: Path
) -> None:
    strategy = load_example("multi_tf_trend")  # 4h and 1d are resampled from the 1h file
    data = build_symbol_data(strategy, "GBPUSD", timeframes_of(strategy), data_dir=sample_data_dir)
    assert data.features.shape[1] == len(feature_names(strategy, ["1h", "4h", "1d"]))
    assert not np.isnan(data.features.values).any() and len(data) > 1500


def test_multi_symbol_triple_barrier_end_to_end(
    load_example: Callable[[str], StrategyConfig], sample_data_dir: Path
) -> None:
    strategy = load_example("multi_symbol_triple_barrier")
    per_symbol = [
        build_symbol_data(strategy, s, timeframes_of(strategy), data_dir=sample_data_dir)
        for s in symbols_of(strategy)
    ]
    splits = combine_multi_symbol_data(per_symbol, strategy.training.data_split)
    assert splits.symbols == ("EURUSD", "GBPUSD")
    for rows in splits.rows.values():
        assert rows.train > 0 and rows.validation > 0 and rows.test > 0
    assert set(np.unique(splits.y_train)) == {0, 1, 2}
    total = sum(len(d) for d in per_symbol)
    dropped = sum(counts[name]["purged"] + counts[name]["embargoed"]
                  for counts in splits.report["per_symbol"].values()
                  for name in ("train", "validation", "test"))
    assert dropped > 0  # triple-barrier labels at each boundary read the next slice's prices
    assert splits.n_train + splits.n_val + splits.n_test + dropped == total


def test_chain_errors(
    example_strategy: StrategyConfig, sample_data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="no data for AUDUSD 1h"):
        build_symbol_data(example_strategy, "AUDUSD", ["1h"], data_dir=sample_data_dir)
    with pytest.raises(DataError, match="EURUSD: no usable rows"):
        build_symbol_data(
            example_strategy, "EURUSD", ["1h"], data_dir=sample_data_dir, start="2031-01-01"
        )
    with pytest.raises(DataError, match="invalid symbol"):
        build_symbol_data(example_strategy, "../x", ["1h"], data_dir=tmp_path)
