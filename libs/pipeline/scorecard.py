"""One metrics set, the same for the test slice and every walk-forward fold: the model's metrics
beside its baselines on the same rows, per symbol, and the costs-aware backtest of its signals
beside buy-and-hold and the baselines' signals.

Baselines (libs/pipeline/evaluate.py scores them like the model):
- classification: `majority`, the training slice's most common class for every row, and
  `last_confirmed`, for each row the last label of its symbol that was already known at that
  row's time (a causal rule: it reads no price after the row; for zigzag labels the direction
  of the last confirmed leg, since the pivot that closes a leg is HOLD by construction);
- regression: `zero` (no move), `train_mean` (the training slice's mean return) and
  `last_confirmed` (the last forward return already known).
Nothing here is fitted on the rows it scores: the majority class and the mean come from the
training slice, the causal baseline only from labels known before each row.

Regime labels (trending up/down, ranging, volatile) are market states, not trade signals:
their models keep the classification metrics and both baselines (majority, last_confirmed
compare accuracy, not trades), but are not backtested; `backtest` says why instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from libs.pipeline import evaluate
from libs.pipeline.backtest import (
    BacktestSettings,
    SymbolSignals,
    directions_from_probabilities,
    directions_from_returns,
    run_backtest,
)
from libs.pipeline.dataset import DataSplits
from libs.pipeline.labels import BUY, HOLD, SELL, class_names, is_regression, is_signal
from libs.pipeline.strategy import StrategyConfig, ZigZagLabels

NOT_SIGNALS_NOTE = ("not backtested: regime classes describe the market (trending up/down, "
                    "ranging, volatile) and are not BUY/HOLD/SELL signals")

# A class id to the position it asks for: BUY long, HOLD flat, SELL short.
_DIRECTION_OF_CLASS = np.zeros(3, dtype=np.int8)
_DIRECTION_OF_CLASS[BUY], _DIRECTION_OF_CLASS[HOLD], _DIRECTION_OF_CLASS[SELL] = 1, 0, -1


def backtest_settings(strategy: StrategyConfig, *, seed: int) -> BacktestSettings:
    """The strategy's `decisions`, `backtesting` and `risk_management`, as the backtest reads
    them (schema.py says what each key means)."""
    decisions, costs, risk = strategy.decisions, strategy.backtesting, strategy.risk_management
    return BacktestSettings(
        execution=costs.execution,
        cost_per_turnover=costs.transaction_costs,
        slippage=costs.slippage,
        confidence_threshold=decisions.confidence_threshold,
        sell="short" if decisions.short_selling else "flat",
        hold="keep" if decisions.position_awareness else "flat",
        min_signal_separation=decisions.filters.min_signal_separation,
        position_size=risk.position_size,
        stop_loss=risk.stop_loss.value if risk.stop_loss is not None else None,
        take_profit=risk.take_profit.value if risk.take_profit is not None else None,
        max_portfolio_risk=risk.max_portfolio_risk,
        initial_capital=costs.initial_capital,
        window=(costs.start_date, costs.end_date),
        seed=seed,
    )


def last_confirmed(
    splits: DataSplits, *, skip_hold: bool = False, unknown_class: int = HOLD
) -> np.ndarray:
    """For each test row, the last label of its symbol known at the row's time (`unknown_class`
    (HOLD), or a 0.0 return, while none is known yet); `skip_hold` looks past HOLD labels."""
    out = np.empty(splits.n_test, dtype=splits.y_test.dtype)
    unknown = 0.0 if out.dtype.kind == "f" else unknown_class
    for i, full in enumerate(splits.sources):
        mine = splits.test_symbol == i
        source = full.select(full.labels != HOLD) if skip_hold else full
        known = source.label_times()
        order = np.argsort(known, kind="stable")
        # Of the labels known by time t, the one of the latest row.
        latest = np.maximum.accumulate(order) if len(order) else order
        at = np.searchsorted(known[order], splits.test_times[mine], side="right") - 1
        picked = source.labels[latest[np.clip(at, 0, None)]] if len(order) else unknown
        out[mine] = np.where(at >= 0, picked, unknown)
    return out


def _baseline_predictions(
    splits: DataSplits, strategy: StrategyConfig, regression: bool
) -> dict[str, np.ndarray]:
    n = splits.n_test
    skip_hold = isinstance(strategy.training.labels, ZigZagLabels)
    if regression:
        mean = float(splits.y_train.mean()) if splits.n_train else 0.0
        return {"zero": np.zeros(n), "train_mean": np.full(n, mean),
                "last_confirmed": last_confirmed(splits, skip_hold=skip_hold)}
    majority = evaluate.majority_class(splits.y_train)
    # Before any label is known: HOLD for signals; a market class (regime) has no neutral one,
    # so the training majority stands in (HOLD's id there means TRENDING_DOWN).
    unknown = HOLD if is_signal(strategy.training.labels) else majority
    causal = last_confirmed(splits, skip_hold=skip_hold, unknown_class=unknown)
    return {"majority": np.full(n, majority, dtype=np.int64), "last_confirmed": causal}


def _signals(outputs: np.ndarray, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    if regression:
        return directions_from_returns(outputs)
    return directions_from_probabilities(outputs)


def _baseline_signals(predicted: np.ndarray, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    if regression:
        return directions_from_returns(predicted)
    return _DIRECTION_OF_CLASS[predicted.astype(np.int64)], np.ones(len(predicted))


def _backtest(
    splits: DataSplits, outputs: np.ndarray, baselines: dict[str, np.ndarray],
    settings: BacktestSettings, regression: bool,
) -> dict[str, Any]:
    signals = {"model": _signals(outputs, regression)}
    signals.update({name: _baseline_signals(pred, regression) for name, pred in baselines.items()
                    if name != "zero"})  # always flat: buy-and-hold is the passive reference
    symbols: list[SymbolSignals] = []
    for i, source in enumerate(splits.sources):
        mine = splits.test_symbol == i
        if not mine.any() or source.prices is None:
            continue
        symbols.append(SymbolSignals(
            symbol=source.symbol,
            prices=source.prices,
            times=pd.DatetimeIndex(pd.to_datetime(splits.test_times[mine], utc=True)),
            signals={name: (direction[mine], confidence[mine])
                     for name, (direction, confidence) in signals.items()},
        ))
    return run_backtest(symbols, settings)


def score(
    model: nn.Module, splits: DataSplits, strategy: StrategyConfig, *, device: str, seed: int
) -> dict[str, Any]:
    """The model's metrics on `splits`' test rows, its baselines and lift, per symbol, and the
    backtest (plain JSON-able data: it goes into metrics.json)."""
    labels = strategy.training.labels
    regression, names = is_regression(labels), class_names(labels)
    metrics = evaluate.evaluate_model(model, splits.x_test, splits.y_test, regression=regression,
                                      device=device, class_names=names or None)
    if splits.n_test == 0:
        return metrics
    outputs = evaluate.predict_outputs(model, splits.x_test, regression=regression, device=device)
    predicted = outputs if regression else outputs.argmax(axis=1)
    row_symbols = np.asarray(splits.symbols, dtype=object)[splits.test_symbol]
    metrics["per_symbol"] = evaluate.per_symbol_metrics(
        splits.y_test, predicted, row_symbols, regression=regression)
    baselines = _baseline_predictions(splits, strategy, regression)
    extra: dict[str, dict[str, Any]] = {}
    if not regression:
        extra["majority"] = {"class": names[int(baselines["majority"][0])]}
    metrics["baselines"], metrics["lift"] = evaluate.baseline_metrics(
        splits.y_test, baselines, metrics, regression=regression, extra=extra)
    if not is_signal(labels):
        metrics["backtest"] = {"skipped": True, "note": NOT_SIGNALS_NOTE}
        return metrics
    metrics["backtest"] = _backtest(splits, outputs, baselines,
                                    backtest_settings(strategy, seed=seed), regression)
    return metrics


def no_edge(metrics: dict[str, Any], regression: bool) -> str | None:
    """Why the model shows no edge over its baselines on these rows, or None."""
    baselines: dict[str, dict[str, Any]] = metrics.get("baselines") or {}
    if regression:
        rmse, zero = metrics.get("rmse"), (baselines.get("zero") or {}).get("rmse")
        if rmse is not None and zero is not None and rmse >= zero:
            return (f"the model does not beat predicting no move on the test slice "
                    f"(RMSE {rmse:.6g} vs {zero:.6g})")
        return None
    accuracy = metrics.get("accuracy")
    scored = {name: b["accuracy"] for name, b in baselines.items()
              if b.get("accuracy") is not None}
    if accuracy is None or not scored or accuracy > max(scored.values()):
        return None
    shown = ", ".join(f"{name} {value:.4f}" for name, value in scored.items())
    return (f"the model does not beat its baselines on the test slice: accuracy "
            f"{accuracy:.4f} vs {shown}")
