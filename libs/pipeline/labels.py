"""Training targets on the base timeframe: 0 = BUY, 1 = HOLD, 2 = SELL (or a float return).

- zigzag: segment labels. A ZigZag over `close` with a fractional threshold finds pivots; every
  bar strictly between two pivots takes the direction of the NEXT pivot (BUY if it is higher,
  SELL if lower); pivots and the bars after the last pivot are HOLD. Uses the future: targets only.
- triple_barrier: from each bar, profit-take and stop-loss barriers at `pt`/`sl` multiples of
  the bar's volatility, a vertical barrier after `max_holding_period` bars.
- forward_return: (close[t+h] - close[t]) / close[t], a regression target.

`generate_labels` returns a float64 Series on the price index, NaN where the target is
undefined (the last H bars of triple-barrier/forward-return, volatility warm-up); class labels
are the integral values 0.0/1.0/2.0. `dataset.align_features_and_labels` drops the NaN rows and
casts (int64 classes, float32 regression).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from libs.pipeline.config import (
    ForwardReturnLabels,
    LabelsConfig,
    TripleBarrierLabels,
    ZigZagLabels,
)

BUY, HOLD, SELL = 0, 1, 2
CLASS_NAMES: tuple[str, ...] = ("BUY", "HOLD", "SELL")

# First search window of the zigzag leg scan; it adapts to the observed leg length.
_MIN_WINDOW = 64
# Below this mean leg length (bars) the scan switches to a plain loop (measured crossover ~70).
_SHORT_LEG = 48


def num_outputs(cfg: LabelsConfig) -> int:
    """Model outputs for this target: 3 classes, or 1 regression value."""
    return 1 if is_regression(cfg) else 3


def is_regression(cfg: LabelsConfig) -> bool:
    return isinstance(cfg, ForwardReturnLabels)


def generate_labels(prices: pd.DataFrame, cfg: LabelsConfig) -> pd.Series:
    """Labels for every bar of `prices` (float64, NaN where undefined), named `label`."""
    close = np.ascontiguousarray(prices["close"].to_numpy(dtype=np.float64))
    if np.isnan(close).any():
        raise ValueError("close prices contain NaN; load them through data.load_price_data")
    if isinstance(cfg, ZigZagLabels):
        values = zigzag_labels(close, cfg.zigzag_threshold).astype(np.float64)
    elif isinstance(cfg, TripleBarrierLabels):
        high = prices["high"].to_numpy(dtype=np.float64)
        low = prices["low"].to_numpy(dtype=np.float64)
        values = triple_barrier_labels(close, high, low, cfg)
    elif isinstance(cfg, ForwardReturnLabels):
        values = forward_returns(close, cfg.horizon)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown labels config {type(cfg).__name__}")
    return pd.Series(values, index=prices.index, name="label", copy=False)


# --- zigzag ------------------------------------------------------------------------------------


def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the ZigZag pivots of `close` (a move of `threshold`, e.g. 0.03 = 3 %).

    Bar 0 is a pivot; the first move of at least the threshold from it fixes the direction;
    while the trend extends, the latest extreme replaces the previous one (ties keep the
    earlier bar); a counter-move of at least the threshold from the current extreme confirms
    that extreme as a pivot and starts a new leg. The last leg's extreme is included too: the
    move to it is already at least the threshold, so more data could only push it further.

    The scan goes leg by leg, each leg found with vectorised running max/min over a window that
    grows until the reversal is in it: O(n) work, and Python overhead per leg, not per bar. When
    legs turn out short (a small threshold), it finishes bar by bar, which is then faster.
    """
    n = len(close)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not close.min() > 0:
        raise ValueError("zigzag needs positive prices")
    up_factor, down_factor = 1.0 + threshold, 1.0 - threshold
    pivots = [0]
    window = _MIN_WINDOW

    # The first move: leave the band [c0 (1 - t), c0 (1 + t)].
    c0 = close[0]
    first, rising = -1, True
    pos = 1
    while pos < n:
        seg = close[pos : pos + window]
        hit = (seg >= c0 * up_factor) | (seg <= c0 * down_factor)
        k = int(hit.argmax())
        if hit[k]:
            first, rising = pos + k, bool(seg[k] > c0)
            break
        pos += len(seg)
        window *= 2
    if first < 0:
        return np.asarray(pivots, dtype=np.int64)

    extreme = first  # the current leg's extreme (a high when rising, a low when falling)
    scanned, legs = 0, 0
    window = _MIN_WINDOW
    max_acc, min_acc = np.maximum.accumulate, np.minimum.accumulate
    while True:
        # ndarray methods and in-place ops: this loop runs once per leg, so call overhead counts.
        seg = close[extreme : extreme + window]
        if rising:
            run = max_acc(seg)
            run *= down_factor
            hit = seg <= run
        else:
            run = min_acc(seg)
            run *= up_factor
            hit = seg >= run
        k = int(hit.argmax())
        if not hit[k]:
            # No reversal in this window: restart from the extreme so far (the only state that
            # matters) with a larger window, or stop at the end of the data.
            best = int(seg.argmax() if rising else seg.argmin())
            if extreme + len(seg) >= n:
                pivots.append(extreme + best)
                break
            extreme += best
            window *= 2
            continue
        head = seg[:k]
        scanned += extreme + k - pivots[-1]
        pivots.append(extreme + int(head.argmax() if rising else head.argmin()))
        legs += 1
        # The bar that reversed is the new leg's extreme so far (nothing between the pivot and
        # it went as far), so the next scan starts there. A window of about half the mean leg
        # measured fastest: a second, doubled scan is cheaper than scanning long tails each time.
        extreme, rising = extreme + k, not rising
        if legs >= 8 and scanned < _SHORT_LEG * legs:
            # Short legs: a few NumPy calls per leg cost more than a plain loop over the bars.
            _finish_by_bars(close, extreme, rising, threshold, pivots)
            break
        window = max(_MIN_WINDOW, scanned // (2 * legs))
    return np.asarray(pivots, dtype=np.int64)


def _finish_by_bars(
    close: np.ndarray, extreme: int, rising: bool, threshold: float, pivots: list[int]
) -> None:
    """The same state machine bar by bar over a Python list (~0.1 us a bar), from `extreme`."""
    up_factor, down_factor = 1.0 + threshold, 1.0 - threshold
    values = close[extreme:].tolist()
    best, at = values[0], 0
    for j, value in enumerate(values):
        if rising:
            if value > best:
                best, at = value, j
            elif value <= best * down_factor:
                pivots.append(extreme + at)
                best, at, rising = value, j, False
        elif value < best:
            best, at = value, j
        elif value >= best * up_factor:
            pivots.append(extreme + at)
            best, at, rising = value, j, True
    pivots.append(extreme + at)


def zigzag_labels(close: np.ndarray, threshold: float) -> np.ndarray:
    """Segment labels (int8): bars between pivots take the next pivot's direction."""
    n = len(close)
    labels = np.full(n, HOLD, dtype=np.int8)
    pivots = zigzag_pivots(close, threshold)
    if len(pivots) < 2:
        return labels
    directions = np.where(close[pivots[1:]] > close[pivots[:-1]], BUY, SELL).astype(np.int8)
    labels[pivots[0] : pivots[-1]] = np.repeat(directions, np.diff(pivots))
    labels[pivots] = HOLD
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
