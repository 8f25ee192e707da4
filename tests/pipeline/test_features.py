"""The feature matrix: order, names, lags, and multi-timeframe alignment without look-ahead."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.data import resample, synthesize
from libs.pipeline.features import FeatureError, FeatureMatrix, engineer_features, feature_names
from libs.pipeline.fuzzy import Memberships, compute_memberships
from libs.pipeline.indicators import compute_indicators
from libs.pipeline.strategy import StrategyConfig, parse_strategy

TWO_TF = """
name: two_tf
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: multi_timeframe, list: [1h, 4h]}
indicators:
  x: {type: sma, period: 2}
fuzzy_sets:
  s: {indicator: x, m: [0, 1, 2]}
nn_inputs:
  - {fuzzy_set: s, timeframes: all}
model: {features: {lookback_periods: LAGS}}
"""


def two_tf(lags: int = 0) -> StrategyConfig:
    return parse_strategy(TWO_TF.replace("LAGS", str(lags)))


def frame(index: pd.DatetimeIndex, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"s_m": values.astype(np.float32)}, index=index)


def memberships_for(
    strategy: StrategyConfig, prices_by_tf: dict[str, pd.DataFrame]
) -> dict[str, Memberships]:
    return {
        tf: compute_memberships(compute_indicators(p, strategy.indicators), strategy.fuzzy_sets)
        for tf, p in prices_by_tf.items()
    }


# --- names and order -----------------------------------------------------------------------


def test_names_follow_nn_inputs_then_timeframe_then_membership(
    load_example: Callable[[str], StrategyConfig],
) -> None:
    strategy = load_example("multi_tf_trend")
    names = feature_names(strategy, ["1h", "4h", "1d"])
    assert names[:13] == (
        "1h_momentum_weak",
        "1h_momentum_neutral",
        "1h_momentum_strong",
        "4h_momentum_weak",
        "4h_momentum_neutral",
        "4h_momentum_strong",
        "1d_momentum_weak",
        "1d_momentum_neutral",
        "1d_momentum_strong",
        "4h_trend_strength_ranging",
        "4h_trend_strength_trending",
        "1d_trend_strength_ranging",
        "1d_trend_strength_trending",
    )
    assert names[22:25] == (
        "1h_momentum_weak_lag_1",
        "1h_momentum_neutral_lag_1",
        "1h_momentum_strong_lag_1",
    )
    assert len(names) == 2 * 22 and len(set(names)) == len(names)


def test_engineered_names_equal_feature_names(
    load_example: Callable[[str], StrategyConfig],
) -> None:
    strategy = load_example("multi_tf_trend")
    hourly = synthesize("EURUSD", "1h", 400, seed=1)
    prices = {"1h": hourly, "4h": resample(hourly, "4h"), "1d": resample(hourly, "1d")}
    matrix = engineer_features(memberships_for(strategy, prices), strategy, "1h")
    assert matrix.names == feature_names(strategy, ["1h", "4h", "1d"])
    # The first bar has no lag: rows start one bar in (lookback_periods: 1).
    assert matrix.values.dtype == np.float32 and matrix.shape == (399, len(matrix.names))
    assert matrix.index.equals(hourly.index[1:])


def test_lags_are_shifted_copies() -> None:
    strategy = two_tf(lags=2)
    index = pd.date_range("2024-01-08", periods=12, freq="1h", tz="UTC")
    base = np.arange(12, dtype=np.float32) / 10
    four = frame(index[::4], np.array([7, 8, 9], dtype=np.float32))
    matrix = engineer_features({"1h": frame(index, base), "4h": four}, strategy, "1h")
    assert matrix.names == (
        "1h_s_m",
        "4h_s_m",
        "1h_s_m_lag_1",
        "4h_s_m_lag_1",
        "1h_s_m_lag_2",
        "4h_s_m_lag_2",
    )
    # A row per bar that has both lags: the first two bars are not rows.
    assert matrix.index.equals(index[2:])
    v = matrix.values
    np.testing.assert_array_equal(v[:, 0], base[2:])
    np.testing.assert_array_equal(v[:, 2], base[1:-1])
    np.testing.assert_array_equal(v[:, 4], base[:-2])
    np.testing.assert_array_equal(v[1:, 3], v[:-1, 1])
    np.testing.assert_array_equal(v[2:, 5], v[:-2, 1])
    # The 4h bar stamped 00:00 closes with the 1h row stamped 03:00 (row 1 here).
    assert np.isnan(v[0, 1]) and v[1, 1] == 7 and np.isnan(v[1, 3])


# --- alignment: a row sees a higher bar only once that bar has closed ------------------------


def test_higher_bars_are_visible_only_after_they_close() -> None:
    hours = pd.date_range("2024-01-08T00:00", periods=24, freq="1h", tz="UTC")
    fours = pd.date_range("2024-01-08T00:00", periods=6, freq="4h", tz="UTC")
    matrix = engineer_features(
        {"1h": frame(hours, np.zeros(24)), "4h": frame(fours, np.arange(6.0))}, two_tf(), "1h"
    )
    seen = pd.Series(matrix.values[:, 1], index=hours)
    # Rows 00:00-02:00 close before the first 4h bar (00:00-04:00) does: nothing is visible.
    assert seen[:"2024-01-08T02:00"].isna().all()
    # The 1h row stamped 03:00 closes at 04:00, together with the 4h bar stamped 00:00.
    assert seen["2024-01-08T03:00"] == 0
    # The 4h bar stamped 08:00 closes at 12:00: first visible on the 1h row stamped 11:00.
    assert seen["2024-01-08T10:00"] == 1
    assert seen["2024-01-08T11:00"] == 2
    # In general: the visible bar's close is <= the row's close, and it is the latest such bar.
    for stamp, value in seen.dropna().items():
        opened = fours[int(value)]
        assert opened + pd.Timedelta(hours=4) <= stamp + pd.Timedelta(hours=1)
        assert opened + pd.Timedelta(hours=8) > stamp + pd.Timedelta(hours=1)


def test_no_look_ahead_through_the_whole_chain(
    load_example: Callable[[str], StrategyConfig],
) -> None:
    """Change every bar after a cut; the features of rows up to the cut must not move."""
    strategy = load_example("multi_tf_trend")  # 1h base with 4h and 1d resampled from it
    hourly = synthesize("EURUSD", "1h", 1500, seed=4)
    cut = hourly.index[1100]  # a row; bars opening after it close after this row does
    future = hourly.index > cut
    changed = hourly.copy()
    rng = np.random.default_rng(0)
    noise = np.exp(rng.normal(0, 0.02, future.sum()))
    for col in ("open", "high", "low", "close"):
        changed.loc[future, col] = changed.loc[future, col] * noise

    def build(prices: pd.DataFrame) -> FeatureMatrix:
        by_tf = {"1h": prices, "4h": resample(prices, "4h"), "1d": resample(prices, "1d")}
        return engineer_features(memberships_for(strategy, by_tf), strategy, "1h")

    before, after = build(hourly), build(changed)
    upto = before.index <= cut
    np.testing.assert_array_equal(before.values[upto], after.values[upto])
    # The test has teeth: rows after the cut did change, including the higher-timeframe columns.
    assert not np.array_equal(before.values[~upto], after.values[~upto], equal_nan=True)
    daily = [i for i, n in enumerate(before.names) if n.startswith("1d_") and "lag" not in n]
    assert not np.array_equal(
        before.values[~upto][:, daily], after.values[~upto][:, daily], equal_nan=True
    )

    # And the naive alignment on bar OPEN times (forward-fill) would have leaked the future.
    daily_mem = memberships_for(strategy, {"1d": resample(changed, "1d")})["1d"].to_frame()
    naive = daily_mem.reindex(changed.index, method="ffill")
    original = (
        memberships_for(strategy, {"1d": resample(hourly, "1d")})["1d"]
        .to_frame()
        .reindex(hourly.index, method="ffill")
    )
    hours_upto = hourly.index <= cut
    assert not naive[hours_upto].equals(original[hours_upto])


def test_rows_before_any_closed_higher_bar_are_nan() -> None:
    hours = pd.date_range("2024-01-08T00:00", periods=3, freq="1h", tz="UTC")
    fours = pd.date_range("2024-01-08T04:00", periods=2, freq="4h", tz="UTC")  # starts later
    matrix = engineer_features(
        {"1h": frame(hours, np.ones(3)), "4h": frame(fours, np.ones(2))}, two_tf(), "1h"
    )
    assert np.isnan(matrix.values[:, 1]).all()
    empty = engineer_features(
        {"1h": frame(hours, np.ones(3)), "4h": frame(fours[:0], np.ones(0))}, two_tf(), "1h"
    )
    assert np.isnan(empty.values[:, 1]).all()


# --- bad input ----------------------------------------------------------------------------


def test_bad_inputs() -> None:
    hours = pd.date_range("2024-01-08", periods=3, freq="1h", tz="UTC")
    strategy = two_tf()
    with pytest.raises(FeatureError, match="base timeframe 4h has no memberships"):
        engineer_features({"1h": frame(hours, np.ones(3))}, strategy, "4h")
    pinned = parse_strategy(
        TWO_TF.replace("LAGS", "0").replace("timeframes: all", "timeframes: [4h]")
    )
    with pytest.raises(
        FeatureError,
        match=r"nn_inputs\[0\] \(s\) needs timeframe\(s\) 4h, which this run does not load \(1h\)",
    ):
        engineer_features({"1h": frame(hours, np.ones(3))}, pinned, "1h")
    with pytest.raises(FeatureError, match="1h memberships lack column 's_m'"):
        engineer_features(
            {"1h": pd.DataFrame({"other": np.ones(3)}, index=hours)},
            parse_strategy(TWO_TF.replace("LAGS", "0").replace("[1h, 4h]", "[1h]")),
            "1h",
        )


def test_feature_matrix_checks_its_shape() -> None:
    index = pd.date_range("2024-01-08", periods=3, freq="1h", tz="UTC")
    with pytest.raises(FeatureError, match="2-D float32"):
        FeatureMatrix.from_rows(np.zeros((3, 1)), ("a",), index)
    with pytest.raises(FeatureError, match="do not make 3 rows x 1 names"):
        FeatureMatrix.from_rows(np.zeros((3, 2), dtype=np.float32), ("a",), index)
    with pytest.raises(FeatureError, match="1 lags do not make 3 rows"):
        FeatureMatrix(np.zeros((1, 3), dtype=np.float32), ("a", "a_lag_1"), index, lags=1)
    with pytest.raises(FeatureError, match="one flag per bar"):
        FeatureMatrix(np.zeros((1, 3), dtype=np.float32), ("a",), index, bar_defined=np.ones(2))
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    matrix = FeatureMatrix.from_rows(rows, ("a", "b"), index)
    part = matrix.select(slice(1, None))
    assert part.shape == (2, 2) and part.index[0] == index[1]
    np.testing.assert_array_equal(part.values, [[2, 3], [4, 5]])
    assert list(matrix.to_frame().columns) == ["a", "b"]
    with pytest.raises(FeatureError, match="out must be float32"):
        matrix.rows_into(np.empty((3, 2)))


def test_lags_are_views_of_the_unlagged_columns() -> None:
    """Lags are offsets into the memberships, not copies; rows_into expands them, and row
    subsets (slices, masks) keep every value where it was."""
    strategy = two_tf(lags=2)
    index = pd.date_range("2024-01-08", periods=9, freq="1h", tz="UTC")
    base = np.arange(9, dtype=np.float32)
    base[4] = np.nan
    memberships = Memberships.from_frame(frame(index, base))
    single = parse_strategy(TWO_TF.replace("LAGS", "2").replace("[1h, 4h]", "[1h]"))
    matrix = engineer_features({"1h": memberships}, single, "1h")
    assert np.shares_memory(matrix.columns, memberships.columns)  # no copy of the memberships
    expected = np.stack([base[2:], base[1:-1], base[:-2]], axis=1)  # the bar, lag 1, lag 2
    np.testing.assert_array_equal(matrix.values, expected)
    # A bar is a row of the data only when it and its lags are defined (bar 4 spoils rows 2-4).
    np.testing.assert_array_equal(
        matrix.defined_rows(), [True, True, False, False, False, True, True]
    )
    part = matrix.select(slice(3, 6))
    np.testing.assert_array_equal(part.values, expected[3:6])
    np.testing.assert_array_equal(part.defined_rows(), [False, False, True])
    mask = np.array([True, False, True, False, False, True, True])
    np.testing.assert_array_equal(matrix.select(mask).values, expected[mask])
    out = np.full((7, 3), -1, dtype=np.float32)
    matrix.rows_into(out)
    np.testing.assert_array_equal(out, expected)
    assert strategy.model.features.lookback_periods == 2


def test_fewer_bars_than_lags_make_no_rows() -> None:
    single = parse_strategy(TWO_TF.replace("LAGS", "3").replace("[1h, 4h]", "[1h]"))
    index = pd.date_range("2024-01-08", periods=2, freq="1h", tz="UTC")
    matrix = engineer_features({"1h": frame(index, np.ones(2))}, single, "1h")
    assert matrix.shape == (0, 4) and matrix.values.shape == (0, 4)
    assert not matrix.defined_rows().any()
