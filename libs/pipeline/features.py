"""The ordered feature matrix: fuzzy memberships and raw indicator columns per timeframe,
aligned on base-timeframe rows.

Order (saved with the model, enforced at load): `nn_inputs` order x timeframe x membership as
written, names `{tf}_{fuzzy_set}_{membership}` for a fuzzy set and `{tf}_{raw_indicator}`
(`1h_macd_12_26_9.histogram`) for a raw indicator (unscaled here: the model's InputScaler,
libs/pipeline/normalization.py, normalizes it); then, for k in 1..lookback_periods, every one of
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
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from libs.pipeline import kernels
from libs.pipeline.data import ns_stamps
from libs.pipeline.fuzzy import Memberships, defined_bars
from libs.pipeline.strategy import StrategyConfig, lags_of
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


class InputColumn(NamedTuple):
    """One unlagged feature: column `source` of timeframe `timeframe`'s memberships (`kind`
    fuzzy, `{fuzzy_set}_{membership}`) or indicators (`kind` raw, the compute_indicators column
    `id` or `id.output`), named `{timeframe}_{source}`, normalized by `normalization`."""

    timeframe: str
    kind: Literal["fuzzy", "raw"]
    source: str
    normalization: str

    @property
    def name(self) -> str:
        return f"{self.timeframe}_{self.source}"


def input_columns(strategy: StrategyConfig, timeframes: Sequence[str]) -> list[InputColumn]:
    """Every unlagged feature, in feature order: nn_inputs order x timeframe x membership."""
    out: list[InputColumn] = []
    for i, nn in enumerate(strategy.nn_inputs):
        tfs = list(timeframes) if nn.timeframes == "all" else nn.timeframes
        absent = [tf for tf in tfs if tf not in timeframes]
        if absent:
            raise FeatureError(
                f"nn_inputs[{i}] ({nn.fuzzy_set or nn.raw_indicator}) needs timeframe(s) "
                f"{', '.join(absent)}, which this run does not load ({', '.join(timeframes)})"
            )
        if nn.raw_indicator is not None:
            method = nn.resolved_normalization
            out.extend(InputColumn(tf, "raw", nn.raw_indicator, method) for tf in tfs)
            continue
        assert nn.fuzzy_set is not None  # NNInputConfig holds exactly one of the two
        memberships = strategy.fuzzy_sets[nn.fuzzy_set].memberships
        out.extend(
            InputColumn(tf, "fuzzy", f"{nn.fuzzy_set}_{m}", "none")
            for tf in tfs
            for m in memberships
        )
    return out


def needs_indicators(strategy: StrategyConfig) -> bool:
    """True when some input reads an indicator column itself (raw_indicator)."""
    return any(nn.raw_indicator is not None for nn in strategy.nn_inputs)


def feature_names(strategy: StrategyConfig, timeframes: Sequence[str]) -> tuple[str, ...]:
    """The ordered names `engineer_features` produces for these timeframes, without computing."""
    base = [column.name for column in input_columns(strategy, timeframes)]
    lags = lags_of(strategy.model)
    return (*base, *(f"{name}_lag_{k}" for k in range(1, lags + 1) for name in base))


def visible_positions(
    higher_index: pd.DatetimeIndex, higher_tf: str, base_index: pd.DatetimeIndex, base_tf: str
) -> np.ndarray:
    """For each base row, the position of the latest higher bar closed by the row's close
    (-1 when none has closed yet)."""
    higher_close = ns_stamps(higher_index) + TIMEFRAME_SECONDS[higher_tf] * _NS_PER_S
    base_close = ns_stamps(base_index) + TIMEFRAME_SECONDS[base_tf] * _NS_PER_S
    return np.searchsorted(higher_close, base_close, side="right") - 1


def engineer_features(
    memberships_by_tf: Mapping[str, Memberships | pd.DataFrame],
    strategy: StrategyConfig,
    base_timeframe: str,
    indicators_by_tf: Mapping[str, pd.DataFrame] | None = None,
) -> FeatureMatrix:
    """The feature matrix on the base timeframe's rows (warm-up rows still NaN; the first
    `lookback_periods` bars, which have no lags, are not rows).

    `memberships_by_tf` maps each loaded timeframe, in run order, to its memberships (from
    `compute_memberships`, or a frame with columns `{fuzzy_set}_{membership}`); that order is
    the order of `timeframes: all`. `indicators_by_tf` (from `compute_indicators`, same
    timeframes) is read only by raw_indicator inputs, as float32.
    """
    if base_timeframe not in memberships_by_tf:
        raise FeatureError(f"base timeframe {base_timeframe} has no memberships")
    by_tf = {
        tf: m if isinstance(m, Memberships) else Memberships.from_frame(m)
        for tf, m in memberships_by_tf.items()
    }
    timeframes = list(by_tf)
    inputs = input_columns(strategy, timeframes)
    names = feature_names(strategy, timeframes)
    lags = lags_of(strategy.model)
    base = by_tf[base_timeframe]
    base_index = pd.DatetimeIndex(base.index)
    n = len(base_index)
    sources = {column: _source(column, by_tf, indicators_by_tf) for column in inputs}

    wanted = tuple(column.source for column in inputs)
    fuzzy_on_base = all(c.kind == "fuzzy" and c.timeframe == base_timeframe for c in inputs)
    if fuzzy_on_base and base.names == wanted:
        # The base memberships already are the unlagged features, in order: use them as is.
        columns, defined = base.columns, base.bar_defined
    else:
        columns = np.empty((len(inputs), n), dtype=np.float32)
        seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, column in enumerate(inputs):
            tf, source = column.timeframe, sources[column]
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


def _source(
    column: InputColumn,
    memberships: Mapping[str, Memberships],
    indicators: Mapping[str, pd.DataFrame] | None,
) -> np.ndarray:
    """The values of one unlagged feature on its own timeframe's bars (float32)."""
    tf = column.timeframe
    if column.kind == "fuzzy":
        if column.source not in memberships[tf].names:
            raise FeatureError(f"{tf} memberships lack column {column.source!r}")
        return memberships[tf][column.source]
    frame = None if indicators is None else indicators.get(tf)
    if frame is None:
        raise FeatureError(f"raw input {column.name} needs the {tf} indicators; none given")
    if column.source not in frame.columns:
        raise FeatureError(f"{tf} indicators lack column {column.source!r}")
    if not frame.index.equals(memberships[tf].index):
        raise FeatureError(f"{tf} indicators and memberships are on different bars")
    return frame[column.source].to_numpy(dtype=np.float32)
