"""The features do not look ahead: on real hourly EURUSD (tests/harness/market.py), the feature
matrix computed on the bars up to a cut T equals, on every row at or before T, the matrix
computed on all the bars: exactly, NaN in the same places.

The strategy has eight indicators (TA-Lib: recursive, rolling, cumulative, multi-output, on
price sources and volume), fuzzy sets of all three shapes, three lags and two timeframes: 1h
rows and 4h bars. "Up to T" is what a live run knows at T: the 1h bars opened at or before T,
and the 4h bars the loader resamples from them (the last one partial). The full run also goes
through a 4h file of its own, windowed with `end=T` by the loader.

The matrix is taken where the pipeline makes it: `symbol_data_from_prices` is run as the
pipeline runs it, and its call of `engineer_features` is watched. Two sanity checks prove the
comparison can fail: a feature reading the next close, and the real chain with the 4h bars made
visible at their open instead of their close.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import libs.pipeline.dataset as dataset_module
import libs.pipeline.features as features_module
from libs.pipeline.data import DataError, load_price_data, resample, write_price_file
from libs.pipeline.dataset import load_symbol_prices, symbol_data_from_prices
from libs.pipeline.features import FeatureMatrix
from libs.pipeline.strategy import StrategyConfig, parse_strategy
from libs.pipeline.types import TIMEFRAME_SECONDS
from tests.harness.market import install_real_data

SYMBOL, BASE, HIGHER = "EURUSD", "1h", "4h"
TIMEFRAMES = [BASE, HIGHER]

STRATEGY_YAML = """
name: leakage_probe
description: many indicators, fuzzy sets, lags and two timeframes, to look for look-ahead
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: multi_timeframe, list: [1h, 4h], base_timeframe: 1h}
  history_required: 100
indicators:
  rsi_14: {type: rsi, period: 14}
  macd_12_26_9: {type: macd, fast_period: 12, slow_period: 26, signal_period: 9}
  adx_14: {type: adx, period: 14}
  stoch_14: {type: stochastic, k_period: 14, d_period: 3, smooth_k: 3}
  mfi_14: {type: mfi, period: 14}
  aroon_25: {type: aroon, period: 25}
  ema_50: {type: ema, period: 50, source: hlc3}
  obv: {type: obv}
fuzzy_sets:
  rsi_zone:
    indicator: rsi_14
    oversold: [0, 30, 45]
    neutral: [35, 50, 65]
    overbought: [55, 70, 100]
  macd_momentum:
    indicator: macd_12_26_9.histogram
    bearish: {type: trapezoidal, parameters: [-1.0, -1.0, -0.0006, 0.0]}
    flat: {type: gaussian, parameters: [0.0, 0.0002]}
    bullish: {type: trapezoidal, parameters: [0.0, 0.0006, 1.0, 1.0]}
  trend_strength:
    indicator: adx_14.adx
    ranging: {type: trapezoidal, parameters: [0, 0, 15, 25]}
    trending: {type: trapezoidal, parameters: [20, 35, 100, 100]}
  stoch_zone:
    indicator: stoch_14.d
    low: [0, 20, 40]
    high: [60, 80, 100]
  money_flow:
    indicator: mfi_14
    outflow: [0, 25, 50]
    inflow: [50, 75, 100]
  trend_direction:
    indicator: aroon_25
    down: {type: trapezoidal, parameters: [-100, -100, -70, 0]}
    up: {type: trapezoidal, parameters: [0, 70, 100, 100]}
  price_level:
    indicator: ema_50
    low: [1.0, 1.1, 1.2]
    high: [1.1, 1.2, 1.3]
  volume_flow:
    indicator: obv
    around_start: {type: gaussian, parameters: [0, 200000]}
nn_inputs:
  - {fuzzy_set: rsi_zone, timeframes: all}
  - {fuzzy_set: macd_momentum, timeframes: [1h]}
  - {fuzzy_set: trend_strength, timeframes: [4h]}
  - {fuzzy_set: stoch_zone, timeframes: all}
  - {fuzzy_set: money_flow, timeframes: [1h]}
  - {fuzzy_set: trend_direction, timeframes: [4h, 1h]}
  - {fuzzy_set: price_level, timeframes: [4h]}
  - {fuzzy_set: volume_flow, timeframes: [1h]}
model:
  type: mlp
  architecture: {hidden_layers: [16], activation: relu, dropout: 0.0}
  features: {lookback_periods: 3}
training:
  epochs: 1
  batch_size: 64
  learning_rate: 0.001
  optimizer: adam
  labels: {source: zigzag, zigzag_threshold: 0.005}
  data_split: {train: 0.7, validation: 0.15, test: 0.15}
  seed: 1
"""

Prices = dict[str, pd.DataFrame]


# --- the comparison ---------------------------------------------------------------------------


def assert_no_lookahead(full: pd.DataFrame, truncated: pd.DataFrame, cut: pd.Timestamp) -> None:
    """Every row of `truncated` (features from the bars up to `cut`) at or before `cut` must be
    the row of `full` (features from all the bars) with the same stamp: same stamps, same
    columns, equal values, NaN in the same places. Raises AssertionError naming the first
    difference."""
    mine, theirs = truncated.loc[:cut], full.loc[:cut]
    assert list(mine.columns) == list(theirs.columns), "different feature columns"
    if not mine.index.equals(theirs.index):
        only = mine.index.symmetric_difference(theirs.index)
        raise AssertionError(f"cut {cut}: rows differ, e.g. {only[:3].tolist()}")
    a, b = mine.to_numpy(), theirs.to_numpy()
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not same.all():
        rows, cols = np.nonzero(~same)
        r, c = int(rows[0]), int(cols[0])
        raise AssertionError(
            f"cut {cut}: feature {mine.columns[c]} on the row stamped {mine.index[r]} is "
            f"{float(a[r, c])!r} from the bars up to the cut but {float(b[r, c])!r} from all the "
            f"bars "
            f"({int((~same).sum())} values differ, on {len(set(rows.tolist()))} rows)"
        )


# --- running the pipeline's chain ---------------------------------------------------------------


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FeatureMatrix]]:
    """The matrices `engineer_features` returns inside `symbol_data_from_prices`."""
    seen: list[FeatureMatrix] = []
    real = dataset_module.engineer_features

    def spy(*args: object, **kwargs: object) -> FeatureMatrix:
        matrix = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(matrix)
        return matrix

    monkeypatch.setattr(dataset_module, "engineer_features", spy)
    yield seen


def features_of(
    strategy: StrategyConfig, prices: Prices, seen: list[FeatureMatrix]
) -> pd.DataFrame:
    """The raw feature matrix (warm-up NaN included) the pipeline builds from these bars."""
    before = len(seen)
    try:
        symbol_data_from_prices(strategy, SYMBOL, prices, BASE)
    except DataError as exc:  # an early cut: no labelled rows yet, but the matrix was made
        assert "no usable rows" in str(exc)
    assert len(seen) == before + 1, "symbol_data_from_prices no longer calls engineer_features"
    return seen[-1].to_frame()


@pytest.fixture(scope="module")
def strategy() -> StrategyConfig:
    return parse_strategy(STRATEGY_YAML, source="leakage_probe.yaml")


@pytest.fixture(scope="module")
def real_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(1h only: the loader resamples 4h; 1h plus a 4h file resampled from it)."""
    only_base = tmp_path_factory.mktemp("eurusd-1h")
    install_real_data(only_base, (SYMBOL, BASE))
    both = tmp_path_factory.mktemp("eurusd-1h-4h")
    install_real_data(both, (SYMBOL, BASE))
    write_price_file(resample(load_price_data(SYMBOL, BASE, data_dir=both), HIGHER),
                     both / f"{SYMBOL}_{HIGHER}.parquet")
    return only_base, both


@pytest.fixture(scope="module")
def full_prices(strategy: StrategyConfig, real_dirs: tuple[Path, Path]) -> Prices:
    return load_symbol_prices(strategy, SYMBOL, TIMEFRAMES, data_dir=real_dirs[0])


def cuts(base: pd.DatetimeIndex) -> list[pd.Timestamp]:
    """Cut points: each hour of one 4h bar, the last bar before a weekend and the first after,
    a late bar, and the day the 4h features are first all defined."""
    at = 700 + int(np.flatnonzero(base[700:].hour % 4 == 0)[0])
    gap = 1200 + int(np.flatnonzero(np.diff(base[1200:].asi8) > 3600 * 10**9)[0])
    return [base[i] for i in (250, at, at + 1, at + 2, at + 3, gap, gap + 1, 3001, len(base) - 2)]


def truncated_prices(
    strategy: StrategyConfig, directory: Path, base_file: pd.DataFrame, cut: pd.Timestamp
) -> Prices:
    """What a live run knows at `cut`: the 1h bars up to it, 4h resampled from them."""
    write_price_file(base_file.loc[:cut], directory / f"{SYMBOL}_{BASE}.parquet")
    return load_symbol_prices(strategy, SYMBOL, TIMEFRAMES, data_dir=directory)


# --- the tests ------------------------------------------------------------------------------------


def test_the_probe_is_not_vacuous(
    strategy: StrategyConfig, full_prices: Prices, watched: list[FeatureMatrix]
) -> None:
    full = features_of(strategy, full_prices, watched)
    assert full.shape == (5000 - 3, 4 * 24)  # 24 unlagged features and 3 lags of each
    assert len(full_prices[HIGHER]) > 1200
    defined = full.notna().all(axis=1)
    assert defined.mean() > 0.9
    values = full[defined]
    # Every feature moves on this data: none is a constant that could hide a difference.
    assert (values.std() > 0).all(), values.columns[values.std() == 0].tolist()
    assert {name.split("_")[0] for name in full.columns} == {"1h", "4h"}


def test_features_do_not_look_ahead(
    strategy: StrategyConfig,
    full_prices: Prices,
    real_dirs: tuple[Path, Path],
    tmp_path: Path,
    watched: list[FeatureMatrix],
) -> None:
    full = features_of(strategy, full_prices, watched)
    base_file = full_prices[BASE]
    for cut in cuts(pd.DatetimeIndex(base_file.index)):
        known = truncated_prices(strategy, tmp_path, base_file, cut)
        assert known[BASE].index[-1] == cut and known[HIGHER].index[-1] <= cut
        mine = features_of(strategy, known, watched)
        assert mine.index[-1] == cut
        if cut > full.index[300]:  # past the warm-up, the cut row itself is all defined
            assert mine.loc[cut].notna().all()
        assert_no_lookahead(full, mine, cut)

        # The loader's own `end`, with a 4h file of its own (complete 4h bars up to the cut).
        ended = load_symbol_prices(strategy, SYMBOL, TIMEFRAMES, data_dir=real_dirs[1], end=cut)
        assert_no_lookahead(full, features_of(strategy, ended, watched), cut)


# --- the comparison catches leaks -------------------------------------------------------------


def with_next_close(features: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """A leaky feature: the next bar's close."""
    close = prices[BASE]["close"].shift(-1).astype(np.float32)
    return features.assign(leak_next_close=close.reindex(features.index))


def test_a_feature_reading_the_next_close_is_caught(
    strategy: StrategyConfig, full_prices: Prices, tmp_path: Path, watched: list[FeatureMatrix]
) -> None:
    full = with_next_close(features_of(strategy, full_prices, watched), full_prices)
    base_file = full_prices[BASE]
    cut = cuts(pd.DatetimeIndex(base_file.index))[1]
    known = truncated_prices(strategy, tmp_path, base_file, cut)
    mine = with_next_close(features_of(strategy, known, watched), known)
    leak = f"feature leak_next_close on the row stamped {cut} is nan"
    with pytest.raises(AssertionError, match=re.escape(leak)):
        assert_no_lookahead(full, mine, cut)
    clean = "leak_next_close"
    assert_no_lookahead(full.drop(columns=clean), mine.drop(columns=clean), cut)


def _visible_at_open(
    higher_index: pd.DatetimeIndex, higher_tf: str, base_index: pd.DatetimeIndex, base_tf: str
) -> np.ndarray:
    """The classic multi-timeframe leak: a higher bar used from its open, before it closes."""
    return np.searchsorted(higher_index.asi8, base_index.asi8, side="right") - 1


@pytest.mark.parametrize("offset", [0, 1, 2])  # hours into the 4h bar: all leak; 3 closes it
def test_higher_bars_seen_before_they_close_are_caught(
    offset: int,
    strategy: StrategyConfig,
    full_prices: Prices,
    tmp_path: Path,
    watched: list[FeatureMatrix],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(features_module, "visible_positions", _visible_at_open)
    full = features_of(strategy, full_prices, watched)
    base_file = full_prices[BASE]
    cut = cuts(pd.DatetimeIndex(base_file.index))[1 + offset]
    assert cut.hour % 4 == offset
    known = truncated_prices(strategy, tmp_path, base_file, cut)
    mine = features_of(strategy, known, watched)
    with pytest.raises(AssertionError, match=r"feature 4h_\w+ on the row stamped "):
        assert_no_lookahead(full, mine, cut)


def test_the_real_alignment_is_the_closed_bar(strategy: StrategyConfig) -> None:
    """What the leak above breaks: a 1h row stamped 11:00 is the first to see the 4h bar
    stamped 08:00 (it closes at 12:00, with that row)."""
    base = pd.date_range("2020-01-06 08:00", periods=4, freq="1h", tz="UTC")
    higher = pd.DatetimeIndex([pd.Timestamp("2020-01-06 04:00", tz="UTC"), base[0]])
    positions = features_module.visible_positions(higher, HIGHER, base, BASE)
    assert positions.tolist() == [0, 0, 0, 1]
    assert TIMEFRAME_SECONDS[HIGHER] == 4 * TIMEFRAME_SECONDS[BASE]
