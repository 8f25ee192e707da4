"""Labels on hand-computed series: zigzag segments, triple barrier, forward return."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.labels import (
    BUY,
    HOLD,
    SELL,
    generate_labels,
    is_regression,
    label_known_at,
    num_outputs,
    zigzag_labels,
    zigzag_pivots,
)
from libs.pipeline.strategy import ForwardReturnLabels, TripleBarrierLabels, ZigZagLabels


def bars(
    close: list[float], high: list[float] | None = None, low: list[float] | None = None
) -> pd.DataFrame:
    c = np.asarray(close, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(c), freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": c,
            "high": np.asarray(high if high is not None else c, dtype=np.float64),
            "low": np.asarray(low if low is not None else c, dtype=np.float64),
            "close": c,
            "volume": 1.0,
        },
        index=index,
    )


def reference_pivots(close: np.ndarray, threshold: float) -> list[int]:
    """The ZigZag as a plain loop over bars: the definition the fast version must match."""
    return reference_scan(close, threshold)[0]


def reference_scan(close: np.ndarray, threshold: float) -> tuple[list[int], list[int]]:
    """The pivots, and for each the bar whose move of the threshold confirmed it (-1: the last
    leg's extreme, which more data could still move)."""
    pivots, confirmed, n = [0], [-1], len(close)
    i = 1
    while i < n and close[0] * (1 - threshold) < close[i] < close[0] * (1 + threshold):
        i += 1
    if i >= n:
        return pivots, confirmed
    confirmed[0] = i
    rising, extreme = close[i] > close[0], i
    for j in range(i + 1, n):
        if (rising and close[j] > close[extreme]) or (not rising and close[j] < close[extreme]):
            extreme = j
        elif (rising and close[j] <= close[extreme] * (1 - threshold)) or (
            not rising and close[j] >= close[extreme] * (1 + threshold)
        ):
            pivots.append(extreme)
            confirmed.append(j)
            extreme, rising = j, not rising
    return [*pivots, extreme], [*confirmed, -1]


def reference_known_at(close: np.ndarray, threshold: float) -> list[int]:
    """When each zigzag label is final, as plain loops over the rule: a pivot once the move
    that reverses it is made (its confirming bar); a bar inside a leg once the leg's start is
    confirmed and the leg has made a new extreme after the bar (so it is not the leg's pivot)."""
    pivots, confirmed = reference_scan(close, threshold)
    known = [-1] * len(close)
    if len(close):
        known[0] = confirmed[0]
    for k in range(1, len(pivots)):
        start, stop, opened = pivots[k - 1], pivots[k], confirmed[k - 1]
        rising = close[stop] > close[start]
        for i in range(start + 1, min(opened, stop)):
            known[i] = opened
        last, best = opened, close[opened]
        for j in range(opened + 1, stop + 1):
            if (close[j] > best) if rising else (close[j] < best):
                for i in range(last, j):
                    known[i] = j
                last, best = j, close[j]
        known[stop] = confirmed[k]
    return known


# --- zigzag ----------------------------------------------------------------------------------


def test_zigzag_by_hand() -> None:
    close = np.array([100, 102, 104, 101, 99, 100.5, 103, 106, 104, 103], dtype=float)
    # 104 is 4% above 100: rising. 101 is not 3% below 104, 99 is: 104 is a pivot. 103 is 3%
    # above 99: 99 is a pivot. 106 extends the leg; 104 and 103 are not 3% below it: the data
    # ends with 106 as the last leg's extreme.
    assert zigzag_pivots(close, 0.03).tolist() == [0, 2, 4, 7]
    # between pivots: the next pivot's direction; pivots and the tail: HOLD
    assert zigzag_labels(close, 0.03).tolist() == [
        HOLD,
        BUY,
        HOLD,
        SELL,
        HOLD,
        BUY,
        BUY,
        HOLD,
        HOLD,
        HOLD,
    ]


def test_zigzag_falling_start_ties_and_flat() -> None:
    assert zigzag_labels(np.array([100, 98, 96.5, 97, 100, 99.0]), 0.03).tolist() == [
        HOLD,
        SELL,
        HOLD,
        BUY,
        HOLD,
        HOLD,
    ]
    # equal highs: the earlier bar stays the extreme
    assert zigzag_pivots(np.array([100, 104, 104, 100.0]), 0.03).tolist() == [0, 1, 3]
    assert zigzag_labels(np.array([100, 104, 104, 100.0]), 0.03).tolist() == [
        HOLD,
        HOLD,
        SELL,
        HOLD,
    ]
    # never a 3% move: everything is HOLD
    assert zigzag_labels(np.array([100, 101, 99, 100.5]), 0.03).tolist() == [HOLD] * 4
    assert zigzag_labels(np.array([100.0]), 0.03).tolist() == [HOLD]
    assert zigzag_labels(np.array([]), 0.03).tolist() == []


@pytest.mark.parametrize(
    ("seed", "volatility"),
    # 1% bars: short legs (the bar-by-bar finish); 0.2% bars: long legs (the windowed scan)
    [(0, 0.01), (1, 0.01), (2, 0.002), (3, 0.002)],
)
def test_zigzag_matches_the_plain_loop(seed: int, volatility: float) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(2, 6000))
        steps = rng.normal(0, volatility, n)
        close = np.round(100 * np.exp(np.cumsum(steps)), 2)  # rounding makes ties
        threshold = float(rng.choice([0.003, 0.01, 0.02, 0.05]))
        assert zigzag_pivots(close, threshold).tolist() == reference_pivots(close, threshold)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zigzag_known_at_matches_the_plain_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(30):
        n = int(rng.integers(1, 3000))
        steps = rng.normal(0, float(rng.choice([0.002, 0.01])), n)
        close = np.round(100 * np.exp(np.cumsum(steps)), 2)  # rounding makes ties
        threshold = float(rng.choice([0.003, 0.01, 0.02, 0.05]))
        cfg = ZigZagLabels(zigzag_threshold=threshold)
        known = label_known_at(bars(close.tolist()), cfg)
        assert known.tolist() == reference_known_at(close, threshold)


def test_zigzag_labels_alternate_between_pivots() -> None:
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.003, 20_000)))
    pivots = zigzag_pivots(close, 0.01)
    labels = zigzag_labels(close, 0.01)
    assert (labels[pivots] == HOLD).all()
    moves = np.sign(np.diff(close[pivots]))
    assert (moves[1:] == -moves[:-1]).all()  # highs and lows alternate
    # every leg moved at least the threshold (the last one included)
    assert (np.abs(np.diff(close[pivots[1:]])) / close[pivots[1:-1]] >= 0.01 - 1e-12).all()


def test_zigzag_needs_positive_prices() -> None:
    with pytest.raises(ValueError, match="positive"):
        zigzag_pivots(np.array([1.0, 0.0, 2.0]), 0.03)


# --- triple barrier ---------------------------------------------------------------------------


def test_triple_barrier_by_hand() -> None:
    # vol_span 1: each entry's volatility is its own (high - low) / close.
    prices = bars(
        close=[100, 101, 102.5, 99.5, 100, 100.1, 100.05],
        high=[100.5, 101.5, 102.6, 103.5, 100.2, 100.2, 100.1],
        low=[99.5, 100.5, 101.5, 99.4, 99.8, 100.0, 100.0],
    )
    cfg = TripleBarrierLabels(
        pt_multiplier=2, sl_multiplier=1, max_holding_period=3, vol_span=1, vol_method="atr"
    )
    labels = generate_labels(prices, cfg)
    # t0: vol 1%, barriers 102 / 99; bar 2's high 102.6 touches the upper one first: BUY.
    # t1: vol 1/101, barriers ~103.0 / 100.0; bar 3 touches both: its close 99.5 < 101: SELL.
    # t2: vol ~1.07%, barriers ~104.7 / ~101.4; bar 3's low 99.4 touches the lower: SELL.
    # t3: vol ~4.1%, no touch in 3 bars; return +0.55% < 0.5 * vol * sqrt(3): HOLD.
    # t4..t6: no full horizon: undefined.
    np.testing.assert_array_equal(labels.to_numpy()[:4], [BUY, SELL, SELL, HOLD])
    assert labels.iloc[4:].isna().all()


def test_triple_barrier_expiry_takes_the_sign_of_a_large_enough_move() -> None:
    horizon = 16
    close = np.concatenate([[100.0], np.linspace(100.1, 102.5, horizon)])
    prices = bars(
        close=list(close), high=[100.5, *(close[1:] + 0.1)], low=[99.5, *(close[1:] - 0.1)]
    )
    # vol 1%: barriers at +-3% are never touched; +2.5% at expiry beats 0.5 * 1% * sqrt(16) = 2%.
    cfg = TripleBarrierLabels(
        pt_multiplier=3, sl_multiplier=3, max_holding_period=horizon, vol_span=1
    )
    assert generate_labels(prices, cfg).iloc[0] == BUY
    flatter = np.concatenate([[100.0], np.linspace(100.1, 101.5, horizon)])
    prices = bars(
        close=list(flatter), high=[100.5, *(flatter[1:] + 0.1)], low=[99.5, *(flatter[1:] - 0.1)]
    )
    assert generate_labels(prices, cfg).iloc[0] == HOLD  # +1.5% < 2%


def test_triple_barrier_on_sample_data() -> None:
    from libs.pipeline.data import synthesize

    prices = synthesize("EURUSD", "1h", 3000, seed=2)
    cfg = TripleBarrierLabels(max_holding_period=24, vol_span=50)
    labels = generate_labels(prices, cfg)
    assert labels.iloc[-24:].isna().all()  # no full horizon
    assert labels.iloc[:49].isna().all()  # volatility warm-up (span 50)
    defined = labels.dropna()
    assert set(np.unique(defined)) == {BUY, HOLD, SELL}
    close_vol = generate_labels(
        prices, TripleBarrierLabels(vol_method="close", max_holding_period=24)
    )
    assert close_vol.notna().sum() > 2000


# --- forward return and the common contract ---------------------------------------------------


def test_forward_return_by_hand() -> None:
    labels = generate_labels(bars([100, 110, 121, 133.1]), ForwardReturnLabels(horizon=1))
    np.testing.assert_allclose(labels.to_numpy()[:3], [0.1, 0.1, 0.1])
    assert np.isnan(labels.iloc[3])
    assert generate_labels(bars([100, 110]), ForwardReturnLabels(horizon=5)).isna().all()


def test_labels_series_contract() -> None:
    prices = bars([100, 102, 104, 101, 99])
    labels = generate_labels(prices, ZigZagLabels(zigzag_threshold=0.03))
    assert labels.name == "label" and labels.dtype == np.float64
    # The last leg falls from the pivot at 104: 101 is already SELL (99 came after it), but its
    # extreme (99) may still move: no label yet.
    assert labels.iloc[:4].tolist() == [1.0, 0.0, 1.0, 2.0] and np.isnan(labels.iloc[4])
    assert labels.index.equals(prices.index)
    barrier = generate_labels(prices, TripleBarrierLabels(max_holding_period=2, vol_span=2))
    assert barrier.dtype == np.float64 and np.isnan(barrier.iloc[-2:]).all()  # undefined: NaN
    assert num_outputs(ZigZagLabels()) == 3 and num_outputs(TripleBarrierLabels()) == 3
    assert num_outputs(ForwardReturnLabels()) == 1
    assert is_regression(ForwardReturnLabels()) and not is_regression(ZigZagLabels())


def test_nan_prices_are_refused() -> None:
    with pytest.raises(ValueError, match="close prices must be positive numbers: row 1 is nan"):
        generate_labels(bars([100, np.nan, 101]), ZigZagLabels())
    with pytest.raises(ValueError, match=r"row 2 is -1\.0"):
        zigzag_labels(np.array([100, 101, -1.0]), 0.03)


def test_every_bad_price_is_caught_whereever_it_is() -> None:
    """zigzag checks only its pivots for prices <= 0 or NaN: a bad price always becomes one."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        at = int(rng.integers(0, n))
        close[at] = (np.nan, 0.0, -1.0, -200.0)[trial % 4]
        with pytest.raises(ValueError, match=f"row {at} is"):
            zigzag_pivots(close, float(rng.choice([0.001, 0.01, 0.05])))
