"""Context and regime labels, the CUSUM event filter and the uniqueness weights of triple-barrier
labels, on real EURUSD 1h bars (tests/harness/market.py) and small series worked by hand:

- context: the forward return against two thresholds, in OUR signal ids (BUY/HOLD/SELL);
- regime: 4 classes, not signals (class names, outputs, no backtest in the scorecard);
- every new source says truthfully when its label is known (recomputed on the prices up to T,
  every label known by T is the same), and the check can fail;
- CUSUM: the selected bars are exactly the crossings of a plain CUSUM loop;
- weights: equal to a brute-force concurrency count; None when not asked for;
- the strategy fields validate naming their path; decisions.num_classes fits the labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.pipeline import labels as L
from libs.pipeline.strategy import (
    ContextLabels,
    ForwardReturnLabels,
    LabelsConfig,
    RegimeLabels,
    StrategyError,
    TripleBarrierLabels,
    ZigZagLabels,
    check_strategy,
    label_embargo,
    parse_strategy,
)
from tests.harness.labels import DOC, leaks, random_walk
from tests.harness.market import install_real_data, load_real

NEW_SOURCES: dict[str, LabelsConfig] = {
    "context": ContextLabels(horizon=5),
    "regime": RegimeLabels(),
    "regime_tight": RegimeLabels(macro_atr_mult=2.0, micro_atr_mult=0.5, atr_period=10,
                                 vol_lookback=60, vol_crisis_threshold=1.5),
    "cusum_multiplier": TripleBarrierLabels(max_holding_period=12, vol_span=24,
                                            cusum_multiplier=0.5),
    "cusum_threshold": TripleBarrierLabels(max_holding_period=12, vol_span=24,
                                           cusum_threshold=0.001),
}


def frame(close: list[float] | np.ndarray) -> pd.DataFrame:
    close = np.asarray(close, dtype=np.float64)
    index = pd.date_range("2021-01-04", periods=len(close), freq="1h", tz="UTC")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close,
                         "volume": 1.0}, index=index)


# --- no label reads past what it says ---------------------------------------------------------


@pytest.mark.parametrize("source", list(NEW_SOURCES))
@pytest.mark.parametrize("data", ["eurusd_1h", "random_walk"])
def test_a_new_label_known_by_t_is_the_same_on_the_prices_up_to_t(source: str, data: str) -> None:
    prices = load_real("EURUSD", "1h") if data == "eurusd_1h" else random_walk(3000, seed=5)
    cfg = NEW_SOURCES[source]
    labels, known = L.generate_labels(prices, cfg).to_numpy(), L.label_known_at(prices, cfg)
    # A label exactly where a known time is, and never known before its own bar.
    np.testing.assert_array_equal(known >= 0, ~np.isnan(labels))
    assert (known[known >= 0] >= np.flatnonzero(known >= 0)).all()
    assert leaks(prices, cfg, [700, 1111, 1777, 2500, len(prices) - 2]) == 0


def test_the_check_catches_a_regime_label_claimed_known_too_early() -> None:
    prices = load_real("EURUSD", "1h")
    cfg = NEW_SOURCES["regime"]
    known = L.label_known_at(prices, cfg)
    at_its_own_bar = np.where(known >= 0, np.arange(len(prices)), -1)
    assert leaks(prices, cfg, [1111, 2500], known=at_its_own_bar) > 0


def test_embargoes_are_the_look_ahead() -> None:
    assert label_embargo(ContextLabels(horizon=7)) == 7
    assert label_embargo(RegimeLabels(vol_lookback=90)) == 90
    assert label_embargo(NEW_SOURCES["cusum_multiplier"]) == 12


# --- context ----------------------------------------------------------------------------------


def test_context_by_hand_in_our_signal_ids() -> None:
    close = [100.0, 101.0, 100.0, 99.0, 100.2, 100.0, 100.0]
    cfg = ContextLabels(horizon=2, bullish_threshold=0.005, bearish_threshold=-0.005)
    labels = L.generate_labels(frame(close), cfg).to_numpy()
    # returns over 2 bars: 0, -2 %, +0.2 %, +1.0101 %, -0.2 %; the last 2 bars unknown.
    np.testing.assert_array_equal(labels[:5], [L.HOLD, L.SELL, L.HOLD, L.BUY, L.HOLD])
    assert np.isnan(labels[5:]).all()
    np.testing.assert_array_equal(L.label_known_at(frame(close), cfg), [2, 3, 4, 5, 6, -1, -1])
    assert L.num_outputs(cfg) == 3 and L.is_signal(cfg)
    assert L.class_names(cfg) == ("BUY", "HOLD", "SELL")


def test_context_on_real_bars_is_the_reference_rule_renumbered() -> None:
    prices = load_real("EURUSD", "1h")
    cfg = ContextLabels(horizon=24, bullish_threshold=0.003, bearish_threshold=-0.002)
    ret = prices["close"].shift(-24) / prices["close"] - 1.0
    # The reference platform's ids: 0 bullish, 1 bearish, 2 neutral; ours: 0, 2, 1.
    reference = np.where(ret > 0.003, 0, np.where(ret < -0.002, 1, 2))
    ours = L.generate_labels(prices, cfg).to_numpy()
    rows = ret.notna().to_numpy()
    np.testing.assert_array_equal(ours[rows], np.array([L.BUY, L.SELL, L.HOLD])[reference[rows]])
    assert np.isnan(ours[~rows]).all() and (~rows).sum() == 24
    assert {L.BUY, L.HOLD, L.SELL} <= set(ours[rows].tolist())


# --- regime -----------------------------------------------------------------------------------


def test_regime_has_four_classes_that_are_not_signals() -> None:
    cfg = RegimeLabels()
    assert L.num_outputs(cfg) == 4 and not L.is_signal(cfg) and not L.is_regression(cfg)
    assert L.class_names(cfg) == ("TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE")
    labels = L.generate_labels(load_real("EURUSD", "1h"), cfg).to_numpy()
    counts = np.bincount(labels[~np.isnan(labels)].astype(np.int64), minlength=4)
    assert len(counts) == 4 and (counts > 0).all(), counts
    assert 0.5 < (~np.isnan(labels)).mean() < 1.0  # warm-up and the unconfirmed tail: none


def test_micro_progression_by_hand() -> None:
    # Lows 1, 2, 3 rise (between highs 5, 6, 7): an up leg progresses; the highs rise too,
    # so a down leg does not.
    pivots = np.array([1.0, 5.0, 2.0, 6.0, 3.0, 7.0])
    assert L._progresses(pivots, rising=True, tolerance=1.0)
    assert not L._progresses(pivots, rising=False, tolerance=0.5)
    # Lows 1, 3, 2: half the pairs progress.
    wobbly = np.array([1.0, 5.0, 3.0, 6.0, 2.0, 7.0])
    assert L._progresses(wobbly, rising=True, tolerance=0.5)
    assert not L._progresses(wobbly, rising=True, tolerance=0.6)
    assert not L._progresses(pivots[:3], rising=True, tolerance=0.0)  # fewer than 4 pivots


def test_a_volatility_burst_is_volatile_against_its_history() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0, 0.001, 400)
    returns[250:270] *= 8  # a burst
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(returns))))
    flags = L._volatile(close, window=10, lookback=100, crisis=2.0)
    assert np.isnan(flags[:100]).all() and np.isnan(flags[-10:]).all()
    assert flags[245:255].all() and not flags[120:200].any()
    t = 150  # independently: std of the 10 returns after t over the 100 before
    log_returns = np.diff(np.log(close))
    ratio = np.std(log_returns[t : t + 10], ddof=1) / np.std(log_returns[t - 100 : t], ddof=1)
    assert flags[t] == float(ratio > 2.0)


def test_regime_thresholds_read_no_later_price() -> None:
    prices = load_real("EURUSD", "1h")
    full = L.regime_thresholds(prices, 14, 120)
    short = L.regime_thresholds(prices.iloc[:1000], 14, 120)
    np.testing.assert_array_equal(full[:1000], short)
    assert np.isnan(full[:14]).all() and np.isfinite(full[14:]).all()


# --- CUSUM ------------------------------------------------------------------------------------


def plain_cusum(close: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The symmetric CUSUM filter, one bar at a time (thresholds[t]: for the return into t+1)."""
    events = np.zeros(len(close), dtype=bool)
    up = down = 0.0
    for t in range(len(close) - 1):
        h = thresholds[t]
        if np.isnan(h):
            continue
        r = np.log(close[t + 1]) - np.log(close[t])
        up, down = max(0.0, up + r - h), min(0.0, down + r + h)
        if up > h:
            events[t + 1], up = True, 0.0
        elif down < -h:
            events[t + 1], down = True, 0.0
    return events


@pytest.mark.parametrize("mode", ["threshold", "multiplier"])
def test_cusum_selects_exactly_the_crossings_on_real_bars(mode: str) -> None:
    prices = load_real("EURUSD", "1h")
    close = prices["close"].to_numpy()
    base = TripleBarrierLabels(max_holding_period=12, vol_span=24)
    if mode == "threshold":
        cfg = TripleBarrierLabels(max_holding_period=12, vol_span=24, cusum_threshold=0.0008)
        thresholds = np.full(len(close), 0.0008)
    else:
        cfg = TripleBarrierLabels(max_holding_period=12, vol_span=24, cusum_multiplier=0.5)
        log_returns = pd.Series(np.log(close)).diff()
        vol = log_returns.ewm(span=24, adjust=False, min_periods=24).std().to_numpy()
        thresholds = 0.5 * vol
    events = plain_cusum(close, thresholds)
    assert 0.05 < events.mean() < 0.6
    selected = L.cusum_events(close, cfg)
    assert selected is not None
    np.testing.assert_array_equal(selected, events)
    labels = L.generate_labels(prices, cfg).to_numpy()
    unfiltered = L.generate_labels(prices, base).to_numpy()
    assert np.isnan(labels[~events]).all()
    np.testing.assert_array_equal(labels[events], unfiltered[events])
    assert L.cusum_events(close, base) is None


# --- uniqueness weights -----------------------------------------------------------------------


def brute_force_weights(labels: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """weight_i = mean over t in [i, end_i] of 1 / (labels spanning t), scaled to mean 1."""
    rows = [i for i in range(len(labels)) if not np.isnan(labels[i])]
    spans = {i: range(i, int(ends[i]) + 1) for i in rows}
    raw = {i: np.mean([1.0 / sum(t in spans[j] for j in rows) for t in spans[i]]) for i in rows}
    out = np.full(len(labels), np.nan)
    mean = np.mean(list(raw.values()))
    for i in rows:
        out[i] = raw[i] / mean
    return out


@pytest.mark.parametrize("cusum", [None, 0.5])
def test_uniqueness_weights_match_a_brute_force_count(cusum: float | None) -> None:
    prices = random_walk(260, seed=11)
    cfg = TripleBarrierLabels(pt_multiplier=1.0, sl_multiplier=1.0, max_holding_period=10,
                              vol_span=20, compute_weights=True, cusum_multiplier=cusum)
    weights = L.sample_weights(prices, cfg)
    assert weights is not None and len(weights) == len(prices)
    labels = L.generate_labels(prices, cfg).to_numpy()
    close, high, low = (prices[c].to_numpy() for c in ("close", "high", "low"))
    ends = L.triple_barrier_outcomes(close, high, low, cfg)[1]
    labelled = ~np.isnan(labels)
    # Touches end some spans early: the spans really differ in length.
    assert len(set((ends[labelled] - np.flatnonzero(labelled)).tolist())) > 2
    np.testing.assert_array_equal(np.isnan(weights), ~labelled)
    np.testing.assert_allclose(weights, brute_force_weights(labels, ends), rtol=1e-12)
    assert np.nanmean(weights) == pytest.approx(1.0)
    assert np.nanstd(weights) > 0.05


def test_no_weights_unless_asked() -> None:
    prices = random_walk(200, seed=1)
    assert L.sample_weights(prices, TripleBarrierLabels(vol_span=20)) is None
    assert L.sample_weights(prices, ZigZagLabels()) is None
    assert L.sample_weights(prices, RegimeLabels()) is None


# --- the strategy -----------------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "decisions", "path", "words"), [
    ("{source: context, bullish_threshold: 0.001, bearish_threshold: 0.002}", "",
     "training.labels", "bearish_threshold (0.002) must be below bullish_threshold"),
    ("{source: context, horizon: 0}", "", "training.labels.horizon", ">= 1"),
    ("{source: regime, micro_atr_mult: 4}", "", "training.labels", "micro_atr_mult"),
    ("{source: regime, vol_lookback: 1}", "", "training.labels.vol_lookback", ">= 2"),
    ("{source: regime, progression_tolerance: 2}", "",
     "training.labels.progression_tolerance", "<= 1"),
    ("{source: regime}", "num_classes: 3", "decisions.num_classes", "it has 4 classes"),
    ("{source: context}", "num_classes: 4", "decisions.num_classes", "it has 3 classes"),
    ("{source: triple_barrier, cusum_multiplier: 0}", "", "training.labels.cusum_multiplier",
     "> 0"),
])
def test_bad_label_settings_are_refused_naming_the_path(
    labels: str, decisions: str, path: str, words: str
) -> None:
    problems = check_strategy(DOC % (labels, decisions)).problems
    assert [p.path for p in problems] == [path]
    assert words in problems[0].message
    with pytest.raises(StrategyError, match=path.replace(".", r"\.")):
        parse_strategy(DOC % (labels, decisions))


def test_regime_accepts_four_classes() -> None:
    config = parse_strategy(DOC % ("{source: regime, atr_period: 10}", "num_classes: 4"))
    assert config.decisions.num_classes == 4
    assert config.training.labels == RegimeLabels(atr_period=10)


# --- a regime model through the scorecard ------------------------------------------------------


def test_a_regime_model_is_scored_with_its_names_and_not_backtested(tmp_path: Path) -> None:
    from libs.pipeline import scorecard
    from libs.pipeline.dataset import build_symbol_data, combine_multi_symbol_data
    from libs.pipeline.model import build_model
    from libs.pipeline.strategy import embargo_of
    from libs.pipeline.trainer import seed_everything, train

    install_real_data(tmp_path, ("EURUSD", "1h"))
    strategy = parse_strategy(DOC % ("{source: regime}", "num_classes: 4"))
    data = build_symbol_data(strategy, "EURUSD", ["1h"], data_dir=tmp_path)
    splits = combine_multi_symbol_data([data], strategy.training.data_split,
                                       embargo=embargo_of(strategy.training))
    assert set(np.unique(splits.y_train).tolist()) == {0, 1, 2, 3}
    seed_everything(0)
    model = build_model(splits.x_train.shape[1], 4, strategy.model)
    train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, strategy.training)
    metrics = scorecard.score(model, splits, strategy, device="cpu", seed=0)
    assert metrics["class_names"] == list(L.REGIME_NAMES)
    assert len(metrics["confusion_matrix"]) == 4
    assert metrics["backtest"] == {"skipped": True, "note": scorecard.NOT_SIGNALS_NOTE}
    assert metrics["baselines"]["majority"]["class"] in L.REGIME_NAMES
    assert set(metrics["baselines"]) == {"majority", "last_confirmed"}


def test_a_regime_model_predicts_classes_and_is_never_backtested(tmp_path: Path) -> None:
    from libs.pipeline.device import DeviceManager
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
    from libs.pipeline.predict import PredictError, backtest_window, predict_window
    from libs.pipeline.storage.models import ModelStorage

    install_real_data(tmp_path / "data", ("EURUSD", "1h"))
    pipeline = TrainingPipeline(data_dir=tmp_path / "data", storage=ModelStorage(tmp_path / "m"),
                                device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    result = pipeline.run(TrainingRequest(strategy_yaml=DOC % ("{source: regime}",
                                                               "num_classes: 4")))
    assert result.test_metrics["class_names"] == list(L.REGIME_NAMES)
    loaded = ModelStorage(tmp_path / "m").load(result.model.strategy, result.model.version)
    [predictions] = predict_window(loaded, data_dir=tmp_path / "data", start="2018-01-02")
    rows = predictions.rows()
    assert rows and all("signal" not in row and row["class"] in L.REGIME_NAMES for row in rows)
    assert {k for k in rows[0] if k.startswith("p_")} == {f"p_{n.lower()}" for n in L.REGIME_NAMES}
    assert abs(sum(v for k, v in rows[0].items() if k.startswith("p_")) - 1.0) < 1e-5
    assert not predictions.direction.any()
    with pytest.raises(PredictError, match="not BUY/HOLD/SELL signals"):
        backtest_window(loaded, [predictions])


def test_a_split_thinned_by_the_cusum_filter_names_the_cusum_key(tmp_path: Path) -> None:
    """A CUSUM threshold that keeps few bars leaves too few training rows: the error names the
    filter's key (the cause), not the data split."""
    from libs.pipeline.data import DataError
    from libs.pipeline.dataset import SplitError
    from libs.pipeline.device import DeviceManager
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
    from libs.pipeline.storage.models import ModelStorage

    install_real_data(tmp_path / "data", ("EURUSD", "1h"))
    pipeline = TrainingPipeline(data_dir=tmp_path / "data", storage=ModelStorage(tmp_path / "m"),
                                device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    labels = "{source: triple_barrier, max_holding_period: 12, vol_span: 24, cusum_threshold: %s}"
    with pytest.raises(SplitError) as caught:  # 26 events in 5,000 bars
        pipeline.run(TrainingRequest(strategy_yaml=DOC % (labels % 0.002, "")))
    assert caught.value.field == "training.labels.cusum_threshold"
    assert "CUSUM event filter" in str(caught.value) and "lower training.labels" in str(
        caught.value)
    with pytest.raises(DataError, match=r"CUSUM event filter \(training.labels.cusum_threshold"):
        pipeline.run(TrainingRequest(strategy_yaml=DOC % (labels % 0.5, "")))  # no event


# --- when a label is known, as a time -------------------------------------------------------------


@pytest.mark.parametrize("source", [*NEW_SOURCES, "zigzag", "forward_return"])
def test_known_times_are_the_times_of_the_known_bars(source: str) -> None:
    # The dataset asks for times straight away (the zigzag kernel writes them in its own
    # pass): they must be the bars' times of `known_at`, and `never` where there is no label.
    cfg = {**NEW_SOURCES, "zigzag": ZigZagLabels(zigzag_threshold=0.01),
           "forward_return": ForwardReturnLabels(horizon=7)}[source]
    prices = random_walk(3000, seed=4)
    bars = L.label_outcomes(prices, cfg)
    # unevenly spaced, so that a time is not its bar number shifted
    times = np.cumsum(np.random.default_rng(5).integers(1, 1000, len(prices)))
    never = np.iinfo(np.int64).max
    timed = L.label_outcomes(prices, cfg, bar_times=times, never=never)
    np.testing.assert_array_equal(timed.values, bars.values)
    assert (bars.known_at >= 0).any() and (bars.known_at < 0).any()
    expected = np.where(bars.known_at >= 0, times[np.maximum(bars.known_at, 0)], never)
    np.testing.assert_array_equal(timed.known_at, expected)


def test_bar_times_of_the_wrong_length_or_type_are_refused() -> None:
    prices = random_walk(50, seed=1)
    cfg = ZigZagLabels(zigzag_threshold=0.01)
    for times in (np.arange(49, dtype=np.int64), np.arange(50, dtype=np.float64)):
        with pytest.raises(ValueError, match="bar_times"):
            L.label_outcomes(prices, cfg, bar_times=times)
