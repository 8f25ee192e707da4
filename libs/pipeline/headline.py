"""The flat headline numbers of one metrics set (a metrics.json `test` section): what a job's
`completed` event carries, and what the model catalog lists, sorts and compares by. Standard
library only, so the torch-free catalog (libs/events/catalog.py) reads them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> float | int | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_HEADLINE_KEYS = ("samples", "loss", "accuracy", "macro_f1", "weighted_f1", "rmse", "mae",
                  "direction_accuracy")
_BASELINE_KEYS = ("accuracy", "macro_f1", "rmse", "direction_accuracy")
_BACKTEST_MODEL_KEYS = ("net_return", "sharpe", "max_drawdown", "trades")
_BACKTEST_BUY_AND_HOLD_KEYS = ("net_return", "sharpe")


def _section(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def headline(test: Mapping[str, Any]) -> dict[str, float]:
    """The flat numbers a job's `completed` event carries, from the full test metrics: samples,
    loss, accuracy, macro_f1, weighted_f1 (or rmse, mae, direction_accuracy); per baseline
    `baseline_<name>_<metric>` and `lift_<metric>_vs_<name>`; from the backtest `backtest_*`
    (the model's net return, Sharpe, max drawdown, trades), `buy_and_hold_*` (net return,
    Sharpe) and `backtest_lift_vs_buy_and_hold` (annualised). Only finite numbers; a missing
    section or value is left out."""
    out: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out[key] = number

    for key in _HEADLINE_KEYS:
        put(key, test.get(key))
    for name, scores in _section(test.get("baselines")).items():
        for key in _BASELINE_KEYS:
            put(f"baseline_{name}_{key}", _section(scores).get(key))
    for name, gains in _section(test.get("lift")).items():
        for key in _BASELINE_KEYS:
            put(f"lift_{key}_vs_{name}", _section(gains).get(key))
    backtest = _section(test.get("backtest"))
    strategies = _section(backtest.get("strategies"))
    for key in _BACKTEST_MODEL_KEYS:
        put(f"backtest_{key}", _section(strategies.get("model")).get(key))
    for key in _BACKTEST_BUY_AND_HOLD_KEYS:
        put(f"buy_and_hold_{key}", _section(strategies.get("buy_and_hold")).get(key))
    bh_lift = _section(_section(backtest.get("lift")).get("buy_and_hold"))
    put("backtest_lift_vs_buy_and_hold", bh_lift.get("annualised"))
    return out
