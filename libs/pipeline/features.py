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

from libs.pipeline.config import TIMEFRAME_SECONDS, StrategyConfig

_NS_PER_S = 1_000_000_000


class FeatureError(ValueError):
    """Raised when the memberships handed in cannot make the strategy's features."""


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """values[i, j] is feature names[j] on the base bar stamped index[i].

    `values` is float32 and column-major (cheap to build column by column); the dataset copies
    the kept rows to a row-major array once when it splits.
    """

    values: np.ndarray
    names: tuple[str, ...]
    index: pd.DatetimeIndex

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.dtype != np.float32:
            raise FeatureError(
                f"values must be 2-D float32, got {self.values.dtype} {self.values.shape}"
            )
        if self.values.shape != (len(self.index), len(self.names)):
            raise FeatureError(
                f"shape {self.values.shape} does not match {len(self.index)} rows x "
                f"{len(self.names)} names"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def select(self, rows: slice | np.ndarray) -> FeatureMatrix:
        """A row subset (a slice is a view, a mask or index array copies)."""
        return FeatureMatrix(self.values[rows], self.names, self.index[rows])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=self.index, columns=list(self.names))


def _inputs(strategy: StrategyConfig, timeframes: Sequence[str]) -> list[tuple[str, str, str]]:
    """(timeframe, fuzzy_set, membership) for every unlagged feature, in feature order."""
    out = []
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
    memberships_by_tf: Mapping[str, pd.DataFrame],
    strategy: StrategyConfig,
    base_timeframe: str,
) -> FeatureMatrix:
    """The feature matrix on the base timeframe's rows (warm-up rows still NaN).

    `memberships_by_tf` maps each loaded timeframe, in run order, to its membership frame
    (columns `{fuzzy_set}_{membership}`); that order is the order of `timeframes: all`.
    """
    if base_timeframe not in memberships_by_tf:
        raise FeatureError(f"base timeframe {base_timeframe} has no memberships")
    timeframes = list(memberships_by_tf)
    inputs = _inputs(strategy, timeframes)
    names = feature_names(strategy, timeframes)
    base_index = pd.DatetimeIndex(memberships_by_tf[base_timeframe].index)
    n, width = len(base_index), len(inputs)
    values = np.empty((n, len(names)), dtype=np.float32, order="F")

    positions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tf in timeframes:
        if tf == base_timeframe:
            continue
        frame = memberships_by_tf[tf]
        pos = visible_positions(pd.DatetimeIndex(frame.index), tf, base_index, base_timeframe)
        positions[tf] = (np.maximum(pos, 0), pos < 0)

    for col, (tf, fs, m) in enumerate(inputs):
        frame = memberships_by_tf[tf]
        column = f"{fs}_{m}"
        if column not in frame.columns:
            raise FeatureError(f"{tf} memberships lack column {column!r}")
        source = frame[column].to_numpy(dtype=np.float32)
        if tf == base_timeframe:
            values[:, col] = source
        elif len(source) == 0:
            values[:, col] = np.nan
        else:
            take, unseen = positions[tf]
            np.take(source, take, out=values[:, col])
            values[unseen, col] = np.nan

    for k in range(1, strategy.model.features.lookback_periods + 1):
        block = slice(k * width, (k + 1) * width)
        values[k:, block] = values[: n - k, :width]
        values[: min(k, n), block] = np.nan
    return FeatureMatrix(values, names, base_index)
