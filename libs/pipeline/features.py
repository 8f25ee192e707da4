"""The ordered feature matrix: fuzzy memberships per timeframe, aligned on base-timeframe rows.

Order (saved with the model, enforced at load): `nn_inputs` order x timeframe x membership as
written, names `{tf}_{fuzzy_set}_{membership}`; then, for k in 1..lookback_periods, every one of
those columns again shifted by k base rows, named `{name}_lag_{k}`.

Multi-timeframe alignment without look-ahead: bars are stamped at their OPEN. A base row stamped
t closes at t + base; a higher-timeframe bar stamped h closes at h + tf. The row sees the latest
higher bar with h + tf <= t + base, i.e. only bars that have CLOSED by the time the row's own
bar closes (a 4h bar stamped 08:00 is first seen on the 1h row stamped 11:00). Rows before any
such bar get NaN and are dropped with the warm-up rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from libs.pipeline import kernels
from libs.pipeline.fuzzy import Memberships, defined_bars
from libs.pipeline.strategy import StrategyConfig
from libs.pipeline.types import TIMEFRAME_SECONDS

_NS_PER_S = 1_000_000_000


class FeatureError(ValueError):
    """Raised when the memberships handed in cannot make the strategy's features."""


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Feature names[j] on the base bar stamped index[i] is values[i, j].

    Stored column by column, unlagged: `columns[k]` is unlagged feature k (float32) on the base
    bars from `lags` bars before index[0] on, so its lag-j copy on row i is
    columns[k, i + lags - j]. Lags are offsets, not copies: the memberships are written once,
    in pandas' own column layout, and used as they are; the row-major matrix the model reads
    is written once, by `rows_into`, straight into the split that needs it.
    """

    columns: np.ndarray
    names: tuple[str, ...]
    index: pd.DatetimeIndex
    lags: int = 0
    # Per unlagged bar: no NaN among its features. Known when the columns are built; else
    # computed on demand.
    bar_defined: np.ndarray | None = None

    def __post_init__(self) -> None:
        c = self.columns
        if c.ndim != 2 or c.dtype != np.float32:
            raise FeatureError(f"columns must be 2-D float32, got {c.dtype} {c.shape}")
        if c.shape[1] != len(self.index) + self.lags or c.shape[0] * (self.lags + 1) != len(
            self.names
        ):
            raise FeatureError(
                f"{c.shape[0]} columns of {c.shape[1]} bars with {self.lags} lags do not make "
                f"{len(self.index)} rows x {len(self.names)} names"
            )
        if self.bar_defined is not None and self.bar_defined.shape != (c.shape[1],):
            raise FeatureError(f"bar_defined must have one flag per bar ({c.shape[1]})")

    @classmethod
    def from_rows(
        cls, values: np.ndarray, names: Sequence[str], index: pd.DatetimeIndex
    ) -> FeatureMatrix:
        """A matrix without lags from row-major values (rows x names)."""
        values = np.asarray(values)
        if values.ndim != 2 or values.dtype != np.float32:
            raise FeatureError(f"values must be 2-D float32, got {values.dtype} {values.shape}")
        return cls(np.ascontiguousarray(values.T), tuple(names), index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), len(self.names)

    @property
    def values(self) -> np.ndarray:
        """The row-major matrix (a copy, written by `rows_into`)."""
        out = np.empty(self.shape, dtype=np.float32)
        self.rows_into(out)
        return out

    def rows_into(self, out: np.ndarray) -> None:
        """Write the row-major matrix (lags expanded) into `out`, shape `self.shape`."""
        if out.shape != self.shape or out.dtype != np.float32:
            raise FeatureError(f"out must be float32 {self.shape}, got {out.dtype} {out.shape}")
        if out.size:
            kernels.lagged_rows_into(self.columns, self.lags, out)

    def defined_rows(self) -> np.ndarray:
        """True for the rows where no feature is NaN (a bar and all its lags defined)."""
        per_bar = self.bar_defined
        if per_bar is None:
            per_bar = defined_bars(self.columns)
        rows = len(self.index)
        defined = per_bar[self.lags :].copy()
        for k in range(1, self.lags + 1):
            defined &= per_bar[self.lags - k : self.lags - k + rows]
        return defined

    def select(self, rows: slice | np.ndarray) -> FeatureMatrix:
        """A row subset (a contiguous slice is a view, a mask or index array copies)."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self.index))
            if step == 1:
                stop = max(start, stop)
                bars = slice(start, stop + self.lags)
                flags = None if self.bar_defined is None else self.bar_defined[bars]
                return FeatureMatrix(
                    self.columns[:, bars], self.names, self.index[start:stop], self.lags, flags
                )
        return FeatureMatrix.from_rows(self.values[rows], self.names, self.index[rows])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=self.index, columns=list(self.names))


def _inputs(strategy: StrategyConfig, timeframes: Sequence[str]) -> list[tuple[str, str, str]]:
    """(timeframe, fuzzy_set, membership) for every unlagged feature, in feature order."""
    out: list[tuple[str, str, str]] = []
    for i, nn in enumerate(strategy.nn_inputs):
        tfs = list(timeframes) if nn.timeframes == "all" else nn.timeframes
        absent = [tf for tf in tfs if tf not in timeframes]
        if absent:
            raise FeatureError(
                f"nn_inputs[{i}] ({nn.fuzzy_set}) needs timeframe(s) {', '.join(absent)}, "
                f"which this run does not load ({', '.join(timeframes)})"
            )
        memberships = strategy.fuzzy_sets[nn.fuzzy_set].memberships
        out.extend((tf, nn.fuzzy_set, m) for tf in tfs for m in memberships)
    return out


def feature_names(strategy: StrategyConfig, timeframes: Sequence[str]) -> tuple[str, ...]:
    """The ordered names `engineer_features` produces for these timeframes, without computing."""
    base = [f"{tf}_{fs}_{m}" for tf, fs, m in _inputs(strategy, timeframes)]
    lags = strategy.model.features.lookback_periods
    return (*base, *(f"{name}_lag_{k}" for k in range(1, lags + 1) for name in base))


def visible_positions(
    higher_index: pd.DatetimeIndex, higher_tf: str, base_index: pd.DatetimeIndex, base_tf: str
) -> np.ndarray:
    """For each base row, the position of the latest higher bar closed by the row's close
    (-1 when none has closed yet)."""
    higher_close = higher_index.as_unit("ns").asi8 + TIMEFRAME_SECONDS[higher_tf] * _NS_PER_S
    base_close = base_index.as_unit("ns").asi8 + TIMEFRAME_SECONDS[base_tf] * _NS_PER_S
    return np.searchsorted(higher_close, base_close, side="right") - 1


def engineer_features(
    memberships_by_tf: Mapping[str, Memberships | pd.DataFrame],
    strategy: StrategyConfig,
    base_timeframe: str,
) -> FeatureMatrix:
    """The feature matrix on the base timeframe's rows (warm-up rows still NaN; the first
    `lookback_periods` bars, which have no lags, are not rows).

    `memberships_by_tf` maps each loaded timeframe, in run order, to its memberships (from
    `compute_memberships`, or a frame with columns `{fuzzy_set}_{membership}`); that order is
    the order of `timeframes: all`.
    """
    if base_timeframe not in memberships_by_tf:
        raise FeatureError(f"base timeframe {base_timeframe} has no memberships")
    by_tf = {
        tf: m if isinstance(m, Memberships) else Memberships.from_frame(m)
        for tf, m in memberships_by_tf.items()
    }
    timeframes = list(by_tf)
    inputs = _inputs(strategy, timeframes)
    names = feature_names(strategy, timeframes)
    lags = strategy.model.features.lookback_periods
    base = by_tf[base_timeframe]
    base_index = pd.DatetimeIndex(base.index)
    n = len(base_index)
    for tf, fs, m in inputs:
        if f"{fs}_{m}" not in by_tf[tf].names:
            raise FeatureError(f"{tf} memberships lack column {f'{fs}_{m}'!r}")

    wanted = tuple(f"{fs}_{m}" for _, fs, m in inputs)
    if all(tf == base_timeframe for tf, _, _ in inputs) and base.names == wanted:
        # The base memberships already are the unlagged features, in order: use them as is.
        columns, defined = base.columns, base.bar_defined
    else:
        columns = np.empty((len(inputs), n), dtype=np.float32)
        seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (tf, fs, m) in enumerate(inputs):
            source = by_tf[tf][f"{fs}_{m}"]
            if tf == base_timeframe:
                columns[k] = source
                continue
            if tf not in seen:
                pos = visible_positions(
                    pd.DatetimeIndex(by_tf[tf].index), tf, base_index, base_timeframe
                )
                seen[tf] = (np.maximum(pos, 0), pos < 0)
            take, unseen = seen[tf]
            if len(source):
                np.take(source, take, out=columns[k])
            columns[k, unseen] = np.nan
        defined = defined_bars(columns)
    if n < lags:  # no bar has all its lags
        columns = np.full((len(inputs), lags), np.nan, dtype=np.float32)
        defined = np.zeros(lags, dtype=np.bool_)
    return FeatureMatrix(columns, names, base_index[min(lags, n) :], lags, defined)
