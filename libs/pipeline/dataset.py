"""Per-symbol datasets, the split on one time axis and the multi-symbol concatenation.

Each symbol is processed and labelled on its own (`build_symbol_data`: `load_symbol_prices`
then `symbol_data_from_prices`, the one chain the pipeline also runs), with the time each
row's label becomes known. The rows of all symbols are then split on one time axis, purged and
embargoed (libs/pipeline/splits.py: `split_data` for any windows, `combine_multi_symbol_data`
for the configured train / validation / test), and the slices are concatenated symbol by symbol
in the order given. Nothing is shuffled across time (shuffling inside the training split is the
trainer's business).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from libs.pipeline import kernels
from libs.pipeline.context import indicators_with_context, load_context_prices, split_context
from libs.pipeline.data import DataError, WindowError, load_price_data, ns_stamps, window
from libs.pipeline.features import FeatureMatrix, engineer_features, needs_indicators
from libs.pipeline.fuzzy import compute_memberships
from libs.pipeline.labels import (
    CLASS_NAMES,
    is_regression,
    label_outcomes,
    sample_weights,
)
from libs.pipeline.progress import Phase
from libs.pipeline.splits import AFTER_ALL, SLICES, SliceRows, Windows, assign_rows, iso, time_axis
from libs.pipeline.splits import holdout_windows as _holdout_windows
from libs.pipeline.strategy import DataSplitConfig, StrategyConfig, base_timeframe
from libs.pipeline.windows import Windows as SequenceWindows
from libs.pipeline.windows import stack_windows, step_names


@dataclass(frozen=True, eq=False)
class SymbolData:
    """One symbol's usable rows: features and labels of equal length, warm-up dropped.

    `labels` is int8 (0 BUY, 1 HOLD, 2 SELL) for classification, float32 for regression;
    the trainer widens classes to int64 when it makes tensors. `known_at`: per row, the time
    (int64 ns) of the last bar its label reads. `prices`: the symbol's base-timeframe bars (the
    backtest trades them, the embargo counts them). `unlabelled`: rows with features but no
    label yet (a label horizon past the data, zigzag's unconfirmed last leg). `weights`: the
    rows' sample weights in the training loss (float32; None: every row weighs the same).
    """

    symbol: str
    features: FeatureMatrix
    labels: np.ndarray
    known_at: np.ndarray | None = None
    prices: pd.DataFrame | None = None
    unlabelled: int = 0
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.labels) != self.features.shape[0]:
            raise ValueError(
                f"{self.symbol}: {len(self.labels)} labels for {self.features.shape[0]} rows"
            )
        if self.known_at is not None and len(self.known_at) != len(self.labels):
            raise ValueError(f"{self.symbol}: {len(self.known_at)} label times for "
                             f"{len(self.labels)} rows")
        if self.weights is not None and len(self.weights) != len(self.labels):
            raise ValueError(f"{self.symbol}: {len(self.weights)} weights for "
                             f"{len(self.labels)} rows")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def times(self) -> np.ndarray:
        """The rows' bar times (int64 ns, UTC)."""
        return _ns(self.features.index)

    def label_times(self) -> np.ndarray:
        """When each row's label is known (int64 ns); without that information, at its row."""
        return self.known_at if self.known_at is not None else self.times

    def bar_times(self) -> np.ndarray:
        return _ns(self.prices.index) if self.prices is not None else self.times

    def select(self, rows: slice | np.ndarray) -> SymbolData:
        return SymbolData(
            self.symbol, self.features.select(rows), self.labels[rows],
            None if self.known_at is None else self.known_at[rows], self.prices, self.unlabelled,
            None if self.weights is None else self.weights[rows],
        )


def _ns(index: pd.Index) -> np.ndarray:
    if len(index) == 0:
        return np.empty(0, dtype=np.int64)
    return np.asarray(ns_stamps(index), dtype=np.int64)


class SplitRows(NamedTuple):
    train: int
    validation: int
    test: int


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Row-major float32 inputs and labels per split, symbols concatenated in order; for a
    recurrent model, `SequenceWindows` over the bars instead (windows.py: (rows, length,
    features) when indexed), and `feature_names` the per-step names.

    `test_symbol` (index into `symbols`) and `test_times` (int64 ns) say where each test row
    comes from; `sources` are the per-symbol rows the slices were cut from (the causal
    baseline and the backtest read them); `report` is the split's account (splits.py)."""

    x_train: np.ndarray | SequenceWindows
    y_train: np.ndarray
    x_val: np.ndarray | SequenceWindows
    y_val: np.ndarray
    x_test: np.ndarray | SequenceWindows
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    rows: Mapping[str, SplitRows]  # per symbol
    # First and last bar (ISO, UTC) of each symbol's usable rows: the data window for manifests.
    time_ranges: Mapping[str, tuple[str, str]]
    test_symbol: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int16))
    test_times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    sources: tuple[SymbolData, ...] = ()
    windows: Windows | None = None
    report: Mapping[str, Any] = field(default_factory=dict)
    # The training rows' sample weights (float32), when the labels have them; validation and
    # test stay unweighted, comparable across settings.
    w_train: np.ndarray | None = None
    class_names: tuple[str, ...] = CLASS_NAMES  # the class ids' names (regime: its four)

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


def _kept_rows(kept: int, first: int, last: int, mask: np.ndarray) -> slice | np.ndarray:
    """The `kept` rows of `mask`, `first` to `last`: a slice when they are contiguous (the usual
    case: warm-up at the head, an undefined horizon at the tail), so the data is not copied;
    else the mask."""
    if kept == 0:
        return slice(0, 0)
    return slice(first, last + 1) if last - first + 1 == kept else mask


def align_features_and_labels(
    features: FeatureMatrix,
    labels: pd.Series | np.ndarray,
    *,
    symbol: str = "",
    regression: bool | None = None,
    known_at: pd.Series | np.ndarray | None = None,
    prices: pd.DataFrame | None = None,
    weights: pd.Series | np.ndarray | None = None,
) -> SymbolData:
    """Keep the rows where every feature and the label are defined (warm-up, unseen higher
    bars and label horizons dropped together). `regression=None` infers it: labels that are all
    0/1/2 are classes (int8), anything else a float32 target. `known_at` (int64 ns, on the
    labels' index) and `weights` (sample weights, on the labels' index) come along with the
    labels."""
    y = _label_array(labels, features)
    defined = features.defined_rows()
    unlabelled, kept, first, last = kernels.keep_labelled(y, defined)
    rows = _kept_rows(kept, first, last, defined)
    y = y[rows]
    if regression is None:
        regression = not ((y == 0) | (y == 1) | (y == 2)).all()
    known = None if known_at is None else _label_array(known_at, features)[rows]
    weight = None if weights is None else _label_array(weights, features)[rows]
    return SymbolData(
        symbol,
        features.select(rows),
        y.astype(np.float32 if regression else np.int8, copy=False),
        None if known is None else known.astype(np.int64, copy=False),
        prices,
        unlabelled,
        None if weight is None else weight.astype(np.float32),
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
    `start` warm the indicators up and are dropped again by `symbol_data_from_prices`. The
    strategy's context_data series come along under `context:<name>` keys (context.py: read
    from their first bar, so their indicators do not depend on the window)."""
    history = strategy.training_data.history_required
    return {
        **{tf: window(load_price_data(symbol, tf, data_dir=data_dir, end=end), start, None,
                      history=history)
           for tf in timeframes},
        **load_context_prices(strategy, data_dir=data_dir, end=end),
    }


def symbol_features(
    strategy: StrategyConfig,
    symbol: str,
    prices_by_tf: Mapping[str, pd.DataFrame],
    base_tf: str,
    *,
    step: StepHook = _no_step,
) -> FeatureMatrix:
    """indicators -> fuzzy -> features on every timeframe, on the base timeframe's bars: the
    one feature path, for training (with labels, below) and for prediction
    (libs/pipeline/predict.py)."""
    step("indicators", f"{symbol}: {len(strategy.indicators)} indicators")
    prices_by_tf, context = split_context(prices_by_tf)  # context series: data_source inputs
    indicators = {tf: indicators_with_context(prices, tf, strategy, context)
                  for tf, prices in prices_by_tf.items()}
    step("fuzzy", f"{symbol}: {len(strategy.fuzzy_sets)} fuzzy sets")
    memberships = {tf: compute_memberships(frame, strategy.fuzzy_sets)
                   for tf, frame in indicators.items()}
    # raw_indicator inputs read the indicator columns too; else the memberships are all.
    raw = indicators if needs_indicators(strategy) else None
    del indicators
    step("features", f"{symbol}: feature matrix on {base_tf}")
    return engineer_features(memberships, strategy, base_tf, raw)


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
    features = symbol_features(strategy, symbol, prices_by_tf, base_tf, step=step)
    step("labels", f"{symbol}: {type(strategy.training.labels).__name__}")
    base = prices_by_tf[base_tf]
    labels = label_outcomes(base, strategy.training.labels, bar_times=_ns(base.index),
                            never=AFTER_ALL)
    weights = sample_weights(base, strategy.training.labels)
    data = align_features_and_labels(
        features, pd.Series(labels.values, index=base.index, name="label", copy=False),
        symbol=symbol, regression=is_regression(strategy.training.labels),
        known_at=pd.Series(labels.known_at, index=base.index, copy=False),
        prices=base,
        weights=None if weights is None else pd.Series(weights, index=base.index, copy=False),
    )
    if start is not None:
        first = window(prices_by_tf[base_tf], start).index
        at = int(data.features.index.searchsorted(first[0])) if len(first) else len(data)
        data = data.select(slice(at, None))
    if len(data) == 0:
        cusum = cusum_key(strategy.training.labels)
        # No bar at all in the window asked for: the request is wrong (a trainer rejects it).
        # Bars the warm-up or the CUSUM filter used up: the strategy does not fit the data.
        empty = len(window(prices_by_tf[base_tf], start)) == 0
        raise (WindowError if empty else DataError)(
            f"{symbol}: no usable rows in {', '.join(prices_by_tf)} between "
            f"{start or 'the start'} and {end or 'the end'} after indicator warm-up"
            + (f" and the CUSUM event filter ({cusum}: lower it)" if cusum else "")
        )
    return data


def cusum_key(labels: object) -> str | None:
    """The label key of a CUSUM event filter, when the labels use one (it drops most bars)."""
    for key in ("cusum_threshold", "cusum_multiplier"):
        if getattr(labels, key, None) is not None:
            return f"training.labels.{key}"
    return None


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


def _stack_windows(
    per_symbol: Sequence[SymbolData], rows: Sequence[np.ndarray], length: int,
    label_dtype: np.dtype,
) -> tuple[SequenceWindows, np.ndarray]:
    """The windows of the kept rows of every symbol, and their labels, symbol by symbol: the
    symbols' rows are not selected first (that would expand every lag into a copy)."""
    x = stack_windows([(d.features, r) for d, r in zip(per_symbol, rows, strict=True)], length)
    y = np.concatenate([d.labels[r] for d, r in zip(per_symbol, rows, strict=True)])
    return x, y.astype(label_dtype, copy=False)


def _check_symbols(per_symbol: Sequence[SymbolData]) -> None:
    if not per_symbol:
        raise ValueError("no symbols to combine")
    first = per_symbol[0]
    symbols = [d.symbol for d in per_symbol]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"duplicate symbols: {tuple(symbols)}")
    for data in per_symbol[1:]:
        if data.features.names != first.features.names:
            raise ValueError(f"{data.symbol}: feature names differ from {first.symbol}'s")
        if data.labels.dtype != first.labels.dtype:
            raise ValueError(f"{data.symbol}: label dtype differs from {first.symbol}'s")


def _distribution(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Classes counted by name, or a regression target's mean, spread and share above 0."""
    if labels.dtype.kind == "f":
        if not len(labels):
            return {"samples": 0}
        return {"samples": len(labels), "mean": float(labels.mean()),
                "std": float(labels.std()), "positive_share": float((labels > 0).mean())}
    counts = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}


def split_data(
    per_symbol: Sequence[SymbolData], windows: Windows, *, embargo: int = 0,
    sequence_length: int | None = None, class_names: Sequence[str] = CLASS_NAMES,
) -> DataSplits:
    """Cut every symbol's rows by the same time windows (purge and embargo as splits.py says),
    then concatenate each slice symbol by symbol: row-major rows, or with `sequence_length`
    (a recurrent model, whose features were engineered with lags = sequence_length - 1) the
    windows of that many bars ending at each row."""
    _check_symbols(per_symbol)
    names = per_symbol[0].features.names
    label_dtype = per_symbol[0].labels.dtype
    assigned = [assign_rows(d.times, d.label_times(), d.bar_times(), windows, embargo)
                for d in per_symbol]
    rows = {name: [a[name].rows for a in assigned] for name in SLICES}
    stacked: dict[str, tuple[np.ndarray | SequenceWindows, np.ndarray]]
    if sequence_length is None:
        stacked = {name: _stack([d.select(r) for d, r in zip(per_symbol, rows[name],
                                                             strict=True)],
                                len(names), label_dtype)
                   for name in SLICES}
    else:
        stacked = {name: _stack_windows(per_symbol, rows[name], sequence_length, label_dtype)
                   for name in SLICES}
        names = step_names(names, sequence_length)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (stacked[n] for n in SLICES)
    test_rows = rows["test"]
    weighted = [d.weights[r] for d, r in zip(per_symbol, rows["train"], strict=True)
                if d.weights is not None]
    if weighted and len(weighted) != len(per_symbol):
        raise ValueError("some symbols have sample weights and others not")
    return DataSplits(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        feature_names=names,
        symbols=tuple(d.symbol for d in per_symbol),
        rows={d.symbol: SplitRows(*(a[name].kept for name in SLICES))
              for d, a in zip(per_symbol, assigned, strict=True)},
        time_ranges={
            d.symbol: (
                (d.features.index[0].isoformat(), d.features.index[-1].isoformat())
                if len(d) else ("", "")
            )
            for d in per_symbol
        },
        test_symbol=np.concatenate([np.full(len(r), i, dtype=np.int16)
                                    for i, r in enumerate(test_rows)]),
        test_times=np.concatenate([d.times[r] for d, r in zip(per_symbol, test_rows,
                                                                strict=True)]),
        sources=tuple(per_symbol),
        windows=windows,
        report=_report(per_symbol, assigned, windows, embargo,
                       {"train": y_train, "validation": y_val, "test": y_test}, class_names),
        w_train=np.concatenate(weighted) if weighted else None,
        class_names=tuple(class_names),
    )


def _report(
    per_symbol: Sequence[SymbolData], assigned: Sequence[Mapping[str, SliceRows]],
    windows: Windows, embargo: int, labels: Mapping[str, np.ndarray],
    class_names: Sequence[str],
) -> dict[str, Any]:
    return {
        "boundaries": {
            "validation_start": iso(windows.validation[0]) if windows.validation[0] !=
            windows.validation[1] else None,
            "test_start": iso(windows.test[0]),
            "test_end": iso(windows.test[1]),
        },
        "embargo": embargo,
        "per_symbol": {
            d.symbol: {**{name: a[name].counts() for name in SLICES},
                       "unconfirmed": d.unlabelled}
            for d, a in zip(per_symbol, assigned, strict=True)
        },
        "label_distribution": {name: _distribution(y, class_names)
                               for name, y in labels.items()},
    }


def combine_multi_symbol_data(
    per_symbol: Sequence[SymbolData], split: DataSplitConfig, *, embargo: int = 0,
    sequence_length: int | None = None, class_names: Sequence[str] = CLASS_NAMES,
) -> DataSplits:
    """The configured train / validation / test, on the time axis of all symbols' rows."""
    _check_symbols(per_symbol)
    axis = time_axis([d.times for d in per_symbol])
    return split_data(per_symbol, _holdout_windows(axis, split), embargo=embargo,
                      sequence_length=sequence_length, class_names=class_names)


# --- what a split must hold to be trained and scored ------------------------------------------

# The documented minimums (docs/configuration.md): fewer rows train nothing worth a number.
MIN_TRAIN_ROWS = 100
MIN_EVAL_ROWS = 20


class SplitError(ValueError):
    """A split that cannot be trained or scored: `field` names the strategy key to change."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_trainable(
    splits: DataSplits, *, regression: bool, validation: bool, where: str = "",
    field: str | None = None, thinned_by: str | None = None,
) -> None:
    """Refuse a split too small to learn or score, or a one-class training slice. `where`
    prefixes the message (a fold), `field` replaces the data_split key named; `thinned_by`
    names the label key that keeps only some bars (a CUSUM event filter), the likelier cause."""
    after = "rows after purge and embargo"
    widen = "widen training_data (start_date / end_date) or use a lighter warm-up"
    if thinned_by is not None:
        after = f"rows after purge, embargo and the CUSUM event filter ({thinned_by})"
        widen = f"lower {thinned_by} (fewer bars are skipped), or " + widen
        field = field or thinned_by
    sizes = (("train", splits.n_train, MIN_TRAIN_ROWS),
             ("validation", splits.n_val if validation else MIN_EVAL_ROWS, MIN_EVAL_ROWS),
             ("test", splits.n_test, MIN_EVAL_ROWS))
    for name, rows, minimum in sizes:
        if rows < minimum:
            raise SplitError(f"{where}{rows} {name} {after}, fewer than the minimum of "
                             f"{minimum}: {widen}", field=field or f"training.data_split.{name}")
    if not regression:
        present = np.unique(splits.y_train)
        if len(present) < 2:
            only = splits.class_names[int(present[0])]
            raise SplitError(f"{where}every training row is labelled {only}: a classifier "
                             "needs two classes at least (change the label's threshold or the "
                             "data window)", field=field or "training.labels")
