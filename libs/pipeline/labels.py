"""Training targets on the base timeframe: 0 = BUY, 1 = HOLD, 2 = SELL (or a float return).

- zigzag: segment labels. A ZigZag over `close` with a fractional threshold finds pivots; every
  bar strictly between two pivots takes the direction of the NEXT pivot (BUY if it is higher,
  SELL if lower); pivots are HOLD. A pivot is known once the price has moved the threshold away
  from it, so the last leg's running extreme, and the bars after it, have no label yet.
- triple_barrier: from each bar, profit-take and stop-loss barriers at `pt`/`sl` multiples of
  the bar's volatility, a vertical barrier after `max_holding_period` bars.
- forward_return: (close[t+h] - close[t]) / close[t], a regression target.

`generate_labels` returns a Series on the price index: float64 with NaN where the target is
undefined (zigzag's unconfirmed last leg, the last H bars of triple-barrier/forward-return,
volatility warm-up; classes as the values 0.0/1.0/2.0). `dataset.align_features_and_labels`
drops the undefined rows and casts (int8 classes, float32 regression).

Every label uses the future, so each source also says when its label becomes known:
`label_known_at` gives, per bar, the last bar whose prices the label reads (zigzag: the first bar
at which the label can no longer change: the leg's start is confirmed and a later bar extends
the leg past it, or, for a pivot, the bar that confirms it; triple barrier:
t + max_holding_period; forward return: t + horizon), -1 where there is no label yet. The
split purges rows whose label is known only after their slice ends (libs/pipeline/splits.py),
and the causal baseline predicts from the last label already known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from libs.pipeline import kernels
from libs.pipeline.strategy import (
    ForwardReturnLabels,
    LabelsConfig,
    TripleBarrierLabels,
    ZigZagLabels,
)

BUY, HOLD, SELL = 0, 1, 2
CLASS_NAMES: tuple[str, ...] = ("BUY", "HOLD", "SELL")


def num_outputs(cfg: LabelsConfig) -> int:
    """Model outputs for this target: 3 classes, or 1 regression value."""
    return 1 if is_regression(cfg) else 3


def is_regression(cfg: LabelsConfig) -> bool:
    return isinstance(cfg, ForwardReturnLabels)


def generate_labels(prices: pd.DataFrame, cfg: LabelsConfig) -> pd.Series:
    """Labels for every bar of `prices`, named `label` (float64, NaN where undefined)."""
    close = np.ascontiguousarray(prices["close"].to_numpy(dtype=np.float64))
    values: np.ndarray
    if isinstance(cfg, ZigZagLabels):
        values = zigzag_labels(close, cfg.zigzag_threshold).astype(np.float64)
        values[label_known_at(prices, cfg) < 0] = np.nan
    elif isinstance(cfg, TripleBarrierLabels):
        close = _positive_close(close)
        high = prices["high"].to_numpy(dtype=np.float64)
        low = prices["low"].to_numpy(dtype=np.float64)
        values = triple_barrier_labels(close, high, low, cfg)
    elif isinstance(cfg, ForwardReturnLabels):
        values = forward_returns(_positive_close(close), cfg.horizon)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown labels config {type(cfg).__name__}")
    return pd.Series(values, index=prices.index, name="label", copy=False)


def label_known_at(prices: pd.DataFrame, cfg: LabelsConfig) -> np.ndarray:
    """Per bar, the index of the last bar whose prices its label reads (int64; -1: no label)."""
    n = len(prices)
    if isinstance(cfg, ZigZagLabels):
        close = np.ascontiguousarray(prices["close"].to_numpy(dtype=np.float64))
        pivots, confirmed = zigzag_confirmations(close, cfg.zigzag_threshold)
        known = np.empty(n, dtype=np.int64)
        kernels.zigzag_known_into(close, pivots, confirmed, known)
        return known
    horizon = cfg.max_holding_period if isinstance(cfg, TripleBarrierLabels) else cfg.horizon
    known = np.arange(n, dtype=np.int64) + horizon
    known[known >= n] = -1
    if isinstance(cfg, TripleBarrierLabels):  # no label while the volatility warms up
        close, high, low = (prices[c].to_numpy(dtype=np.float64) for c in ("close", "high", "low"))
        known[np.isnan(volatility(close, high, low, cfg.vol_span, cfg.vol_method))] = -1
    return known


def _positive_close(close: np.ndarray) -> np.ndarray:
    close = np.ascontiguousarray(close, dtype=np.float64)
    if len(close) and not close.min() > 0:  # NaN fails this too
        bad = int(np.flatnonzero(~(close > 0))[0])
        raise ValueError(
            f"close prices must be positive numbers: row {bad} is {close[bad]} "
            "(load them through data.load_price_data)"
        )
    return close


# --- zigzag ------------------------------------------------------------------------------------


def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the ZigZag pivots of `close` (a move of `threshold`, e.g. 0.03 = 3 %).

    Bar 0 is a pivot; the first move of at least the threshold from it fixes the direction;
    while the trend extends, the latest extreme replaces the previous one (ties keep the
    earlier bar); a counter-move of at least the threshold from the current extreme confirms
    that extreme as a pivot and starts a new leg. The last leg's extreme is included too: the
    move to it is already at least the threshold, so more data could only push it further.
    """
    return zigzag_confirmations(close, threshold)[0]


def zigzag_confirmations(close: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The pivots and, for each, the bar that confirmed it (-1: the last leg's extreme, which
    more data could still move)."""
    close = np.ascontiguousarray(close, dtype=np.float64)
    pivots, confirmed = kernels.zigzag_pivots(close, threshold)
    # A price <= 0 or NaN always ends up a pivot (the scan takes it for a reversal or a new
    # low), so checking the pivots checks every price, without another pass over them.
    if not (close[pivots] > 0).all():
        _positive_close(close)  # raises, naming the first bad row
    return pivots, confirmed


def zigzag_labels(close: np.ndarray, threshold: float) -> np.ndarray:
    """Segment labels (int8): bars between pivots take the next pivot's direction."""
    close = np.ascontiguousarray(close, dtype=np.float64)
    labels = np.empty(len(close), dtype=np.int8)
    kernels.segment_labels_into(close, zigzag_pivots(close, threshold), BUY, HOLD, SELL, labels)
    return labels


# --- triple barrier ---------------------------------------------------------------------------


def volatility(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, span: int, method: str
) -> np.ndarray:
    """Per-bar volatility as a fraction of price: EWMA of (high - low) / close (`atr`) or the
    EWMA standard deviation of log returns (`close`); NaN until `span` bars are in."""
    if method == "atr":
        series = pd.Series((high - low) / close)
        vol = series.ewm(span=span, adjust=False, min_periods=span).mean()
    else:
        returns = pd.Series(np.log(close)).diff()
        vol = returns.ewm(span=span, adjust=False, min_periods=span).std()
    return vol.to_numpy(dtype=np.float64)


def triple_barrier_labels(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, cfg: TripleBarrierLabels
) -> np.ndarray:
    """BUY if the upper barrier is touched first, SELL if the lower one, else decided at expiry.

    Touches are checked on each later bar's high/low; both barriers in one bar is decided by
    that bar's close against the entry. At expiry the label is HOLD unless the return reached
    half a volatility scaled to the horizon (0.5 * vol * sqrt(H)), then its sign. The last H
    bars (no full horizon) and the volatility warm-up are NaN.
    """
    n, horizon = len(close), cfg.max_holding_period
    vol = volatility(close, high, low, cfg.vol_span, cfg.vol_method)
    labels = np.full(n, np.nan)
    m = n - horizon  # bars with a full horizon ahead
    if m <= 0:
        return labels
    entry, v = close[:m], vol[:m]
    upper = entry * (1.0 + cfg.pt_multiplier * v)
    lower = entry * (1.0 - cfg.sl_multiplier * v)
    result = np.full(m, np.nan)
    open_ = ~np.isnan(v)  # still waiting for a touch
    for k in range(1, horizon + 1):
        if not open_.any():
            break
        hi, lo, cl = high[k : k + m], low[k : k + m], close[k : k + m]
        up, down = hi >= upper, lo <= lower
        both = open_ & up & down
        result[both] = np.where(cl[both] >= entry[both], BUY, SELL)
        only_up, only_down = open_ & up & ~down, open_ & down & ~up
        result[only_up] = BUY
        result[only_down] = SELL
        open_ &= ~(up | down)
    ret = close[horizon : horizon + m] / entry - 1.0
    expiry = np.where(np.abs(ret) >= 0.5 * v * np.sqrt(horizon), np.where(ret > 0, BUY, SELL), HOLD)
    result[open_] = expiry[open_]
    labels[:m] = result
    return labels


# --- forward return -------------------------------------------------------------------------


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """(close[t+h] - close[t]) / close[t]; NaN for the last h bars."""
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out
