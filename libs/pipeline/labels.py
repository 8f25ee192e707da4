"""Training targets on the base timeframe: 0 = BUY, 1 = HOLD, 2 = SELL (or a float return, or
one of 4 regimes).

- zigzag: segment labels. A ZigZag over `close` with a fractional threshold finds pivots; every
  bar strictly between two pivots takes the direction of the NEXT pivot (BUY if it is higher,
  SELL if lower); pivots are HOLD. A pivot is known once the price has moved the threshold away
  from it, so the last leg's running extreme, and the bars after it, have no label yet.
- triple_barrier: from each bar, profit-take and stop-loss barriers at `pt`/`sl` multiples of
  the bar's volatility, a vertical barrier after `max_holding_period` bars.
  With `cusum_threshold`/`cusum_multiplier` only the bars a CUSUM event filter selects get a
  label; `compute_weights` gives each label López de Prado's uniqueness weight
  (`sample_weights`).
- forward_return: (close[t+h] - close[t]) / close[t], a regression target.
- context: the forward return over `horizon` bars against two thresholds: BUY (bullish),
  HOLD (neutral), SELL (bearish). The reference platform numbers these 0 bullish, 1 bearish,
  2 neutral; here they take OUR signal ids, so the backtest and the baselines read a context
  model's predictions as the signals they are.
- regime: 4 classes that are NOT trade signals (REGIME_NAMES): trending up/down, ranging,
  volatile, from a macro and a micro zigzag scaled by ATR (see `regime_labels`). The
  scorecard does not backtest them (`is_signal`).

`generate_labels` returns a Series on the price index: float64 with NaN where the target is
undefined (zigzag's unconfirmed last leg, the last H bars of triple-barrier/forward-return,
volatility warm-up; classes as the values 0.0/1.0/2.0). `dataset.align_features_and_labels`
drops the undefined rows and casts (int8 classes, float32 regression).

Every label uses the future, so each source also says when its label becomes known:
`label_known_at` gives, per bar, the last bar whose prices the label reads (zigzag: the first bar
at which the label can no longer change: the leg's start is confirmed and a later bar extends
the leg past it, or, for a pivot, the bar that confirms it; triple barrier:
t + max_holding_period; forward return and context: t + horizon; regime: see
`regime_outcomes`), -1 where there is no label yet. The
split purges rows whose label is known only after their slice ends (libs/pipeline/splits.py),
and the causal baseline predicts from the last label already known.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import talib

from libs.pipeline import kernels
from libs.pipeline.strategy import (
    ContextLabels,
    ForwardReturnLabels,
    LabelsConfig,
    RegimeLabels,
    TripleBarrierLabels,
    ZigZagLabels,
)

BUY, HOLD, SELL = 0, 1, 2
CLASS_NAMES: tuple[str, ...] = ("BUY", "HOLD", "SELL")
TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE = 0, 1, 2, 3
REGIME_NAMES: tuple[str, ...] = ("TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE")


def num_outputs(cfg: LabelsConfig) -> int:
    """Model outputs for this target: 1 regression value, or one per class."""
    return 1 if is_regression(cfg) else len(class_names(cfg))


def is_regression(cfg: LabelsConfig) -> bool:
    return isinstance(cfg, ForwardReturnLabels)


def is_signal(cfg: LabelsConfig) -> bool:
    """Whether the targets are trade signals (BUY/HOLD/SELL, or a return) the backtest can
    trade; regime classes describe the market and are not."""
    return not isinstance(cfg, RegimeLabels)


def class_names(cfg: LabelsConfig) -> tuple[str, ...]:
    """The names of the class ids, in id order (none for a regression)."""
    if is_regression(cfg):
        return ()
    return REGIME_NAMES if isinstance(cfg, RegimeLabels) else CLASS_NAMES


class LabelOutcomes(NamedTuple):
    """Every bar's label and when it is known, from one pass over the prices."""

    values: np.ndarray  # float64, NaN where undefined (`generate_labels`)
    # int64, the last bar the label reads, -1: no label (`label_known_at`); or that bar's
    # time (`label_outcomes`' bar_times)
    known_at: np.ndarray


def label_outcomes(
    prices: pd.DataFrame, cfg: LabelsConfig, *, bar_times: np.ndarray | None = None,
    never: int = -1,
) -> LabelOutcomes:
    """The labels and when each is known, computed together: both come from the same scan
    (zigzag pivots, barriers, event filter), so a job runs it once. With `bar_times` (int64, one
    per bar), `known_at` holds the time of that last bar instead, and `never` where there is no
    label: the zigzag scan writes the times in its own pass, the others convert in place."""
    n = len(prices)
    if bar_times is not None and (bar_times.shape != (n,) or bar_times.dtype != np.int64):
        # the kernels index it unchecked
        raise ValueError(f"bar_times: {bar_times.dtype} {bar_times.shape} for {n} bars; "
                         "one int64 per bar expected")
    close = np.ascontiguousarray(prices["close"].to_numpy(dtype=np.float64))
    if isinstance(cfg, ZigZagLabels):
        values, known = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.int64)
        times = np.arange(n, dtype=np.int64) if bar_times is None else bar_times
        pivots, _ = kernels.zigzag_outcomes(close, cfg.zigzag_threshold, BUY, HOLD, SELL, times,
                                            never, values, known)
        _check_pivot_prices(close, pivots)
        return LabelOutcomes(values, known)
    outcomes = _bar_outcomes(prices, close, cfg)
    if bar_times is not None:
        kernels.take_or_into(outcomes.known_at, bar_times, never, outcomes.known_at)
    return outcomes


def _bar_outcomes(prices: pd.DataFrame, close: np.ndarray, cfg: LabelsConfig) -> LabelOutcomes:
    """`label_outcomes` of the sources other than zigzag, `known_at` as bars (-1: none)."""
    n = len(prices)
    if isinstance(cfg, RegimeLabels):
        return LabelOutcomes(*regime_outcomes(prices, cfg))
    if isinstance(cfg, TripleBarrierLabels):
        close = _positive_close(close)
        high = prices["high"].to_numpy(dtype=np.float64)
        low = prices["low"].to_numpy(dtype=np.float64)
        values = triple_barrier_labels(close, high, low, cfg)
        events = cusum_events(close, cfg)
        if events is not None:  # bars the event filter skips have no label
            values[~events] = np.nan
    elif isinstance(cfg, ForwardReturnLabels):
        values = forward_returns(_positive_close(close), cfg.horizon)
    elif isinstance(cfg, ContextLabels):
        values = context_labels(_positive_close(close), cfg)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown labels config {type(cfg).__name__}")
    horizon = cfg.max_holding_period if isinstance(cfg, TripleBarrierLabels) else cfg.horizon
    known = np.arange(n, dtype=np.int64) + horizon
    # A bar without a label is never known: the last bars (no full horizon), and for triple
    # barrier the volatility warm-up and the bars the event filter skips.
    known[(known >= n) | np.isnan(values)] = -1
    return LabelOutcomes(values, known)


def generate_labels(prices: pd.DataFrame, cfg: LabelsConfig) -> pd.Series:
    """Labels for every bar of `prices`, named `label` (float64, NaN where undefined)."""
    values = label_outcomes(prices, cfg).values
    return pd.Series(values, index=prices.index, name="label", copy=False)


def label_known_at(prices: pd.DataFrame, cfg: LabelsConfig) -> np.ndarray:
    """Per bar, the index of the last bar whose prices its label reads (int64; -1: no label)."""
    return label_outcomes(prices, cfg).known_at


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
    _check_pivot_prices(close, pivots)
    return pivots, confirmed


def _check_pivot_prices(close: np.ndarray, pivots: np.ndarray) -> None:
    # A price <= 0 or NaN always ends up a pivot (the scan takes it for a reversal or a new
    # low), so checking the pivots checks every price, without another pass over them.
    if not (close[pivots] > 0).all():
        _positive_close(close)  # raises, naming the first bad row


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
    bars (no full horizon) and the volatility warm-up are NaN. (Every bar: the CUSUM filter is
    applied by `generate_labels`.)
    """
    return triple_barrier_outcomes(close, high, low, cfg)[0]


def triple_barrier_outcomes(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, cfg: TripleBarrierLabels
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, ends): `triple_barrier_labels` and, per bar, the bar its label was decided on
    (the first touch, or t + H at expiry; -1 where there is no label)."""
    n, horizon = len(close), cfg.max_holding_period
    vol = volatility(close, high, low, cfg.vol_span, cfg.vol_method)
    labels = np.full(n, np.nan)
    ends = np.full(n, -1, dtype=np.int64)
    m = n - horizon  # bars with a full horizon ahead
    if m <= 0:
        return labels, ends
    entry, v = close[:m], vol[:m]
    upper = entry * (1.0 + cfg.pt_multiplier * v)
    lower = entry * (1.0 - cfg.sl_multiplier * v)
    result = np.full(m, np.nan)
    offset = np.full(m, horizon, dtype=np.int64)  # bars from entry to the decision
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
        offset[open_ & (up | down)] = k
        open_ &= ~(up | down)
    ret = close[horizon : horizon + m] / entry - 1.0
    expiry = np.where(np.abs(ret) >= 0.5 * v * np.sqrt(horizon), np.where(ret > 0, BUY, SELL), HOLD)
    result[open_] = expiry[open_]
    labels[:m] = result
    labelled = ~np.isnan(result)
    ends[:m][labelled] = (np.arange(m) + offset)[labelled]
    return labels, ends


def cusum_events(close: np.ndarray, cfg: TripleBarrierLabels) -> np.ndarray | None:
    """The bars the CUSUM event filter selects (bool per bar), or None when it is off.

    The reference platform's rule: on log returns r, s+ = max(0, s+ + r - h) and
    s- = min(0, s- + r + h); a bar where s+ > h or s- < -h is an event and that sum restarts.
    h is `cusum_threshold`, or `cusum_multiplier` times the EWMA volatility of log returns
    (span `vol_span`). The reference takes one h for the whole series, from the mean of that
    volatility over all bars, which reads the future; here h is the volatility known at the
    bar before each return, so whether a bar is selected reads no later price than the bar,
    and bars before the volatility has warmed up are never selected.
    """
    if cfg.cusum_threshold is None and cfg.cusum_multiplier is None:
        return None
    close = _positive_close(close)
    log_returns = np.diff(np.log(close))
    if cfg.cusum_threshold is not None:
        thresholds = np.full(len(log_returns), cfg.cusum_threshold)
    else:
        assert cfg.cusum_multiplier is not None
        vol = volatility(close, close, close, cfg.vol_span, "close")
        thresholds = np.ascontiguousarray(cfg.cusum_multiplier * vol[:-1])
    events = np.zeros(len(close), dtype=np.bool_)
    if len(log_returns):
        kernels.cusum_events_into(np.ascontiguousarray(log_returns), thresholds, events)
    return events


def sample_weights(prices: pd.DataFrame, cfg: LabelsConfig) -> np.ndarray | None:
    """López de Prado's uniqueness weights (float64 per bar, NaN where there is no label), or
    None when the strategy asks for none (`compute_weights` on triple_barrier labels).

    Label i spans bars [i, t1_i], t1_i the bar it was decided on (first touch or expiry);
    c_t counts the labels spanning bar t; weight_i = the mean of 1 / c_t over its span. The
    weights are scaled to mean 1 over the labelled bars, so a weighted loss keeps its scale.
    Overlapping labels share their bars: a label that shares every bar with four others
    weighs a fifth of one that overlaps none.
    """
    if not (isinstance(cfg, TripleBarrierLabels) and cfg.compute_weights):
        return None
    labels = generate_labels(prices, cfg).to_numpy()
    close, high, low = (
        np.ascontiguousarray(prices[c].to_numpy(dtype=np.float64)) for c in ("close", "high", "low")
    )
    ends = triple_barrier_outcomes(_positive_close(close), high, low, cfg)[1]
    starts = np.flatnonzero(~np.isnan(labels))
    weights = np.full(len(labels), np.nan)
    if not len(starts):
        return weights
    stops = ends[starts]
    # Concurrency by a difference array: +1 where a span opens, -1 after it closes.
    steps = np.zeros(len(labels) + 1)
    np.add.at(steps, starts, 1.0)
    np.add.at(steps, stops + 1, -1.0)
    concurrency = np.cumsum(steps[:-1])
    inverse = np.divide(1.0, concurrency, out=np.zeros_like(concurrency), where=concurrency > 0)
    cumulative = np.concatenate(([0.0], np.cumsum(inverse)))
    uniqueness = (cumulative[stops + 1] - cumulative[starts]) / (stops - starts + 1)
    weights[starts] = uniqueness / uniqueness.mean()
    return weights


# --- forward return -------------------------------------------------------------------------


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """(close[t+h] - close[t]) / close[t]; NaN for the last h bars."""
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


# --- context ----------------------------------------------------------------------------------


def context_labels(close: np.ndarray, cfg: ContextLabels) -> np.ndarray:
    """The forward return over `horizon` bars: above `bullish_threshold` BUY, below
    `bearish_threshold` SELL, else HOLD; NaN for the last `horizon` bars."""
    ret = forward_returns(close, cfg.horizon)
    labels = np.where(ret > cfg.bullish_threshold, float(BUY),
                      np.where(ret < cfg.bearish_threshold, float(SELL), float(HOLD)))
    labels[np.isnan(ret)] = np.nan
    return labels


# --- regime -----------------------------------------------------------------------------------


def regime_thresholds(prices: pd.DataFrame, atr_period: int, lookback: int) -> np.ndarray:
    """Per bar, the median ATR (SMA of the true range over `atr_period`) over the last
    `lookback` bars as a fraction of the median close over them: the zigzag's unit move. The
    reference platform takes both medians over the whole series (reading the future); these
    read no price after the bar. NaN until the first ATR."""
    high, low, close = (prices[c].astype(np.float64) for c in ("high", "low", "close"))
    true_range = pd.Series(
        talib.TRANGE(high.to_numpy(), low.to_numpy(), close.to_numpy()), index=prices.index
    )
    atr = true_range.rolling(atr_period, min_periods=atr_period).mean()
    median_atr = atr.rolling(lookback, min_periods=1).median()
    median_close = close.where(atr.notna()).rolling(lookback, min_periods=1).median()
    return (median_atr / median_close).to_numpy(dtype=np.float64)


def _varying_zigzag(
    close: np.ndarray, thresholds: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pivots and confirmations of the zigzag over close[start:] (bar indices of `close`)."""
    pivots, confirmed = kernels.zigzag_pivots_varying(
        np.ascontiguousarray(close[start:]), np.ascontiguousarray(thresholds[start:])
    )
    return pivots + start, np.where(confirmed >= 0, confirmed + start, -1)


def _progresses(prices: np.ndarray, rising: bool, tolerance: float) -> bool:
    """Whether micro pivots (prices in order) make higher lows (`rising`) or lower highs in
    at least `tolerance` of their consecutive pairs. A pivot is a low below both neighbours
    (the first and last: below their one neighbour), a high above them; others count as
    neither. Fewer than 4 pivots, or fewer than 2 of the kind, do not progress."""
    if len(prices) < 4:
        return False
    before = np.concatenate(([np.inf if rising else -np.inf], prices[:-1]))
    after = np.concatenate((prices[1:], [np.inf if rising else -np.inf]))
    if rising:
        chosen = prices[(prices < before) & (prices < after)]
        steps = np.diff(chosen) > 0
    else:
        chosen = prices[(prices > before) & (prices > after)]
        steps = np.diff(chosen) < 0
    return len(chosen) >= 2 and float(steps.mean()) >= tolerance


def _volatile(close: np.ndarray, window: int, lookback: int, crisis: float) -> np.ndarray:
    """Per bar t: True where the realized volatility (std, ddof 1) of the `window` log
    returns after t over that of the `lookback` returns before t exceeds `crisis`, False
    where it does not, NaN where either window is incomplete (float array)."""
    n = len(close)
    out = np.full(n, np.nan)
    returns = pd.Series(np.diff(np.log(close)))
    if n - 1 < max(window, lookback):
        return out
    forward = returns.rolling(window).std().to_numpy()  # [e - window + 1 .. e]
    history = returns.rolling(lookback).std().to_numpy()
    t = np.arange(lookback, n - window)
    fwd, hist = forward[t + window - 1], history[t - 1]
    ratio = np.divide(fwd, hist, out=np.zeros_like(fwd), where=hist > 0)
    out[t] = (ratio > crisis).astype(np.float64)
    return out


def regime_outcomes(prices: pd.DataFrame, cfg: RegimeLabels) -> tuple[np.ndarray, np.ndarray]:
    """(labels, known_at) of the regime source (float64 with NaN; int64 with -1).

    The macro zigzag's legs [p_k, p_k+1) are the segments. A bar in a leg is VOLATILE when the
    volatility of its next `atr_period` returns is `vol_crisis_threshold` times that of its last
    `vol_lookback`; else TRENDING_UP/DOWN (the leg's direction) when the micro pivots inside
    [p_k, p_k+1] progress, else RANGING. A leg is known once its end pivot is confirmed and the
    micro pivots inside it are final: when the first micro pivot after it is confirmed. A bar
    is known at the later of that and t + atr_period; bars without a full volatility window
    on both sides, or in a leg not known yet, have no label.
    """
    close = _positive_close(prices["close"].to_numpy(dtype=np.float64))
    n = len(close)
    labels, known = np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    thresholds = regime_thresholds(prices, cfg.atr_period, cfg.vol_lookback)
    valid = np.flatnonzero(np.isfinite(thresholds) & (thresholds > 0))
    if not len(valid):
        return labels, known
    start = int(valid[0])
    macro, macro_confirmed = _varying_zigzag(close, cfg.macro_atr_mult * thresholds, start)
    micro, micro_confirmed = _varying_zigzag(close, cfg.micro_atr_mult * thresholds, start)
    volatile = _volatile(close, cfg.atr_period, cfg.vol_lookback, cfg.vol_crisis_threshold)
    for k in range(len(macro) - 1):
        begin, end = int(macro[k]), int(macro[k + 1])
        after = int(np.searchsorted(micro, end, side="right"))
        if macro_confirmed[k + 1] < 0 or after >= len(micro) or micro_confirmed[after] < 0:
            break  # this leg, and every later one, is not final yet
        inside = micro[(micro >= begin) & (micro <= end)]
        rising = bool(close[end] > close[begin])
        trend = TRENDING_UP if rising else TRENDING_DOWN
        kind = trend if _progresses(close[inside], rising, cfg.progression_tolerance) else RANGING
        bars = np.arange(begin, end)
        flags = volatile[bars]
        ok = ~np.isnan(flags)
        labels[bars[ok]] = np.where(flags[ok] > 0, VOLATILE, kind)
        leg_known = max(int(macro_confirmed[k + 1]), int(micro_confirmed[after]))
        known[bars[ok]] = np.maximum(leg_known, bars[ok] + cfg.atr_period)
    return labels, known
