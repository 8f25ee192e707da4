"""A costs-aware backtest of trading signals, pure (numpy, pandas, empyrical, arch).

The model (and each baseline) gives, per test row, a direction (+1 BUY, 0 HOLD, -1 SELL) and a
confidence. `run_backtest` turns those into positions, trades them on the symbol's own bars and
reports risk figures, the model's lift over every other strategy and an equity curve.

Rules
-----
- Execution: a signal at bar t is decided at t's close and filled on the NEXT bar, at open[t+1]
  (`execution="next_open"`, the default) or close[t+1] (`"next_close"`); never at bar t. The
  position then earns the fill-to-fill return of the symbol's own bars (open-to-open or
  close-to-close). Between two test rows the position is held over the bars in between. A row
  whose next bar (or the bar after, for the return) is not in `prices` is not traded; the
  position is closed at the last available fill. Only rows inside `window` (ISO bounds, both
  inclusive, pandas partial-string semantics: ("2024-01", "2024-03") is January to March) trade.
- Positions: BUY targets +position_size, SELL -position_size (`sell="short"`) or 0 (`"flat"`:
  it only closes a long), HOLD 0 (`hold="flat"`) or the current position (`"keep"`). A signal
  whose confidence is below `confidence_threshold` (or not finite) is a HOLD. With
  `min_signal_separation=N`, a position change within N bars of the previous change (signal or
  stop) is ignored. The position is a fraction of the sleeve's current equity (rebalanced each
  bar, at no cost).
- Costs: every fill charges |Δposition| * (cost_per_turnover + slippage) of the sleeve's equity,
  subtracted from the return of the bar that starts at that fill (stops and the final close: the
  bar they end). The DEFAULT cost is 1 bp (0.0001) per unit of turnover, no slippage: a round
  trip of a full position costs 2 bp.
- Stops: while in a position, each held bar's low (long) / high (short) is checked against
  entry * (1 ∓ stop_loss) and entry * (1 ± take_profit). The position exits at that level, or at
  the bar's open where the open gapped through it; where both levels lie inside one bar the stop
  loss is assumed first. After an exit the sleeve stays flat until the target changes (a signal
  other than the stopped direction). Stop exits ignore `min_signal_separation`.
  `max_portfolio_risk` caps position_size * (stop_loss or 1); a larger position_size is scaled
  down to fit (`settings.position_size_used`, `settings.position_size_scaled`).
- The last position is closed at the end (its cost charged). "buy_and_hold" is always added:
  long position_size from the first traded row's fill to the end, entry and exit cost charged,
  no stops.
- Symbols: each is a sleeve with equal capital; the portfolio's bar return is the mean over all
  symbols on the union of their bar times (a symbol without a bar then, or without any tradable
  row, contributes 0, as idle cash). Bars are labelled by the time of the bar whose fill ends
  them. Test rows given out of time order are sorted, with their signals.

Figures per strategy (`STATS`): gross/net total compounded return; annual_return, sharpe,
sortino and max_drawdown (empyrical's sign: <= 0) of the net bar returns, annualised with
`bars_per_year` of the prices (the mean over symbols); hit_rate: share of closed trades whose
compounded net P&L (costs included) is positive (None without trades); turnover: sum of
|Δposition| per symbol, averaged over symbols; trades: entries into a non-zero position (a flip
counts), summed; exposure: share of (symbol, bar) pairs with a non-zero position at the bar's
start. The lift of the model over each other strategy is the mean per-bar difference of net
returns, with a 95% percentile interval from a moving block bootstrap (arch) of that difference,
seeded by `settings.seed`. Non-finite figures are None: the result is plain JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import empyrical
import numpy as np
import pandas as pd
from arch.bootstrap import MovingBlockBootstrap

Direction = np.ndarray  # int8 per row: +1 BUY, 0 HOLD, -1 SELL (the model's intent)

STATS: tuple[str, ...] = (
    "gross_return",
    "net_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "hit_rate",
    "turnover",
    "trades",
    "exposure",
    "bars",
)
MODEL = "model"
BUY_AND_HOLD = "buy_and_hold"
NO_ROWS_NOTE = "no test rows to trade"
MAX_EQUITY_POINTS = 500
PRICE_COLUMNS = ("open", "high", "low", "close")
_YEAR = pd.Timedelta(days=365.25)


@dataclass(frozen=True, kw_only=True)
class BacktestSettings:
    """How signals become positions and what they cost (see the module docstring)."""

    execution: Literal["next_open", "next_close"] = "next_open"
    cost_per_turnover: float = 0.0001  # fraction of notional per unit of |Δposition| (1 bp)
    slippage: float = 0.0  # added to cost_per_turnover
    confidence_threshold: float = 0.0  # a signal whose confidence < threshold is HOLD
    sell: Literal["short", "flat"] = "short"  # SELL goes short, or only closes a long
    hold: Literal["flat", "keep"] = "flat"  # HOLD goes flat, or keeps the current position
    min_signal_separation: int = 0  # bars that must pass after a position change
    position_size: float = 1.0  # exposure per symbol sleeve (fraction of its capital)
    stop_loss: float | None = None  # fraction from the entry price, e.g. 0.02
    take_profit: float | None = None
    max_portfolio_risk: float | None = None  # cap on position_size * (stop_loss or 1)
    initial_capital: float = 1.0
    window: tuple[str | None, str | None] = (None, None)  # ISO bounds of the traded rows
    bootstrap_resamples: int = 1000
    bootstrap_block: int | None = None  # None: round(sqrt(bars)), at least 1
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SymbolSignals:
    """One symbol's bars and the signals of each strategy on its test rows."""

    symbol: str
    prices: pd.DataFrame  # full base-timeframe bars: UTC index, open/high/low/close floats
    times: pd.DatetimeIndex  # the test rows (unique, each in prices.index; sorted if not)
    signals: Mapping[str, tuple[np.ndarray, np.ndarray]]  # name -> (direction, confidence)


# ----------------------------------------------------------------------------- signal helpers


def directions_from_probabilities(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) class probabilities (0 BUY, 1 HOLD, 2 SELL) -> (direction int8, max probability)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != 3:
        raise ValueError(f"probabilities must have shape (n, 3), got {probs.shape}")
    direction = np.array([1, 0, -1], dtype=np.int8)[np.argmax(probs, axis=1)]
    return direction, probs.max(axis=1) if len(probs) else np.zeros(0)


def directions_from_returns(predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regression: the sign of the predicted return (NaN: HOLD); confidence 1.0 throughout."""
    values = np.nan_to_num(np.asarray(predicted, dtype=np.float64).reshape(-1), nan=0.0)
    return np.sign(values).astype(np.int8), np.ones(len(values))


def bars_per_year(index: pd.DatetimeIndex) -> float:
    """(len - 1) / span in years of 365.25 days; NaN with fewer than 2 bars or no span."""
    if len(index) < 2:
        return float("nan")
    span = (index[-1] - index[0]) / _YEAR
    return float((len(index) - 1) / span) if span > 0 else float("nan")


# ----------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class _Rules:
    """The settings resolved for the simulation."""

    size: float
    rate: float  # cost per unit of turnover, slippage included
    short: bool
    keep: bool
    separation: int
    stop_loss: float | None
    take_profit: float | None


@dataclass(frozen=True)
class _Market:
    """One symbol's traded bars: bar b runs from the fill at price bar js[b] to js[b] + 1."""

    symbol: str
    js: np.ndarray  # price-bar index of each bar's starting fill
    fill: np.ndarray  # the fill price at the start of each bar
    ret: np.ndarray  # fill-to-fill return of each bar
    bar_open: np.ndarray  # open/high/low of the bar held during each bar (for the stops)
    bar_high: np.ndarray
    bar_low: np.ndarray
    row_at: np.ndarray  # traded row filled at the start of each bar, or -1
    times: pd.DatetimeIndex  # each bar's end (the time of the bar whose fill ends it)
    start: pd.Timestamp  # the first fill
    per_year: float
    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (target per row, keep per row)


@dataclass
class _Path:
    """One strategy on one symbol."""

    gross: np.ndarray
    net: np.ndarray
    position: np.ndarray  # position held at each bar's start
    turnover: float = 0.0
    trades: int = 0
    wins: int = 0
    closed: int = 0


def _validate(settings: BacktestSettings) -> None:
    checks = {
        "execution": settings.execution in ("next_open", "next_close"),
        "sell": settings.sell in ("short", "flat"),
        "hold": settings.hold in ("flat", "keep"),
        "cost_per_turnover": np.isfinite(settings.cost_per_turnover)
        and settings.cost_per_turnover >= 0,
        "slippage": np.isfinite(settings.slippage) and settings.slippage >= 0,
        "min_signal_separation": settings.min_signal_separation >= 0,
        "position_size": np.isfinite(settings.position_size) and settings.position_size > 0,
        "stop_loss": settings.stop_loss is None or 0 < settings.stop_loss < 1,
        "take_profit": settings.take_profit is None or settings.take_profit > 0,
        "max_portfolio_risk": settings.max_portfolio_risk is None
        or settings.max_portfolio_risk > 0,
        "initial_capital": np.isfinite(settings.initial_capital) and settings.initial_capital > 0,
        "bootstrap_resamples": settings.bootstrap_resamples >= 1,
        "bootstrap_block": settings.bootstrap_block is None or settings.bootstrap_block >= 1,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"invalid backtest settings: {', '.join(bad)}")


def _position_size(settings: BacktestSettings) -> float:
    """position_size, scaled down so that position_size * (stop_loss or 1) <= the risk cap."""
    cap = settings.max_portfolio_risk
    unit_risk = settings.stop_loss or 1.0
    if cap is not None and settings.position_size * unit_risk > cap:
        return cap / unit_risk
    return settings.position_size


def _rules(settings: BacktestSettings) -> _Rules:
    return _Rules(
        size=_position_size(settings),
        rate=settings.cost_per_turnover + settings.slippage,
        short=settings.sell == "short",
        keep=settings.hold == "keep",
        separation=int(settings.min_signal_separation),
        stop_loss=settings.stop_loss,
        take_profit=settings.take_profit,
    )


def _targets(
    direction: np.ndarray, confidence: np.ndarray, threshold: float, rules: _Rules
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the target position and whether the row keeps the current position."""
    d = np.asarray(direction).astype(np.int64).reshape(-1)
    if not np.isin(d, (-1, 0, 1)).all():
        raise ValueError("directions must be +1 (BUY), 0 (HOLD) or -1 (SELL)")
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hold = (d == 0) | ~(conf >= threshold)
    short = -rules.size if rules.short else 0.0
    target = np.where(hold, 0.0, np.where(d > 0, rules.size, short))
    return target, hold & rules.keep


def _check_symbol(sym: SymbolSignals) -> np.ndarray:
    """Validates one symbol's inputs; returns the price-bar index of each test row."""
    missing = [c for c in PRICE_COLUMNS if c not in sym.prices.columns]
    if missing:
        raise ValueError(f"{sym.symbol}: prices lack columns {missing}")
    index = sym.prices.index
    if not (index.is_unique and index.is_monotonic_increasing):
        raise ValueError(f"{sym.symbol}: prices index must be sorted and unique")
    times = pd.DatetimeIndex(sym.times)
    if not times.is_unique:
        raise ValueError(f"{sym.symbol}: times must be unique")
    rows = index.get_indexer(times)
    if (rows < 0).any():
        raise ValueError(f"{sym.symbol}: {(rows < 0).sum()} test rows are not in prices.index")
    if MODEL not in sym.signals or BUY_AND_HOLD in sym.signals:
        raise ValueError(f"{sym.symbol}: signals need {MODEL!r} and must not name {BUY_AND_HOLD!r}")
    for name, (direction, confidence) in sym.signals.items():
        if len(direction) != len(times) or len(confidence) != len(times):
            raise ValueError(f"{sym.symbol}: signals {name!r} must have one value per test row")
    return np.asarray(rows, dtype=np.int64)


def _traded(times: pd.DatetimeIndex, rows: np.ndarray, n_prices: int, window: Any) -> np.ndarray:
    """Positions (into times) of the rows that trade: inside the window, with two bars after."""
    start, end = window
    in_window = np.zeros(len(times), dtype=bool)
    in_window[times.slice_indexer(start, end)] = True
    return np.flatnonzero(in_window & (rows + 2 <= n_prices - 1))


def _market(sym: SymbolSignals, settings: BacktestSettings, rules: _Rules) -> _Market | None:
    """The symbol's traded bars, or None where none of its rows trades."""
    rows = _check_symbol(sym)
    order = np.argsort(np.asarray(rows), kind="stable")  # rows given out of time order: sorted
    times = pd.DatetimeIndex(sym.times)[order]
    keep_rows = order[_traded(times, rows[order], len(sym.prices), settings.window)]
    if len(keep_rows) == 0:
        return None
    prices = sym.prices
    column = "open" if settings.execution == "next_open" else "close"
    price = prices[column].to_numpy(dtype=np.float64)
    fills = rows[keep_rows] + 1
    js = np.arange(fills[0], fills[-1] + 1)
    held = js if settings.execution == "next_open" else js + 1
    row_at = np.full(len(js), -1, dtype=np.int64)
    row_at[fills - fills[0]] = np.arange(len(fills))
    return _Market(
        symbol=sym.symbol,
        js=js,
        fill=price[js],
        ret=price[js + 1] / price[js] - 1.0,
        bar_open=prices["open"].to_numpy(dtype=np.float64)[held],
        bar_high=prices["high"].to_numpy(dtype=np.float64)[held],
        bar_low=prices["low"].to_numpy(dtype=np.float64)[held],
        row_at=row_at,
        times=pd.DatetimeIndex(prices.index[js + 1]),
        start=pd.Timestamp(prices.index[js[0]]),
        per_year=bars_per_year(pd.DatetimeIndex(prices.index)),
        rows={
            name: _targets(
                np.asarray(d)[keep_rows],
                np.asarray(c)[keep_rows],
                settings.confidence_threshold,
                rules,
            )
            for name, (d, c) in sym.signals.items()
        },
    )


# ----------------------------------------------------------------------------- simulation


class _Sleeve:
    """Walks one strategy over one symbol's bars: signals, separation, stops and costs."""

    def __init__(
        self, market: _Market, rows: tuple[np.ndarray, np.ndarray], rules: _Rules, stops: bool
    ) -> None:
        self.m = market
        self.targets, self.keeps = rows
        self.rules = rules
        self.stops = stops and (rules.stop_loss is not None or rules.take_profit is not None)
        n = len(market.js)
        self.path = _Path(gross=np.zeros(n), net=np.zeros(n), position=np.zeros(n))
        self.pos = 0.0
        self.entry = 0.0
        self.last_change: int | None = None
        self.blocked: float | None = None  # the stopped position, until the target changes
        self.trade = 1.0  # compounded net growth of the open trade

    def run(self) -> _Path:
        last = len(self.m.js) - 1
        for b in range(last + 1):
            cost = self._signal(b)
            self.path.position[b] = self.pos
            gross = 0.0
            if self.pos != 0.0:
                gross, exit_cost = self._hold(b)
                cost += exit_cost
            if b == last and self.pos != 0.0:  # the end: close at the last fill
                cost += self._change(0.0, int(self.m.js[b]) + 1)
            self.path.gross[b] = gross
            self.path.net[b] = gross - cost
        return self.path

    def _desired(self, target: float, keep: bool) -> float:
        if keep:
            return self.pos
        if self.blocked is not None:
            if target == self.blocked:
                return 0.0
            self.blocked = None
        return target

    def _signal(self, b: int) -> float:
        """The signal filled at the start of bar b, if any; returns its cost."""
        k = int(self.m.row_at[b])
        if k < 0:
            return 0.0
        new = self._desired(float(self.targets[k]), bool(self.keeps[k]))
        j = int(self.m.js[b])
        free = self.last_change is None or j - self.last_change > self.rules.separation
        if new == self.pos or not free:
            return 0.0
        self.entry = float(self.m.fill[b])
        return self._change(new, j)

    def _hold(self, b: int) -> tuple[float, float]:
        """(gross return, exit cost) of holding the position over bar b."""
        exit_price = self._stop_price(b) if self.stops else None
        if exit_price is None:
            gross = self.pos * float(self.m.ret[b])
            self.trade *= 1.0 + gross
            return gross, 0.0
        gross = self.pos * (exit_price / float(self.m.fill[b]) - 1.0)
        self.trade *= 1.0 + gross
        stopped = self.pos
        cost = self._change(0.0, int(self.m.js[b]))
        self.blocked = stopped
        return gross, cost

    def _change(self, new: float, j: int) -> float:
        """Moves the position to `new` at price bar j; returns the cost (fraction of equity)."""
        rate = self.rules.rate
        if self.pos != 0.0:  # the open trade ends here
            self.trade *= 1.0 - abs(self.pos) * rate
            self.path.closed += 1
            self.path.wins += int(self.trade > 1.0)
        if new != 0.0:
            self.path.trades += 1
            self.trade = 1.0 - abs(new) * rate
        cost = abs(new - self.pos) * rate
        self.path.turnover += abs(new - self.pos)
        self.pos = new
        self.last_change = j
        return cost

    def _stop_price(self, b: int) -> float | None:
        """Exit price where bar b hits a stop (its open where it gapped through), else None."""
        side = 1.0 if self.pos > 0 else -1.0
        levels = []  # the stop loss first: the conservative order within one bar
        if self.rules.stop_loss is not None:
            levels.append(self.entry * (1.0 - side * self.rules.stop_loss))
        if self.rules.take_profit is not None:
            levels.append(self.entry * (1.0 + side * self.rules.take_profit))
        opened = float(self.m.bar_open[b])
        for level in levels:  # a price is past a level when it lies beyond it, away from entry
            if (opened - level) * (level - self.entry) >= 0:
                return opened
        for level in levels:
            extreme = self.m.bar_low[b] if level < self.entry else self.m.bar_high[b]
            if (extreme - level) * (level - self.entry) >= 0:
                return level
        return None


def _simulate(market: _Market, rules: _Rules) -> dict[str, _Path]:
    """Every strategy of one symbol: buy_and_hold first after the model, then the baselines."""
    paths = {MODEL: _Sleeve(market, market.rows[MODEL], rules, stops=True).run()}
    n_rows = len(market.rows[MODEL][0])
    always_long = (np.full(n_rows, rules.size), np.zeros(n_rows, dtype=bool))
    paths[BUY_AND_HOLD] = _Sleeve(market, always_long, rules, stops=False).run()
    for name, rows in market.rows.items():
        if name != MODEL:
            paths[name] = _Sleeve(market, rows, rules, stops=True).run()
    return paths


# ----------------------------------------------------------------------------- figures


def _num(value: Any) -> float | None:
    """A finite float, else None (the result must be strict JSON)."""
    number = float(value)
    return number if np.isfinite(number) else None


def _risk(net: np.ndarray, per_year: float) -> dict[str, float | None]:
    """empyrical's annual return, Sharpe, Sortino and max drawdown of the net bar returns."""
    with np.errstate(all="ignore"):
        if not np.isfinite(per_year) or len(net) == 0:
            annual = sharpe = sortino = float("nan")
        else:
            annual = empyrical.annual_return(net, annualization=per_year)
            sharpe = empyrical.sharpe_ratio(net, annualization=per_year)
            sortino = empyrical.sortino_ratio(net, annualization=per_year)
        drawdown = empyrical.max_drawdown(net) if len(net) else float("nan")
    return {
        "annual_return": _num(annual),
        "sharpe": _num(sharpe),
        "sortino": _num(sortino),
        "max_drawdown": _num(drawdown),
    }


def _stats(
    gross: np.ndarray, net: np.ndarray, paths: Sequence[_Path], n_symbols: int, per_year: float
) -> dict[str, Any]:
    """The STATS of one strategy from its bar returns and its per-symbol paths."""
    closed = sum(p.closed for p in paths)
    exposed = sum(int(np.count_nonzero(p.position)) for p in paths)
    symbol_bars = sum(len(p.position) for p in paths)
    out: dict[str, Any] = {
        "gross_return": _num(empyrical.cum_returns_final(gross)),
        "net_return": _num(empyrical.cum_returns_final(net)),
        **_risk(net, per_year),
        "hit_rate": sum(p.wins for p in paths) / closed if closed else None,
        "turnover": _num(sum(p.turnover for p in paths) / n_symbols),
        "trades": int(sum(p.trades for p in paths)),
        "exposure": exposed / symbol_bars if symbol_bars else None,
        "bars": len(net),
    }
    return {key: out[key] for key in STATS}


def _portfolio(
    markets: Sequence[_Market], paths: Sequence[dict[str, _Path]], n_symbols: int
) -> tuple[pd.DatetimeIndex, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Bar times (the union over symbols) and each strategy's (gross, net) sleeve mean."""
    union = markets[0].times
    for market in markets[1:]:
        union = union.union(market.times)
    where = [union.get_indexer(market.times) for market in markets]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in paths[0]:
        gross, net = np.zeros(len(union)), np.zeros(len(union))
        for at, symbol_paths in zip(where, paths, strict=True):
            np.add.at(gross, at, symbol_paths[name].gross)
            np.add.at(net, at, symbol_paths[name].net)
        out[name] = (gross / n_symbols, net / n_symbols)
    return union, out


def _block(settings: BacktestSettings, bars: int) -> int:
    if settings.bootstrap_block is None:
        return max(1, round(np.sqrt(bars)))
    return max(1, min(int(settings.bootstrap_block), bars))


def _lift(
    nets: Mapping[str, np.ndarray], per_year: float, block: int, settings: BacktestSettings
) -> dict[str, Any]:
    """Mean per-bar net advantage of the model over each other strategy, with a block CI."""
    out: dict[str, Any] = {}
    for name, other in nets.items():
        if name == MODEL:
            continue
        diff = nets[MODEL] - other
        bootstrap = MovingBlockBootstrap(block, diff, seed=settings.seed)
        ci = bootstrap.conf_int(np.mean, reps=settings.bootstrap_resamples, method="percentile")
        mean = float(np.mean(diff))
        out[name] = {
            "mean_bar_return": _num(mean),
            "annualised": _num(mean * per_year),
            "ci95": [_num(ci[0, 0]), _num(ci[1, 0])],
        }
    return out


def _equity(
    start: pd.Timestamp,
    times: pd.DatetimeIndex,
    nets: Mapping[str, np.ndarray],
    capital: float,
) -> dict[str, list[Any]]:
    """Net equity per strategy from `capital`, at most MAX_EQUITY_POINTS (the last kept)."""
    n = len(times) + 1
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_EQUITY_POINTS)).round().astype(np.int64))
    stamps = [start, *times]
    out: dict[str, list[Any]] = {"time": [pd.Timestamp(stamps[i]).isoformat() for i in keep]}
    for name, net in nets.items():
        curve = np.concatenate(([capital], empyrical.cum_returns(net, starting_value=capital)))
        out[name] = [_num(v) for v in curve[keep]]
    return out


def _settings_out(settings: BacktestSettings, per_year: float) -> dict[str, Any]:
    size = _position_size(settings)
    out = dataclasses.asdict(settings)
    out["window"] = list(settings.window)
    out["annualization"] = _num(per_year)
    out["position_size_used"] = size
    out["position_size_scaled"] = size != settings.position_size
    return out


def _names(symbols: Sequence[SymbolSignals]) -> list[str]:
    names = list(symbols[0].signals) if symbols else []
    for sym in symbols:
        if set(sym.signals) != set(names):
            raise ValueError(f"{sym.symbol}: every symbol needs the same strategies {names}")
    if len({sym.symbol for sym in symbols}) != len(symbols):
        raise ValueError("symbols must be unique")
    return names


# ----------------------------------------------------------------------------- entry point


def run_backtest(symbols: Sequence[SymbolSignals], settings: BacktestSettings) -> dict[str, Any]:
    """Backtests every strategy of every symbol; plain JSON-able figures (module docstring)."""
    _validate(settings)
    _names(symbols)
    rules = _rules(settings)
    rates = [bars_per_year(pd.DatetimeIndex(sym.prices.index)) for sym in symbols]
    finite = [r for r in rates if np.isfinite(r)]
    per_year = float(np.mean(finite)) if finite else float("nan")
    settings_out = _settings_out(settings, per_year)
    built = {sym.symbol: _market(sym, settings, rules) for sym in symbols}
    markets = [m for m in built.values() if m is not None]
    if not markets:
        return {"note": NO_ROWS_NOTE, "bars": 0, "settings": settings_out}
    paths = [_simulate(market, rules) for market in markets]
    times, series = _portfolio(markets, paths, len(symbols))
    nets = {name: net for name, (_, net) in series.items()}
    block = _block(settings, len(times))
    strategies = {
        name: _stats(gross, net, [p[name] for p in paths], len(symbols), per_year)
        for name, (gross, net) in series.items()
    }
    return {
        "settings": settings_out,
        "bars": len(times),
        "symbols": [sym.symbol for sym in symbols],
        "strategies": strategies,
        "lift": _lift(nets, per_year, block, settings),
        "bootstrap": {
            "method": "moving_block",
            "block": block,
            "resamples": settings.bootstrap_resamples,
            "seed": settings.seed,
        },
        "per_symbol": _per_symbol(built, paths),
        "equity": _equity(min(m.start for m in markets), times, nets, settings.initial_capital),
    }


def _per_symbol(
    built: Mapping[str, _Market | None], paths: Sequence[dict[str, _Path]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_symbol = iter(paths)
    for symbol, market in built.items():
        if market is None:
            out[symbol] = {"bars": 0, "strategies": {}, "note": NO_ROWS_NOTE}
            continue
        symbol_paths = next(by_symbol)
        out[symbol] = {
            "bars": len(market.js),
            "strategies": {
                name: _stats(p.gross, p.net, [p], 1, market.per_year)
                for name, p in symbol_paths.items()
            },
        }
    return out
