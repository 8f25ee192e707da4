"""A full metrics.json of the evaluation as the pipeline writes it (test metrics with per-symbol
figures, baselines, lift and a backtest; the splits; walk-forward folds; warnings), for the
views that show it: report.html, the CLI tables, the dashboard."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from libs.pipeline.evaluate import classification_metrics, headline

Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2] * 3)
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 1, 2, 0, 0] * 3)


def stats(net: float, sharpe: float | None, trades: int) -> dict[str, Any]:
    return {"gross_return": net + 0.004, "net_return": net, "annual_return": net * 4,
            "sharpe": sharpe, "sortino": None if sharpe is None else sharpe * 1.4,
            "max_drawdown": -abs(net) / 2 - 0.01, "hit_rate": 0.55 if trades else None,
            "turnover": trades * 2.0, "trades": trades, "exposure": 0.6, "bars": 30}


def full_test_metrics() -> dict[str, Any]:
    """metrics.json "test" of a classification model, every section filled."""
    base = classification_metrics(Y_TRUE, Y_PRED)
    equity_len = 30
    model_curve = [1 + 0.002 * i for i in range(equity_len)]
    return {
        "samples": 30, "loss": 0.91, **base,
        "per_symbol": {"EURUSD": {"samples": 15, "accuracy": 0.6, "macro_f1": 0.58},
                       "GBPUSD": {"samples": 15, "accuracy": 0.6, "macro_f1": 0.57}},
        "baselines": {"majority": {"class": "HOLD", "accuracy": 0.4, "macro_f1": 0.19},
                      "last_confirmed": {"accuracy": 0.5, "macro_f1": 0.48}},
        "lift": {"majority": {"accuracy": 0.2, "macro_f1": base["macro_f1"] - 0.19},
                 "last_confirmed": {"accuracy": 0.1, "macro_f1": base["macro_f1"] - 0.48}},
        "backtest": {
            "settings": {"execution": "next_open", "cost_per_turnover": 0.0001,
                         "annualization": 6240.0},
            "bars": 30, "symbols": ["EURUSD", "GBPUSD"],
            "strategies": {"model": stats(0.058, 1.23, 12),
                           "buy_and_hold": stats(0.012, 0.31, 1),
                           "majority": stats(0.0, None, 0),
                           "last_confirmed": stats(-0.02, -0.4, 9)},
            "lift": {"buy_and_hold": {"mean_bar_return": 0.00015, "annualised": 0.93,
                                      "ci95": [-0.00002, 0.00031]},
                     "majority": {"mean_bar_return": 0.0002, "annualised": 1.2,
                                  "ci95": [0.00001, 0.0004]}},
            "bootstrap": {"resamples": 1000, "block": 5, "seed": 7},
            "per_symbol": {"EURUSD": {"bars": 30, "strategies": {
                "model": stats(0.07, 1.5, 6), "buy_and_hold": stats(0.01, 0.2, 1)}}},
            "equity": {
                "time": [f"2024-03-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00"
                         for i in range(equity_len)],
                "model": model_curve,
                "buy_and_hold": [1 + 0.0004 * i for i in range(equity_len)],
                "majority": [1.0] * equity_len,
                "last_confirmed": [1 - 0.0007 * i for i in range(equity_len)],
            },
        },
    }


def splits() -> dict[str, Any]:
    counts = {"kept": 100, "purged": 3, "embargoed": 5}
    return {
        "boundaries": {"validation_start": "2024-02-01T00:00:00+00:00",
                       "test_start": "2024-03-01T00:00:00+00:00"},
        "embargo": 5,
        "per_symbol": {sym: {"train": dict(counts), "validation": {**counts, "kept": 20},
                             "test": {**counts, "kept": 15, "purged": 0}, "unconfirmed": 4}
                       for sym in ("EURUSD", "GBPUSD")},
        "label_distribution": {"train": {"BUY": 60, "HOLD": 90, "SELL": 50},
                               "validation": {"BUY": 12, "HOLD": 18, "SELL": 10},
                               "test": {"BUY": 9, "HOLD": 12, "SELL": 9}},
    }


def walk_forward() -> dict[str, Any]:
    folds = []
    for i in (1, 2):
        m = copy.deepcopy(full_test_metrics())
        m["accuracy"] = 0.5 + 0.1 * i
        m["macro_f1"] = 0.45 + 0.1 * i
        folds.append({"fold": i, "train": ["2024-01-01T00:00:00+00:00", f"2024-0{i + 1}-01"],
                      "test": [f"2024-0{i + 1}-02", f"2024-0{i + 2}-01"],
                      "rows": {"train": 100 * i, "validation": 20, "test": 15, "purged": 3,
                               "embargoed": 5},
                      "best_epoch": 2, "epochs_trained": 3, "metrics": m})
    return {"mode": "expanding", "folds": folds,
            "summary": {"accuracy": {"mean": 0.65, "std": 0.05},
                        "macro_f1": {"mean": 0.6, "std": 0.05},
                        "backtest_sharpe": {"mean": 1.2, "std": 0.3},
                        "backtest_net_return": {"mean": 0.05, "std": 0.01}}}


WARNINGS = ["the test slice has only 30 rows: its metrics are noisy",
            "<b>GBPUSD</b>: 12 labels purged"]


def metrics() -> dict[str, Any]:
    """A whole metrics.json."""
    return {
        "history": [{"epoch": 1, "train_loss": 1.1, "train_accuracy": 0.4, "val_loss": 1.0,
                     "val_accuracy": 0.45, "learning_rate": 1e-3, "duration": 0.2}],
        "best_epoch": 1, "epochs_trained": 1, "stopped_early": False, "training_seconds": 0.4,
        "test": full_test_metrics(), "splits": splits(), "walk_forward": walk_forward(),
        "warnings": list(WARNINGS),
    }


def headline_metrics() -> dict[str, float]:
    return headline(full_test_metrics())
