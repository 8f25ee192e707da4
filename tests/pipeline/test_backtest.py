"""The signal backtest (libs/pipeline/backtest.py): hand-computed tiny cases and real EURUSD."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest

from libs.pipeline.backtest import (
    STATS,
    BacktestSettings,
    SymbolSignals,
    bars_per_year,
    directions_from_probabilities,
    directions_from_returns,
    run_backtest,
)

BUY, HOLD, SELL = 1, 0, -1


def _bars(
    opens: Sequence[float] | np.ndarray,
    closes: Sequence[float] | None = None,
    *,
    lows: dict[int, float] | None = None,
    highs: dict[int, float] | None = None,
    index: pd.DatetimeIndex | None = None,
) -> pd.DataFrame:
    """Hourly UTC bars; by default each close is the next open, high/low span open and close."""
    o = np.asarray(opens, dtype=np.float64)
    c = np.asarray(closes, dtype=np.float64) if closes is not None else np.append(o[1:], o[-1])
    if index is None:
        index = pd.date_range("2024-01-01", periods=len(o), freq="h", tz="UTC")
    frame = pd.DataFrame(
        {"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c}, index=index
    )
    for i, value in (lows or {}).items():
        frame.iloc[i, frame.columns.get_loc("low")] = value
    for i, value in (highs or {}).items():
        frame.iloc[i, frame.columns.get_loc("high")] = value
    return frame


def _symbol(
    prices: pd.DataFrame,
    directions: Sequence[int],
    confidence: Sequence[float] | None = None,
    *,
    name: str = "A",
    baselines: dict[str, Sequence[int] | np.ndarray] | None = None,
) -> SymbolSignals:
    """Signals on the first len(directions) bars of `prices`."""
    n = len(directions)
    conf = np.ones(n) if confidence is None else np.asarray(confidence, dtype=np.float64)
    signals = {"model": (np.asarray(directions, dtype=np.int8), conf)}
    for other, values in (baselines or {}).items():
        signals[other] = (np.asarray(values, dtype=np.int8), np.ones(n))
    return SymbolSignals(symbol=name, prices=prices, times=prices.index[:n], signals=signals)


def _settings(**kwargs: Any) -> BacktestSettings:
    base: dict[str, Any] = {"cost_per_turnover": 0.0, "bootstrap_resamples": 50}
    return BacktestSettings(**{**base, **kwargs})


def _bar_returns(result: dict[str, Any], name: str = "model") -> np.ndarray:
    """The net bar returns, back from the equity curve (all points kept below 500 bars)."""
    equity = np.asarray(result["equity"][name], dtype=np.float64)
    return equity[1:] / equity[:-1] - 1.0


def _random_walk(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    opens = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    return _bars(opens)


# ----------------------------------------------------------------------------- execution


def test_fills_on_the_next_bar_and_the_last_rows_do_not_trade() -> None:
    opens = [100.0, 101.0, 103.0, 102.0, 104.0, 104.0, 105.0]
    prices = _bars(opens)
    result = run_backtest([_symbol(prices, [BUY] * 7)], _settings())
    # Rows 5 and 6 lack the next bar or the bar after: 5 rows trade, bars open[1] -> open[6].
    assert result["bars"] == 5
    expected = [opens[j + 1] / opens[j] - 1 for j in range(1, 6)]
    np.testing.assert_allclose(_bar_returns(result), expected, rtol=1e-12)
    assert result["equity"]["time"][0] == prices.index[1].isoformat()
    assert result["equity"]["time"][-1] == prices.index[6].isoformat()

    last_only = run_backtest([_symbol(prices, [HOLD] * 6 + [BUY])], _settings())
    assert last_only["strategies"]["model"]["trades"] == 0
    assert last_only["strategies"]["model"]["net_return"] == 0.0
    last_traded = run_backtest([_symbol(prices, [HOLD] * 4 + [BUY])], _settings())
    assert last_traded["strategies"]["model"]["trades"] == 1
    assert last_traded["strategies"]["model"]["net_return"] == pytest.approx(105 / 104 - 1)


def test_perfect_foresight_of_the_signal_bar_earns_nothing_from_it() -> None:
    opens = [100.0, 102.0, 100.0, 102.0, 100.0, 102.0, 100.0]
    prices = _bars(opens)  # close[t] = open[t + 1]
    own_move = np.sign(prices["close"] - prices["open"]).astype(int).tolist()[:5]
    assert own_move == [BUY, SELL, BUY, SELL, BUY]
    result = run_backtest([_symbol(prices, own_move)], _settings())
    # Filled at open[t+1], the position earns the NEXT move, which reverses every bar.
    expected = [100 / 102 - 1, -(102 / 100 - 1), 100 / 102 - 1, -(102 / 100 - 1), 100 / 102 - 1]
    np.testing.assert_allclose(_bar_returns(result), expected, rtol=1e-12)
    model = result["strategies"]["model"]
    assert model["gross_return"] == pytest.approx(np.prod(np.add(expected, 1)) - 1)
    assert model["gross_return"] < 0
    assert model["hit_rate"] == 0.0


def test_next_close_fills_at_the_next_close() -> None:
    closes = [10.0, 11.0, 12.0, 11.0, 13.0]
    prices = _bars([10.0, 10.5, 11.5, 12.5, 11.5], closes)
    result = run_backtest([_symbol(prices, [BUY] * 3)], _settings(execution="next_close"))
    expected = [closes[j + 1] / closes[j] - 1 for j in range(1, 4)]
    np.testing.assert_allclose(_bar_returns(result), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- costs


def test_costs_are_turnover_times_the_rate() -> None:
    assert BacktestSettings().cost_per_turnover == 0.0001  # the documented default: 1 bp
    prices = _bars([100.0] * 6)
    settings = _settings(cost_per_turnover=0.001, slippage=0.0005)
    result = run_backtest([_symbol(prices, [BUY, SELL, HOLD, BUY])], settings)
    model = result["strategies"]["model"]
    # |Δposition| per fill: 0->1, 1->-1, -1->0, 0->1, then the close 1->0 at the end.
    assert model["turnover"] == 6.0
    assert model["trades"] == 3
    costs = np.array([1.0, 2.0, 1.0, 1.0 + 1.0]) * 0.0015
    np.testing.assert_allclose(_bar_returns(result), -costs, rtol=1e-9)
    assert model["gross_return"] == 0.0
    assert model["net_return"] == pytest.approx(np.prod(1 - costs) - 1, rel=1e-12)
    assert model["hit_rate"] == 0.0  # every trade only paid costs


def test_buy_and_hold_is_the_path_return_minus_two_costs() -> None:
    prices = _random_walk(30, seed=3)
    rng = np.random.default_rng(4)
    directions = rng.integers(-1, 2, 28).tolist()
    for execution, column in (("next_open", "open"), ("next_close", "close")):
        settings = _settings(cost_per_turnover=0.0002, execution=execution)
        result = run_backtest([_symbol(prices, directions)], settings)
        path = prices[column].to_numpy()
        bars = path[2:30] / path[1:29] - 1  # fills 1..29
        net = bars.copy()
        net[0] -= 0.0002
        net[-1] -= 0.0002
        hold = result["strategies"]["buy_and_hold"]
        assert hold["gross_return"] == pytest.approx(path[29] / path[1] - 1, rel=1e-9)
        assert hold["net_return"] == pytest.approx(np.prod(1 + net) - 1, rel=1e-9)
        assert hold["turnover"] == 2.0
        assert hold["trades"] == 1
        assert hold["exposure"] == 1.0
        np.testing.assert_allclose(_bar_returns(result, "buy_and_hold"), net, rtol=1e-7)


# ----------------------------------------------------------------------------- position rules


def test_sell_flat_never_goes_short() -> None:
    prices = _bars([100.0, 100.0, 90.0, 81.0, 81.0, 90.0])
    signals = [BUY, SELL, SELL, BUY]
    flat = run_backtest([_symbol(prices, signals)], _settings(sell="flat"))
    np.testing.assert_allclose(_bar_returns(flat), [-0.1, 0.0, 0.0, 90 / 81 - 1], atol=1e-12)
    assert flat["strategies"]["model"]["exposure"] == 0.5
    assert flat["strategies"]["model"]["trades"] == 2
    short = run_backtest([_symbol(prices, signals)], _settings(sell="short"))
    np.testing.assert_allclose(_bar_returns(short), [-0.1, 0.1, 0.0, 90 / 81 - 1], atol=1e-12)
    assert short["strategies"]["model"]["exposure"] == 1.0


def test_hold_flat_or_keep() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(6))  # +1% a bar: the returns show the position
    signals = [BUY, HOLD, HOLD, SELL]
    flat = run_backtest([_symbol(prices, signals)], _settings(hold="flat"))
    np.testing.assert_allclose(_bar_returns(flat), [0.01, 0.0, 0.0, -0.01], atol=1e-12)
    keep = run_backtest([_symbol(prices, signals)], _settings(hold="keep"))
    np.testing.assert_allclose(_bar_returns(keep), [0.01, 0.01, 0.01, -0.01], atol=1e-12)


def test_confidence_below_the_threshold_is_hold() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(6))
    result = run_backtest(
        [_symbol(prices, [BUY] * 4, [0.9, 0.4, 0.9, 0.4])], _settings(confidence_threshold=0.5)
    )
    np.testing.assert_allclose(_bar_returns(result), [0.01, 0.0, 0.01, 0.0], atol=1e-12)
    assert result["strategies"]["model"]["trades"] == 2
    none = run_backtest(
        [_symbol(prices, [BUY] * 4, [0.4] * 4)], _settings(confidence_threshold=0.5)
    )
    model = none["strategies"]["model"]
    assert (model["trades"], model["turnover"], model["exposure"]) == (0, 0.0, 0.0)
    assert model["sharpe"] is None  # a flat line has no Sharpe ratio: None, never NaN
    assert model["hit_rate"] is None


def test_min_signal_separation_ignores_changes_too_soon() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(8))
    signals = [BUY, SELL, BUY, SELL, BUY, SELL]
    free = run_backtest([_symbol(prices, signals)], _settings())
    assert free["strategies"]["model"]["turnover"] == 12.0
    assert free["strategies"]["model"]["trades"] == 6
    spaced = run_backtest([_symbol(prices, signals)], _settings(min_signal_separation=2))
    # Changes at bars 1 and 4 only (3 bars apart > 2): long, long, long, short, short, short.
    np.testing.assert_allclose(_bar_returns(spaced), [0.01] * 3 + [-0.01] * 3, atol=1e-12)
    assert spaced["strategies"]["model"]["turnover"] == 4.0
    assert spaced["strategies"]["model"]["trades"] == 2
    # N = 1: a change on the very next bar is ignored, one a bar later is taken.
    one = run_backtest([_symbol(prices, [BUY, SELL, SELL])], _settings(min_signal_separation=1))
    np.testing.assert_allclose(_bar_returns(one), [0.01, 0.01, -0.01], atol=1e-12)


def test_stop_loss_exits_at_its_level_then_waits_for_a_new_target() -> None:
    opens = [100.0, 100.0, 99.0, 99.0, 99.0, 98.0, 97.0]
    prices = _bars(opens, lows={1: 97.0})  # long from open[1] = 100: the 2% stop is 98
    result = run_backtest([_symbol(prices, [BUY, BUY, BUY, SELL, SELL])], _settings(stop_loss=0.02))
    expected = [-0.02, 0.0, 0.0, -(98 / 99 - 1), -(97 / 98 - 1)]
    np.testing.assert_allclose(_bar_returns(result), expected, atol=1e-12)
    model = result["strategies"]["model"]
    assert model["trades"] == 2
    assert model["exposure"] == pytest.approx(0.6)
    assert model["hit_rate"] == 0.5
    # buy_and_hold has no stops.
    hold = [opens[j + 1] / opens[j] - 1 for j in range(1, 6)]
    np.testing.assert_allclose(_bar_returns(result, "buy_and_hold"), hold, atol=1e-12)


def test_stop_loss_gapped_through_exits_at_the_open() -> None:
    prices = _bars([100.0, 100.0, 95.0, 95.0, 95.0], [100.0, 99.5, 95.0, 95.0, 95.0])
    result = run_backtest([_symbol(prices, [BUY] * 3)], _settings(stop_loss=0.02))
    np.testing.assert_allclose(_bar_returns(result), [-0.05, 0.0, 0.0], atol=1e-12)
    assert result["strategies"]["model"]["turnover"] == 2.0


def test_take_profit_and_short_stop() -> None:
    prices = _bars([100.0] * 5, highs={1: 104.0})
    long = run_backtest([_symbol(prices, [BUY] * 3)], _settings(take_profit=0.03))
    np.testing.assert_allclose(_bar_returns(long), [0.03, 0.0, 0.0], atol=1e-12)
    short = run_backtest([_symbol(prices, [SELL] * 3)], _settings(stop_loss=0.01))
    np.testing.assert_allclose(_bar_returns(short), [-0.01, 0.0, 0.0], atol=1e-12)


def test_max_portfolio_risk_scales_the_position_down() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(5))
    settings = _settings(stop_loss=0.02, max_portfolio_risk=0.01)
    result = run_backtest([_symbol(prices, [BUY] * 3)], settings)
    assert result["settings"]["position_size_used"] == pytest.approx(0.5)
    assert result["settings"]["position_size_scaled"] is True
    assert result["settings"]["position_size"] == 1.0
    np.testing.assert_allclose(_bar_returns(result), [0.005] * 3, atol=1e-12)
    assert result["strategies"]["model"]["turnover"] == pytest.approx(1.0)


def test_window_limits_the_traded_rows() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(8))
    window = (prices.index[1].isoformat(), prices.index[3].isoformat())
    result = run_backtest([_symbol(prices, [BUY] * 6)], _settings(window=window))
    assert result["bars"] == 3
    assert result["equity"]["time"][0] == prices.index[2].isoformat()
    assert result["settings"]["window"] == list(window)


def test_no_tradable_rows() -> None:
    prices = _bars([100.0, 101.0, 102.0])
    result = run_backtest(
        [
            SymbolSignals(
                symbol="A",
                prices=prices,
                times=prices.index[1:],
                signals={"model": (np.array([BUY, BUY], dtype=np.int8), np.ones(2))},
            )
        ],
        _settings(),
    )
    assert result["note"] == "no test rows to trade"
    assert result["bars"] == 0
    assert result["settings"]["cost_per_turnover"] == 0.0
    json.dumps(result, allow_nan=False)


def test_rows_out_of_time_order_are_sorted_with_their_signals() -> None:
    prices = _bars(100.0 * 1.01 ** np.arange(6))
    ordered = run_backtest([_symbol(prices, [BUY, HOLD, SELL, BUY])], _settings())
    shuffled = [3, 0, 2, 1]
    directions = np.array([BUY, HOLD, SELL, BUY], dtype=np.int8)[shuffled]
    symbol = SymbolSignals(
        symbol="A",
        prices=prices,
        times=prices.index[shuffled],
        signals={"model": (directions, np.ones(4))},
    )
    result = run_backtest([symbol], _settings())
    np.testing.assert_allclose(_bar_returns(result), [0.01, 0.0, -0.01, 0.01], atol=1e-12)
    assert result["strategies"] == ordered["strategies"]


def test_inputs_are_checked() -> None:
    prices = _bars([100.0] * 5)
    with pytest.raises(ValueError, match="model"):
        run_backtest(
            [
                SymbolSignals(
                    symbol="A",
                    prices=prices,
                    times=prices.index[:2],
                    signals={"other": (np.ones(2, dtype=np.int8), np.ones(2))},
                )
            ],
            _settings(),
        )
    with pytest.raises(ValueError, match="stop_loss"):
        run_backtest([_symbol(prices, [BUY])], _settings(stop_loss=1.5))


# ----------------------------------------------------------------------------- portfolio


def test_two_symbols_are_averaged_on_the_union_of_bar_times() -> None:
    hours = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")
    a_open = [100.0, 101.0, 102.0, 101.0, 103.0, 104.0]
    b_open = [50.0, 51.0, 49.0, 50.0, 52.0, 51.0]
    a = _bars(a_open, index=hours[:6])  # hours 0..5
    b = _bars(b_open, index=hours[[0, 1, 2, 4, 5, 6]])  # no bar at hour 3
    result = run_backtest(
        [_symbol(a, [BUY] * 4, name="A"), _symbol(b, [BUY] * 4, name="B")], _settings()
    )
    ra = [a_open[j + 1] / a_open[j] - 1 for j in range(1, 5)]  # ends at hours 2, 3, 4, 5
    rb = [b_open[j + 1] / b_open[j] - 1 for j in range(1, 5)]  # ends at hours 2, 4, 5, 6
    expected = [
        (ra[0] + rb[0]) / 2,
        ra[1] / 2,
        (ra[2] + rb[1]) / 2,
        (ra[3] + rb[2]) / 2,
        rb[3] / 2,
    ]
    assert result["bars"] == 5
    assert result["symbols"] == ["A", "B"]
    assert result["equity"]["time"] == [hours[i].isoformat() for i in (1, 2, 3, 4, 5, 6)]
    np.testing.assert_allclose(_bar_returns(result), expected, rtol=1e-12)
    model = result["strategies"]["model"]
    assert model["trades"] == 2  # summed over symbols
    assert model["turnover"] == 2.0  # averaged: 2 per symbol
    assert result["per_symbol"]["A"]["bars"] == 4
    a_alone = result["per_symbol"]["A"]["strategies"]["model"]["net_return"]
    assert a_alone == pytest.approx(np.prod(np.add(ra, 1)) - 1)


# ----------------------------------------------------------------------------- figures


def _random_case(seed: int = 11, n: int = 300) -> list[SymbolSignals]:
    prices = _random_walk(n, seed)
    rng = np.random.default_rng(seed + 1)
    rows = n - 20
    return [
        _symbol(
            prices,
            rng.integers(-1, 2, rows).tolist(),
            rng.random(rows).tolist(),
            baselines={"majority": [BUY] * rows, "last_confirmed": rng.integers(-1, 2, rows)},
        )
    ]


def test_risk_figures_are_empyricals_on_the_net_returns() -> None:
    symbols = _random_case()
    result = run_backtest(symbols, BacktestSettings(confidence_threshold=0.3))
    per_year = bars_per_year(symbols[0].prices.index)
    assert result["settings"]["annualization"] == pytest.approx(per_year)
    assert per_year == pytest.approx(24 * 365.25)  # hourly without gaps
    assert set(result["strategies"]) == {"model", "buy_and_hold", "majority", "last_confirmed"}
    for name, stats in result["strategies"].items():
        assert tuple(stats) == STATS
        net = _bar_returns(result, name)
        assert len(net) == stats["bars"] == result["bars"]
        assert stats["sharpe"] == pytest.approx(
            empyrical.sharpe_ratio(net, annualization=per_year), rel=1e-6
        )
        assert stats["sortino"] == pytest.approx(
            empyrical.sortino_ratio(net, annualization=per_year), rel=1e-6
        )
        assert stats["max_drawdown"] == pytest.approx(empyrical.max_drawdown(net), rel=1e-6)
        assert stats["annual_return"] == pytest.approx(
            empyrical.annual_return(net, annualization=per_year), rel=1e-6
        )
        assert stats["net_return"] == pytest.approx(np.prod(1 + net) - 1, rel=1e-9, abs=1e-12)
        assert stats["net_return"] <= stats["gross_return"]


def test_lift_bootstrap_is_seeded_and_contains_the_estimate() -> None:
    symbols = _random_case()
    first = run_backtest(symbols, _settings(seed=5, bootstrap_resamples=200))
    again = run_backtest(symbols, _settings(seed=5, bootstrap_resamples=200))
    other = run_backtest(symbols, _settings(seed=6, bootstrap_resamples=200))
    assert first["lift"] == again["lift"]
    assert first["lift"] != other["lift"]
    assert set(first["lift"]) == {"buy_and_hold", "majority", "last_confirmed"}
    model = _bar_returns(first)
    for name, lift in first["lift"].items():
        diff = model - _bar_returns(first, name)
        assert lift["mean_bar_return"] == pytest.approx(diff.mean(), rel=1e-6, abs=1e-12)
        assert lift["annualised"] == pytest.approx(
            lift["mean_bar_return"] * first["settings"]["annualization"]
        )
        lo, hi = lift["ci95"]
        assert lo <= lift["mean_bar_return"] <= hi
        assert lo < hi
    assert first["bootstrap"] == {
        "method": "moving_block",
        "block": round(np.sqrt(first["bars"])),
        "resamples": 200,
        "seed": 5,
    }


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return value is None or isinstance(value, str | int)


def test_the_result_is_strict_json_and_the_equity_is_downsampled() -> None:
    symbols = _random_case(n=1200)
    result = run_backtest(symbols, BacktestSettings(stop_loss=0.01, initial_capital=1000.0))
    json.dumps(result, allow_nan=False)
    assert _plain(result)
    equity = result["equity"]
    assert len(equity["time"]) == 500
    assert set(equity) == {"time", "model", "buy_and_hold", "majority", "last_confirmed"}
    assert equity["model"][0] == 1000.0
    last = 1000.0 * (1 + result["strategies"]["model"]["net_return"])
    assert equity["model"][-1] == pytest.approx(last)
    end = symbols[0].prices.index[symbols[0].prices.index.get_loc(symbols[0].times[-1]) + 2]
    assert equity["time"][-1] == end.isoformat()


# ----------------------------------------------------------------------------- helpers


def test_directions_from_probabilities_and_returns() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    direction, confidence = directions_from_probabilities(probs)
    assert direction.dtype == np.int8
    assert direction.tolist() == [BUY, HOLD, SELL]
    np.testing.assert_allclose(confidence, [0.6, 0.5, 0.7])
    direction, confidence = directions_from_returns(np.array([0.02, -0.01, 0.0, np.nan]))
    assert direction.tolist() == [BUY, SELL, HOLD, HOLD]
    assert confidence.tolist() == [1.0] * 4
    with pytest.raises(ValueError):
        directions_from_probabilities(np.ones((2, 2)))


def test_bars_per_year_of_daily_stocks() -> None:
    from backtesting.test import GOOG

    assert 240 < bars_per_year(pd.DatetimeIndex(GOOG.index)) < 260
    assert np.isnan(bars_per_year(pd.DatetimeIndex([pd.Timestamp("2024-01-01")])))


# ----------------------------------------------------------------------------- real data


def test_real_eurusd_hourly_with_a_random_signal() -> None:
    from backtesting.test import EURUSD

    prices = EURUSD.rename(columns=str.lower)[["open", "high", "low", "close"]].astype(float)
    prices.index = pd.DatetimeIndex(prices.index).tz_localize("UTC")
    times = prices.index[-1500:]  # the last rows cannot all trade: fills need later bars
    rng = np.random.default_rng(0)
    direction = rng.integers(-1, 2, len(times)).astype(np.int8)
    confidence = rng.random(len(times))
    symbol = SymbolSignals(
        symbol="EURUSD",
        prices=prices,
        times=times,
        signals={
            "model": (direction, confidence),
            "majority": (np.ones_like(direction), np.ones(len(times))),
        },
    )
    result = run_backtest([symbol], BacktestSettings(confidence_threshold=0.2))
    per_year = result["settings"]["annualization"]
    assert 5000 < per_year < 7000
    assert result["bars"] == len(times) - 2
    model = result["strategies"]["model"]
    assert model["net_return"] < model["gross_return"]
    assert model["trades"] > 100
    assert 0.0 < model["exposure"] < 1.0
    assert 0.0 <= model["hit_rate"] <= 1.0
    json.dumps(result, allow_nan=False)
