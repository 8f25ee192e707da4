"""Compiled inner loops (numba) for the passes NumPy cannot do in one sweep over memory.

The feature and label passes over a million bars are memory-bound: NumPy's elementwise calls
each stream the whole array through memory again, and a zigzag is a scan bar by bar. These
kernels do each pass once. They are plain loops over arrays, compiled on first use and cached
on disk beside this file (`cache=True`), and they release the GIL (`nogil=True`) so a trainer's
event loop keeps running while a job builds its features.

Callers validate; kernels trust their inputs (shapes, the order of parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

_F = TypeVar("_F", bound=Callable[..., Any])
_njit = numba.njit(cache=True, nogil=True)


def _compiled(kernel: _F) -> _F:
    """numba's njit, typed as what it is to callers: the same signature, compiled.

    numba makes a negative index count from the end, so each signed index it cannot prove
    non-negative (a `while` loop's, one counting down) costs a test and a select: the serial
    loops where it counts index with np.uint64 instead (the zigzag scan's: 1.23 -> 1.00 ms on
    1M bars)."""
    return cast(_F, _njit(kernel))


def readonly_tuple(arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Arrays as one tuple type for a kernel: numba indexes a tuple at run time only when its
    items share a type, and read-only (a pandas column) vs writable is part of that type."""
    views = []
    for array in arrays:
        view = array.view()
        view.flags.writeable = False
        views.append(view)
    return tuple(views)


# Memberships of one input are computed this many rows at a time, so that the input's block
# (128 KB) is read from memory once however many sets read it, and stays in L2 meanwhile. Not
# fewer rows: each block costs one kernel call per set (~140 ns). Six sets on 1M rows (AMD
# EPYC): 1024-row blocks 2.83-3.08 ms, 16384-row blocks 2.12 ms, no blocks 2.06 ms; on an
# earlier machine three sets took 1.18 ms in 1024-row blocks and 1.59 ms without.
MEMBERSHIP_BLOCK_ROWS = 16384

TRAPEZOID, GAUSSIAN_EXPONENT = 0, 1


@_compiled
def trapezoid_into(x: np.ndarray, a: float, b: float, c: float, d: float, out: np.ndarray) -> None:
    """out[i] = the trapezoid (a, b, c, d) membership of x[i]; NaN stays NaN.

    0 outside [a, d], 1 on [b, c], linear ramps between; a triangle has b == c. A vertical
    edge (a == b, or c == d) is a step: the set is 1 from b on, or up to c.
    """
    rise = 1.0 / (b - a) if b > a else 0.0
    fall = 1.0 / (d - c) if d > c else 0.0
    for i in range(x.shape[0]):
        v = x[i]
        up = (v - a) * rise if b > a else (1.0 if v >= a else 0.0)
        down = (d - v) * fall if d > c else (1.0 if v <= d else 0.0)
        degree = min(max(min(up, down), 0.0), 1.0)
        out[i] = v if v != v else degree


@_compiled
def gaussian_exponent_into(x: np.ndarray, mu: float, sigma: float, out: np.ndarray) -> None:
    """out[i] = -(x[i] - mu)^2 / (2 sigma^2): the caller takes NumPy's vectorised exp of it."""
    scale = 1.0 / sigma
    for i in range(x.shape[0]):
        z = (x[i] - mu) * scale
        out[i] = -0.5 * z * z


@_compiled
def _nan_free_into(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = x[i] == x[i]


@_compiled
def _and_nan_free_into(x: np.ndarray, out: np.ndarray) -> None:
    # A separate small loop (not a branch in the one above) so that both vectorise.
    for i in range(x.shape[0]):
        out[i] = out[i] & (x[i] == x[i])


@_compiled
def memberships_into(
    xs: tuple[np.ndarray, ...],
    source: np.ndarray,
    kinds: np.ndarray,
    params: np.ndarray,
    columns: np.ndarray,
    defined: np.ndarray,
) -> None:
    """columns[j] = membership j of xs[source[j]]: a TRAPEZOID with params[j] = (a, b, c, d),
    or a GAUSSIAN_EXPONENT with params[j] = (mu, sigma, -, -), the caller then taking its exp
    (NaN stays NaN either way). defined[i] = no NaN among the memberships of bar i, that is
    among the xs on bar i, checked while each block is still in cache."""
    m, n = columns.shape
    for start in range(0, n, MEMBERSHIP_BLOCK_ROWS):
        stop = min(start + MEMBERSHIP_BLOCK_ROWS, n)
        for j in range(m):
            x, p, out = xs[source[j]][start:stop], params[j], columns[j, start:stop]
            if kinds[j] == TRAPEZOID:
                trapezoid_into(x, p[0], p[1], p[2], p[3], out)
            else:
                gaussian_exponent_into(x, p[0], p[1], out)
        block = defined[start:stop]
        _nan_free_into(xs[0][start:stop], block)
        for k in range(1, len(xs)):
            _and_nan_free_into(xs[k][start:stop], block)


@_compiled
def lagged_rows_into(columns: np.ndarray, lags: int, out: np.ndarray) -> None:
    """out[i, j * m + k] = columns[k, i + lags - j] for j in 0..lags: row i of the feature
    matrix is the m unlagged features of its bar (i + lags in `columns`), then of the bar before
    it, and so on (m = len(columns))."""
    m = columns.shape[0]
    for i in range(out.shape[0]):
        for j in range(lags + 1):
            for k in range(m):
                out[i, j * m + k] = columns[k, i + lags - j]


@_compiled
def zigzag_pivots(close: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The ZigZag scan of `labels.zigzag_pivots` (which states the rule), in one pass: the
    pivots, and for each the bar whose move of the threshold confirmed it (-1: not confirmed,
    the last leg's running extreme)."""
    nothing = np.empty(0, dtype=np.int64)
    return _zigzag(close, threshold, False, 0, 0, 0, nothing, 0, np.empty(0), nothing)


@_compiled
def zigzag_outcomes(
    close: np.ndarray, threshold: float, buy: int, hold: int, sell: int, times: np.ndarray,
    never: int, labels: np.ndarray, known: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`zigzag_pivots`, and in the same pass each bar's zigzag label and when it is final.

    labels[i] (float): bars strictly between two pivots take the direction of the next pivot
    (`buy` if it is higher, `sell` if lower), a pivot is `hold`; NaN from the last extreme on
    (unconfirmed: more data could still move it, and the bars after it with it).
    known[i] = times[the bar at which label i is final] (`never`: not yet; `times` one value per
    bar: the bar numbers themselves, or their times): a bar inside a leg is final once the leg
    has a later extreme (it can no longer be the pivot) and the leg's start is confirmed; a
    pivot once it is confirmed. That is, each bar waits for the next bar that makes a new
    extreme or reverses, which the scan meets in order: it fills the waiting bars then."""
    return _zigzag(close, threshold, True, buy, hold, sell, times, never, labels, known)


@_compiled
def _fill(out: np.ndarray, start: int, stop: int, value: Any) -> None:
    for j in range(start, stop):
        out[np.uint64(j)] = value  # an unsigned index: no wraparound test (see `_compiled`)


@_compiled
def _zigzag(
    close: np.ndarray, threshold: float, outcomes: bool, buy: int, hold: int, sell: int,
    times: np.ndarray, never: int, labels: np.ndarray, known: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`zigzag_outcomes`, or only its pivots when not `outcomes` (the arrays then unread)."""
    n = close.shape[0]
    # n-long buffers, only the first `count` written (np.empty touches no page it is not given)
    pivots = np.empty(max(n, 1), dtype=np.int64)
    confirmed = np.empty(max(n, 1), dtype=np.int64)
    if n == 0:
        return pivots[:0], confirmed[:0]
    pivots[0] = 0
    confirmed[0] = -1
    count = 1
    up, down = 1.0 + threshold, 1.0 - threshold
    high, low = close[0] * up, close[0] * down
    first = 1
    while first < n and low < close[first] < high:
        first += 1
    if first == n:  # no move of the threshold: no leg, no label known
        if outcomes:
            known[:] = never
            labels[:] = np.nan
        return pivots[:count], confirmed[:count]
    confirmed[0] = first
    if outcomes:
        labels[0] = hold
        _fill(known, 0, first, times[first])
    # One tight loop per leg, on prices times `sign` (+1 rising, -1 falling), so that one loop
    # serves both directions: the leg goes on while sign * price beats sign * extreme * limit.
    # Pivots only: the running extreme kept with selects rather than branches (a new high or
    # low comes at random in a walk, and a mispredicted branch per bar costs more than the
    # whole comparison). With the outcomes, each new extreme also fills the bars waiting for
    # it, those from the previous extreme on: a branch, which the fills' stores (hidden behind
    # the scan's chain of comparisons) more than pay for: a second pass over marks the scan
    # left cost ~0.55 ms more on 1M bars.
    sign = 1.0 if close[first] > close[0] else -1.0
    extreme, best = first, sign * close[first]
    i = first + 1
    while i < n:
        limit = down if sign > 0 else up
        while i < n:
            at = np.uint64(i)  # an unsigned index: no wraparound test (see `_compiled`)
            v = sign * close[at]
            if not v > best * limit:
                break
            if not outcomes:
                better = v > best
                extreme = i if better else extreme
                best = v if better else best
            elif v > best:
                _fill(known, extreme, i, times[at])
                extreme = i
                best = v
            i += 1
        if i < n:  # a reversal: the extreme is a pivot, the reversing bar the new extreme
            if outcomes:
                _leg_labels(close, pivots[count - 1], extreme, buy, sell, labels)
                labels[extreme] = hold
                _fill(known, extreme, i, times[i])  # the pivot and the bars after it
            pivots[count] = extreme
            confirmed[count] = i
            count += 1
            sign = -sign
            extreme, best = i, sign * close[i]
            i += 1
    if outcomes:  # the last leg, to its unconfirmed extreme
        _leg_labels(close, pivots[count - 1], extreme, buy, sell, labels)
        labels[extreme:] = np.nan
        known[extreme:] = never
    pivots[count] = extreme
    confirmed[count] = -1
    return pivots[: count + 1], confirmed[: count + 1]


@_compiled
def _leg_labels(
    close: np.ndarray, start: int, stop: int, buy: int, sell: int, labels: np.ndarray
) -> None:
    """The bars strictly inside the leg from pivot `start` to pivot `stop`: its direction."""
    _fill(labels, start + 1, stop, buy if close[stop] > close[start] else sell)


@_compiled
def segment_labels_into(
    close: np.ndarray, pivots: np.ndarray, buy: int, hold: int, sell: int, out: np.ndarray
) -> None:
    """Bars strictly between two pivots take the direction of the next pivot (`buy` if it is
    higher, `sell` if lower); pivots, and bars before the first or after the last, are `hold`."""
    if pivots.shape[0] == 0:
        out[:] = hold
        return
    out[: pivots[0] + 1] = hold
    for k in range(1, pivots.shape[0]):
        start, stop = pivots[k - 1], pivots[k]
        out[start + 1 : stop] = buy if close[stop] > close[start] else sell
        out[stop] = hold
    out[pivots[-1] + 1 :] = hold


@_compiled
def take_or_into(index: np.ndarray, values: np.ndarray, missing: int, out: np.ndarray) -> None:
    """out[i] = values[index[i]], or `missing` where index[i] < 0 (`out` may be `index`)."""
    for i in range(index.shape[0]):
        j = index[i]
        out[i] = values[j] if j >= 0 else missing


@_compiled
def keep_labelled(labels: np.ndarray, defined: np.ndarray) -> tuple[int, int, int, int]:
    """Clear defined[i] where labels[i] is NaN (never, for integer labels), in one pass, and
    return how many defined rows that cleared, how many rows are left, the first and the last
    of them (-1, -1 when none)."""
    cleared = kept = 0
    for i in range(labels.shape[0]):
        v = labels[i]
        undefined = v != v
        row = defined[i]
        # & and ~, not `and`/`not`: those branch per row, and this loop vectorizes without
        cleared += row & undefined
        row = row & ~undefined
        defined[i] = row
        kept += row
    first = last = -1
    if kept:
        for i in range(defined.shape[0]):
            if defined[i]:
                first = i
                break
        for i in range(defined.shape[0] - 1, first - 1, -1):
            if defined[i]:
                last = i
                break
    return cleared, kept, first, last


@_compiled
def ewm_into(x: np.ndarray, alpha: float, out: np.ndarray) -> None:
    """An exponential moving average seeded with its first value (pandas' `ewm(adjust=False)`):
    NaN up to the first non-NaN `x`, then `out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]`."""
    n = x.shape[0]
    start = 0
    while start < n and np.isnan(x[start]):
        out[start] = np.nan
        start += 1
    if start == n:
        return
    out[start] = x[start]
    for t in range(start + 1, n):
        out[t] = alpha * x[t] + (1.0 - alpha) * out[t - 1]


@_compiled
def supertrend_into(
    close: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    value: np.ndarray,
    direction: np.ndarray,
) -> None:
    """SuperTrend from its basic bands (hl2 +- multiplier * ATR, NaN in the ATR's warm-up).

    The final upper band only falls (or resets to the basic band once the previous close broke
    above it), the final lower band only rises (or resets once the close broke below it). The
    trend turns down when the close reaches the final lower band, up when it reaches the final
    upper band; `value` is the lower band in an uptrend (+1), the upper in a downtrend (-1). The
    first bar with bands is an uptrend unless its close is at or under the lower band."""
    n = close.shape[0]
    value[:] = np.nan
    direction[:] = np.nan
    start = 0
    while start < n and (np.isnan(upper[start]) or np.isnan(lower[start])):
        start += 1
    if start == n:
        return
    fu, fl = upper[start], lower[start]
    d = -1.0 if close[start] <= fl else 1.0
    value[start] = fu if d < 0 else fl
    direction[start] = d
    for t in range(start + 1, n):
        prev = close[t - 1]
        fu = upper[t] if (upper[t] < fu or prev > fu) else fu
        fl = lower[t] if (lower[t] > fl or prev < fl) else fl
        # up: turns down at the lower band; down: turns up at the upper band
        d = (-1.0 if close[t] <= fl else 1.0) if d > 0 else (1.0 if close[t] >= fu else -1.0)
        value[t] = fl if d > 0 else fu
        direction[t] = d


@_compiled
def zigzag_pivots_varying(
    close: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`zigzag_pivots` with a threshold per bar: the move that starts the first leg, or that
    reverses the current one, is measured against the threshold of the bar that makes it (so
    a scan over prices[:k] finds the same pivots as one over all prices, up to bar k). Returns
    the pivots and the bar that confirmed each (-1: the last leg's running extreme)."""
    n = close.shape[0]
    pivots = np.empty(max(n, 1), dtype=np.int64)
    confirmed = np.empty(max(n, 1), dtype=np.int64)
    if n == 0:
        return pivots[:0], confirmed[:0]
    pivots[0] = 0
    confirmed[0] = -1
    count = 1
    first = 1
    while first < n and abs(close[first] / close[0] - 1.0) < thresholds[first]:
        first += 1
    if first == n:
        return pivots[:count], confirmed[:count]
    confirmed[0] = first
    rising = close[first] > close[0]
    extreme, best = first, close[first]
    for i in range(first + 1, n):
        move = close[i] / best - 1.0
        if (close[i] > best) if rising else (close[i] < best):
            extreme, best = i, close[i]
        elif (-move if rising else move) >= thresholds[i]:
            pivots[count] = extreme
            confirmed[count] = i
            count += 1
            extreme, best, rising = i, close[i], not rising
    pivots[count] = extreme
    confirmed[count] = -1
    return pivots[: count + 1], confirmed[: count + 1]


@_compiled
def cusum_events_into(log_returns: np.ndarray, thresholds: np.ndarray, out: np.ndarray) -> None:
    """The symmetric CUSUM filter: out[t + 1] = True where the positive sum
    s+ = max(0, s+ + r_t - h_t) exceeds h_t (then s+ restarts at 0) or the negative sum
    s- = min(0, s- + r_t + h_t) falls below -h_t (then s- restarts); r_t is the return into
    bar t + 1. A NaN threshold (volatility warming up) leaves both sums at 0, no event."""
    out[:] = False
    s_pos, s_neg = 0.0, 0.0
    for t in range(log_returns.shape[0]):
        h, r = thresholds[t], log_returns[t]
        if np.isnan(h):
            continue
        s_pos = max(0.0, s_pos + r - h)
        s_neg = min(0.0, s_neg + r + h)
        if s_pos > h:
            out[t + 1] = True
            s_pos = 0.0
        elif s_neg < -h:
            out[t + 1] = True
            s_neg = 0.0
