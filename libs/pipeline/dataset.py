"""Per-symbol datasets, the chronological split and the multi-symbol concatenation.

Each symbol is processed and labelled on its own (`build_symbol_data`: `load_symbol_prices`
then `symbol_data_from_prices`, the one chain the pipeline also runs), split chronologically by
the configured ratios (`split_symbol`), and the splits are concatenated symbol by symbol in the
order given (`combine_multi_symbol_data`): every symbol is in train, validation and test, and
nothing is shuffled across time (shuffling inside the training split is the trainer's business).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from libs.pipeline.data import DataError, load_price_data, window
from libs.pipeline.features import FeatureMatrix, engineer_features
from libs.pipeline.fuzzy import compute_memberships
from libs.pipeline.indicators import compute_indicators
from libs.pipeline.labels import generate_labels, is_regression
from libs.pipeline.progress import Phase
from libs.pipeline.strategy import DataSplitConfig, StrategyConfig, base_timeframe


@dataclass(frozen=True, eq=False)
class SymbolData:
    """One symbol's usable rows: features and labels of equal length, warm-up dropped.

    `labels` is int8 (0 BUY, 1 HOLD, 2 SELL) for classification, float32 for regression;
    the trainer widens classes to int64 when it makes tensors.
    """

    symbol: str
    features: FeatureMatrix
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.labels) != self.features.shape[0]:
            raise ValueError(
                f"{self.symbol}: {len(self.labels)} labels for {self.features.shape[0]} rows"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: slice | np.ndarray) -> SymbolData:
        return SymbolData(self.symbol, self.features.select(rows), self.labels[rows])


class SplitRows(NamedTuple):
    train: int
    validation: int
    test: int


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Row-major float32 inputs and labels per split, symbols concatenated in order."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    rows: Mapping[str, SplitRows]  # per symbol
    # First and last bar (ISO, UTC) of each symbol's usable rows: the data window for manifests.
    time_ranges: Mapping[str, tuple[str, str]]

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    @property
    def n_test(self) -> int:
        return len(self.y_test)


# --- alignment ----------------------------------------------------------------------------------


def _same_bars(a: pd.Index, b: pd.Index) -> bool:
    """a.equals(b), without comparing a million stamps when b is a's own data (the usual case:
    the feature index is a slice of the price index that the labels carry)."""
    if isinstance(a, pd.DatetimeIndex) and isinstance(b, pd.DatetimeIndex):
        x, y = a.asi8, b.asi8
        same = (x.ctypes.data, x.shape, x.strides) == (y.ctypes.data, y.shape, y.strides)
        if same and a.dtype == b.dtype:
            return True
    return a.equals(b)


def _label_array(labels: pd.Series | np.ndarray, features: FeatureMatrix) -> np.ndarray:
    """The labels on the feature rows, as they come (int8 classes, or float64 with NaN): a
    Series on the price index is cut to the feature index (which starts `lags` bars in) by
    position when it lines up, and reindexed otherwise."""
    rows = len(features.index)
    if isinstance(labels, pd.Series):
        if len(labels) < rows or not _same_bars(labels.index[len(labels) - rows :], features.index):
            labels = labels.reindex(features.index)
        array = labels.to_numpy()[len(labels) - rows :]
    else:
        array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64, copy=False)
    if array.shape != (rows,):
        raise ValueError(f"{array.shape[0]} labels for {rows} feature rows")
    return array


def _kept_rows(mask: np.ndarray) -> slice | np.ndarray:
    """A slice when the kept rows are contiguous (the usual case: warm-up at the head, an
    undefined horizon at the tail), so the data is not copied; else the mask."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return slice(0, 0)
    first = int(mask.argmax())  # argmax stops at the first True
    last = len(mask) - 1 if mask[-1] else len(mask) - 1 - int(mask[::-1].argmax())
    return slice(first, last + 1) if last - first + 1 == count else mask


def align_features_and_labels(
    features: FeatureMatrix,
    labels: pd.Series | np.ndarray,
    *,
    symbol: str = "",
    regression: bool | None = None,
) -> SymbolData:
    """Keep the rows where every feature and the label are defined (warm-up, unseen higher
    bars and label horizons dropped together). `regression=None` infers it: labels that are all
    0/1/2 are classes (int8), anything else a float32 target."""
    y = _label_array(labels, features)
    defined = features.defined_rows()
    if y.dtype.kind == "f":
        defined &= ~np.isnan(y)
    rows = _kept_rows(defined)
    y = y[rows]
    if regression is None:
        regression = not ((y == 0) | (y == 1) | (y == 2)).all()
    return SymbolData(
        symbol,
        features.select(rows),
        y.astype(np.float32 if regression else np.int8, copy=False),
    )


# --- building one symbol ------------------------------------------------------------------------


# Told when each step of one symbol's chain starts: (phase, what it is doing).
StepHook = Callable[[Phase, str], None]


def _no_step(phase: Phase, message: str) -> None:
    return None


def load_symbol_prices(
    strategy: StrategyConfig,
    symbol: str,
    timeframes: Sequence[str],
    *,
    data_dir: Path | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """Bars per timeframe in [start - history_required bars, end]: the extra bars before
    `start` warm the indicators up and are dropped again by `symbol_data_from_prices`."""
    history = strategy.training_data.history_required
    return {
        tf: window(
            load_price_data(symbol, tf, data_dir=data_dir, end=end), start, None, history=history
        )
        for tf in timeframes
    }


def symbol_data_from_prices(
    strategy: StrategyConfig,
    symbol: str,
    prices_by_tf: Mapping[str, pd.DataFrame],
    base_tf: str,
    *,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    step: StepHook = _no_step,
) -> SymbolData:
    """indicators -> fuzzy -> features on every timeframe, labels on the base, aligned, and the
    rows from `start` on (the warm-up bars before it dropped). `step` hears each step begin."""
    step("indicators", f"{symbol}: {len(strategy.indicators)} indicators")
    indicators = {tf: compute_indicators(prices, strategy.indicators)
                  for tf, prices in prices_by_tf.items()}
    step("fuzzy", f"{symbol}: {len(strategy.fuzzy_sets)} fuzzy sets")
    memberships = {tf: compute_memberships(frame, strategy.fuzzy_sets)
                   for tf, frame in indicators.items()}
    del indicators  # the memberships are all the features read
    step("features", f"{symbol}: feature matrix on {base_tf}")
    features = engineer_features(memberships, strategy, base_tf)
    step("labels", f"{symbol}: {type(strategy.training.labels).__name__}")
    labels = generate_labels(prices_by_tf[base_tf], strategy.training.labels)
    data = align_features_and_labels(
        features, labels, symbol=symbol, regression=is_regression(strategy.training.labels)
    )
    if start is not None:
        first = window(prices_by_tf[base_tf], start).index
        at = int(data.features.index.searchsorted(first[0])) if len(first) else len(data)
        data = data.select(slice(at, None))
    if len(data) == 0:
        raise DataError(
            f"{symbol}: no usable rows in {', '.join(prices_by_tf)} between "
            f"{start or 'the start'} and {end or 'the end'} after indicator warm-up"
        )
    return data


def build_symbol_data(
    strategy: StrategyConfig,
    symbol: str,
    timeframes: Sequence[str],
    *,
    data_dir: Path | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> SymbolData:
    """Load each timeframe (with `history_required` extra bars before `start` for warm-up),
    build features and labels, and keep the usable rows from `start` on. `start`/`end` default
    to the strategy's `training_data.start_date`/`end_date`."""
    start = start if start is not None else strategy.training_data.start_date
    end = end if end is not None else strategy.training_data.end_date
    prices = load_symbol_prices(strategy, symbol, timeframes, data_dir=data_dir, start=start,
                                end=end)
    return symbol_data_from_prices(strategy, symbol, prices,
                                   base_timeframe(strategy, list(timeframes)), start=start,
                                   end=end)


# --- splitting and combining ------------------------------------------------------------------


def split_symbol(
    data: SymbolData, split: DataSplitConfig
) -> tuple[SymbolData, SymbolData, SymbolData]:
    """Chronological train / validation / test by the configured ratios (rounded to rows)."""
    n = len(data)
    train_end = round(n * split.train)
    val_end = n if split.test == 0 else round(n * (split.train + split.validation))
    return (
        data.select(slice(0, train_end)),
        data.select(slice(train_end, val_end)),
        data.select(slice(val_end, n)),
    )


def _stack(
    parts: Sequence[SymbolData], width: int, label_dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    rows = sum(len(p) for p in parts)
    x = np.empty((rows, width), dtype=np.float32)  # row-major: what batches slice
    y = np.empty(rows, dtype=label_dtype)
    at = 0
    for part in parts:
        part.features.rows_into(x[at : at + len(part)])
        y[at : at + len(part)] = part.labels
        at += len(part)
    return x, y


def combine_multi_symbol_data(
    per_symbol: Sequence[SymbolData], split: DataSplitConfig
) -> DataSplits:
    """Split each symbol chronologically, then concatenate the splits symbol by symbol."""
    if not per_symbol:
        raise ValueError("no symbols to combine")
    names = per_symbol[0].features.names
    label_dtype = per_symbol[0].labels.dtype
    symbols = tuple(d.symbol for d in per_symbol)
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"duplicate symbols: {symbols}")
    for data in per_symbol[1:]:
        if data.features.names != names:
            raise ValueError(f"{data.symbol}: feature names differ from {per_symbol[0].symbol}'s")
        if data.labels.dtype != label_dtype:
            raise ValueError(f"{data.symbol}: label dtype differs from {per_symbol[0].symbol}'s")
    parts = [split_symbol(data, split) for data in per_symbol]
    x_train, y_train = _stack([p[0] for p in parts], len(names), label_dtype)
    x_val, y_val = _stack([p[1] for p in parts], len(names), label_dtype)
    x_test, y_test = _stack([p[2] for p in parts], len(names), label_dtype)
    return DataSplits(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        feature_names=names,
        symbols=symbols,
        rows={
            d.symbol: SplitRows(*(len(s) for s in p))
            for d, p in zip(per_symbol, parts, strict=True)
        },
        time_ranges={
            d.symbol: (
                (d.features.index[0].isoformat(), d.features.index[-1].isoformat())
                if len(d)
                else ("", "")
            )
            for d in per_symbol
        },
    )
