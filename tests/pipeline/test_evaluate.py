"""Evaluation metrics: equal to scikit-learn's (random and degenerate inputs) and to hand
computation; per symbol, baselines and lift, the headline; empty slices; running the model."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from libs.pipeline.evaluate import (
    baseline_metrics,
    classification_metrics,
    confusion_matrix,
    evaluate_model,
    evaluate_predictions,
    headline,
    majority_class,
    per_symbol_metrics,
    predict_outputs,
    regression_metrics,
)
from libs.pipeline.model import MLP, build_model
from libs.pipeline.strategy import ArchitectureConfig

# 10 samples, classes 0=BUY 1=HOLD 2=SELL
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 1, 2, 0, 0])


def sklearn_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """scikit-learn's own numbers, with its defaults (labels=None) and zero_division=0."""
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for average in ("weighted", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average,
                                                         zero_division=0)
        out |= {f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f}
    return out


def assert_equals_sklearn(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    m = classification_metrics(y_true, y_pred)
    for key, value in sklearn_metrics(y_true, y_pred).items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2],
                                                     average=None, zero_division=0)
    for i, name in enumerate(("BUY", "HOLD", "SELL")):
        assert m["per_class"][name] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred,
                                                         labels=[0, 1, 2]).tolist()
    return m


def test_the_names_say_what_the_numbers_are() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED)
    assert set(m) == {"samples", "accuracy", "weighted_precision", "weighted_recall",
                      "weighted_f1", "macro_precision", "macro_recall", "macro_f1", "per_class",
                      "confusion_matrix", "class_names", "class_distribution"}
    assert not {"precision", "recall", "f1_score"} & set(m)
    assert set(m["per_class"]["BUY"]) == {"precision", "recall", "f1", "support"}


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y_true = rng.choice(3, n, p=rng.dirichlet([1, 1, 1]))
    y_pred = rng.choice(3, n, p=rng.dirichlet([1, 1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0: no UndefinedMetricWarning either
        assert_equals_sklearn(y_true, y_pred)


def test_a_class_absent_from_truth_and_prediction_is_not_averaged_in() -> None:
    # No SELL anywhere. BUY: P 2/3 R 2/3 F1 2/3; HOLD: P 1/2 R 1/2 F1 1/2.
    y_true = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 0])
    m = assert_equals_sklearn(y_true, y_pred)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # 0.583; over 3 classes: 0.389
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)
    assert m["per_class"]["SELL"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_a_class_only_predicted_counts_in_the_macro_mean() -> None:
    # SELL never true but predicted once: it is in the macro mean, with F1 0.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])
    m = assert_equals_sklearn(y_true, y_pred)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_one_class_only() -> None:
    m = assert_equals_sklearn(np.array([1, 1, 1]), np.array([1, 1, 1]))
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0  # the old mean over 3 classes: 1/3
    m = assert_equals_sklearn(np.array([1, 1, 1]), np.array([0, 0, 0]))
    assert m["macro_f1"] == 0.0 and m["accuracy"] == 0.0


def test_confusion_matrix_by_hand() -> None:
    # rows true, columns predicted
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 3, 1], [2, 0, 1]]


def test_per_class_and_weighted_scores_by_hand() -> None:
    m = assert_equals_sklearn(Y_TRUE, Y_PRED)
    # BUY: tp 2, predicted 4, support 3 -> P 1/2, R 2/3, F1 = 2*(1/2*2/3)/(1/2+2/3) = 4/7
    # HOLD: tp 3, predicted 4, support 4 -> P 3/4, R 3/4, F1 3/4
    # SELL: tp 1, predicted 2, support 3 -> P 1/2, R 1/3, F1 = 2*(1/6)/(5/6) = 2/5
    expected = {
        "BUY": (1 / 2, 2 / 3, 4 / 7, 3),
        "HOLD": (3 / 4, 3 / 4, 3 / 4, 4),
        "SELL": (1 / 2, 1 / 3, 2 / 5, 3),
    }
    for name, (p, r, f1, support) in expected.items():
        got = m["per_class"][name]
        assert got["precision"] == pytest.approx(p)
        assert got["recall"] == pytest.approx(r)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["weighted_precision"] == pytest.approx((3 * 1 / 2 + 4 * 3 / 4 + 3 * 1 / 2) / 10)
    assert m["weighted_recall"] == pytest.approx((3 * 2 / 3 + 4 * 3 / 4 + 3 * 1 / 3) / 10)
    assert m["weighted_f1"] == pytest.approx((3 * 4 / 7 + 4 * 3 / 4 + 3 * 2 / 5) / 10)
    assert m["macro_f1"] == pytest.approx((4 / 7 + 3 / 4 + 2 / 5) / 3)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 3 / 4 + 1 / 2) / 3)
    assert m["class_distribution"] == {
        "true": {"BUY": 3, "HOLD": 4, "SELL": 3},
        "predicted": {"BUY": 4, "HOLD": 4, "SELL": 2},
    }


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    m = classification_metrics(np.array([0, 1, 2]), np.array([1, 1, 1]))
    assert m["per_class"]["BUY"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert all(not math.isnan(m[k]) for k in ("weighted_precision", "weighted_recall",
                                              "weighted_f1", "macro_f1"))


def test_empty_slices_give_a_clear_result() -> None:
    empty = {"samples": 0, "note": "empty test slice"}
    assert classification_metrics(np.array([]), np.array([])) == empty
    assert regression_metrics(np.array([]), np.array([]))["samples"] == 0
    assert evaluate_predictions(np.array([]), np.zeros((0, 3)), regression=False,
                                loss=1.0) == empty
    model = MLP(4, 3, (3,))
    result = evaluate_model(model, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert result == empty
    assert predict_outputs(model, np.zeros((0, 4), np.float32), regression=False).shape == (0, 3)
    assert baseline_metrics(np.array([]), {"majority": np.array([])}, {},
                            regression=False) == ({}, {})


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(
        np.array([0.01, -0.02, 0.03, -0.01]), np.array([0.02, -0.01, -0.01, 0.00])
    )
    assert m["mae"] == pytest.approx((0.01 + 0.01 + 0.04 + 0.01) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1e-4 + 1e-4 + 16e-4 + 1e-4) / 4))
    # up/up, down/down, up/down, down/"not up" (0.0 is not up): 3 of 4
    assert m["direction_accuracy"] == pytest.approx(3 / 4)
    assert set(m) == {"samples", "mae", "rmse", "direction_accuracy", "mean_target",
                      "mean_prediction"}


def test_evaluate_predictions_takes_probabilities_or_values() -> None:
    probs = np.eye(3)[Y_PRED] * 0.7 + 0.1
    m = evaluate_predictions(Y_TRUE, probs, regression=False, loss=0.5)
    assert list(m)[:2] == ["samples", "loss"] and m["loss"] == 0.5
    assert m == {"samples": 10, "loss": 0.5, **classification_metrics(Y_TRUE, Y_PRED)}
    assert "loss" not in evaluate_predictions(Y_TRUE, probs, regression=False)
    y = np.array([0.01, -0.02, 0.03])
    r = evaluate_predictions(y, np.array([0.02, -0.01, 0.0]), regression=True, loss=0.1)
    assert r == {"samples": 3, "loss": 0.1, **regression_metrics(y, np.array([0.02, -0.01, 0.0]))}


def test_per_symbol_metrics() -> None:
    symbols = np.array(["B", "A"] * 5)
    got = per_symbol_metrics(Y_TRUE, Y_PRED, symbols, regression=False)
    assert list(got) == ["A", "B"]
    for sym in ("A", "B"):
        rows = symbols == sym
        _, _, f1, _ = skm.precision_recall_fscore_support(Y_TRUE[rows], Y_PRED[rows],
                                                          average="macro", zero_division=0)
        assert got[sym] == pytest.approx({
            "samples": 5, "accuracy": skm.accuracy_score(Y_TRUE[rows], Y_PRED[rows]),
            "macro_f1": f1})
    # Probabilities are argmaxed like class ids.
    assert per_symbol_metrics(Y_TRUE, np.eye(3)[Y_PRED], symbols, regression=False) == got
    y = np.array([0.01, -0.01, 0.02, 0.03])
    p = np.array([0.02, 0.01, 0.02, -0.01])
    reg = per_symbol_metrics(y, p, np.array(["X", "X", "Y", "Y"]), regression=True)
    assert reg["X"] == {"samples": 2, "rmse": pytest.approx(math.sqrt((1e-4 + 4e-4) / 2)),
                        "direction_accuracy": 0.5}
    assert set(reg["Y"]) == {"samples", "rmse", "direction_accuracy"}
    with pytest.raises(ValueError, match="symbols"):
        per_symbol_metrics(Y_TRUE, Y_PRED, symbols[:3], regression=False)


def test_baselines_and_lift_classification() -> None:
    model = classification_metrics(Y_TRUE, Y_PRED)
    majority = np.full(10, majority_class(np.array([1, 1, 0, 2, 1])))
    last = np.roll(Y_TRUE, 1)
    baselines, lift = baseline_metrics(
        Y_TRUE, {"majority": majority, "last_confirmed": last}, model, regression=False,
        extra={"majority": {"class": "HOLD"}})
    assert baselines["majority"]["class"] == "HOLD"
    assert baselines["majority"]["accuracy"] == pytest.approx(0.4)
    # HOLD only: P 4/10, R 1, F1 8/14 for HOLD; BUY, SELL: 0 -> macro over 3 present classes
    assert baselines["majority"]["macro_f1"] == pytest.approx((8 / 14) / 3)
    assert lift["majority"] == pytest.approx({"accuracy": 0.6 - 0.4,
                                              "macro_f1": model["macro_f1"] - (8 / 14) / 3})
    expected = sklearn_metrics(Y_TRUE, last)
    assert baselines["last_confirmed"] == pytest.approx(
        {"accuracy": expected["accuracy"], "macro_f1": expected["macro_f1"]})
    assert lift["last_confirmed"]["accuracy"] == pytest.approx(0.6 - expected["accuracy"])
    # Without the model's number, no lift for it.
    _, partial = baseline_metrics(Y_TRUE, {"m": majority}, {"accuracy": 0.6}, regression=False)
    assert partial == {"m": {"accuracy": pytest.approx(0.2)}}


def test_baselines_and_lift_regression() -> None:
    y = np.array([0.01, -0.02, 0.03, -0.01])
    pred = np.array([0.02, -0.01, -0.01, 0.00])
    model = regression_metrics(y, pred)
    baselines, lift = baseline_metrics(
        y, {"zero": np.zeros(4), "train_mean": np.full(4, 0.005)}, model, regression=True)
    assert baselines["zero"] == {"rmse": pytest.approx(math.sqrt(15e-4 / 4)),
                                 "mae": pytest.approx(0.07 / 4), "direction_accuracy": 0.5}
    assert lift["zero"]["rmse"] == pytest.approx(baselines["zero"]["rmse"] - model["rmse"])
    assert lift["zero"]["direction_accuracy"] == pytest.approx(0.75 - 0.5)
    assert set(lift["train_mean"]) == {"rmse", "direction_accuracy"}


def test_majority_class() -> None:
    assert majority_class(np.array([2, 2, 1, 0, 2])) == 2
    assert majority_class(np.array([0, 1, 1, 0])) == 0  # a tie: the lowest id
    with pytest.raises(ValueError):
        majority_class(np.array([], np.int64))


def test_headline_flattens_the_numbers_a_completed_event_carries() -> None:
    test = {
        **classification_metrics(Y_TRUE, Y_PRED), "loss": 0.9, "samples": 10,
        "baselines": {"majority": {"class": "BUY", "accuracy": 0.3, "macro_f1": 0.15}},
        "lift": {"majority": {"accuracy": 0.3, "macro_f1": float("nan")}},
        "backtest": {
            "strategies": {
                "model": {"net_return": 0.05, "sharpe": 1.2, "max_drawdown": -0.1,
                          "trades": 12, "sortino": 2.0},
                "buy_and_hold": {"net_return": 0.01, "sharpe": None},
            },
            "lift": {"buy_and_hold": {"annualised": 0.04, "ci95": [-0.01, 0.09]}},
        },
        "per_symbol": {"EURUSD": {"samples": 10, "accuracy": 0.6}},
    }
    h = headline(test)
    assert h == {
        "samples": 10, "loss": 0.9, "accuracy": 0.6, "macro_f1": test["macro_f1"],
        "weighted_f1": test["weighted_f1"],
        "baseline_majority_accuracy": 0.3, "baseline_majority_macro_f1": 0.15,
        "lift_accuracy_vs_majority": 0.3,
        "backtest_net_return": 0.05, "backtest_sharpe": 1.2, "backtest_max_drawdown": -0.1,
        "backtest_trades": 12, "buy_and_hold_net_return": 0.01,
        "backtest_lift_vs_buy_and_hold": 0.04,
    }
    assert headline({"samples": 0, "note": "empty test slice"}) == {"samples": 0}
    assert headline({"backtest": {"note": "no bars", "bars": 0}}) == {}
    reg = headline({**regression_metrics(np.array([0.1, -0.1]), np.array([0.2, 0.1])),
                    "lift": {"zero": {"rmse": 0.01, "direction_accuracy": 0.1}}})
    assert set(reg) == {"samples", "mae", "rmse", "direction_accuracy", "lift_rmse_vs_zero",
                        "lift_direction_accuracy_vs_zero"}


class Fixed(torch.nn.Module):
    """Returns the logits it was given, row by row, to evaluate known predictions."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_evaluate_model_loss_and_metrics_on_known_logits() -> None:
    logits = torch.nn.functional.one_hot(torch.as_tensor(Y_PRED), 3).float() * 2.0
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    result = evaluate_model(Fixed(logits), x, Y_TRUE, chunk=3)
    expected_loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(Y_TRUE)).item()
    assert result["loss"] == pytest.approx(expected_loss)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 3, 1], [2, 0, 1]]
    assert result == {"samples": 10, "loss": result["loss"],
                      **classification_metrics(Y_TRUE, Y_PRED)}


def test_predict_outputs_on_a_tiny_mlp_and_restores_train_mode() -> None:
    torch.manual_seed(0)
    model = build_model(5, 3, ArchitectureConfig(hidden_layers=(4,), dropout=0.5))
    model.train()
    x = np.random.default_rng(1).standard_normal((50, 5)).astype(np.float32)
    probs = predict_outputs(model, x, regression=False, chunk=7)
    assert probs.shape == (50, 3) and probs.dtype == np.float64 and model.training
    assert np.allclose(probs.sum(axis=1), 1.0)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(x)).double(), dim=1).numpy()
    assert np.allclose(probs, expected)  # eval mode: dropout off, so deterministic
    assert np.array_equal(predict_outputs(model, x, regression=False, chunk=7), probs)
    # Another chunk size may take another float32 matmul kernel (chosen by batch size on some
    # CPUs): the logits' last bit can differ, nothing more.
    assert np.allclose(predict_outputs(model, x, regression=False), probs, rtol=0, atol=1e-6)

    reg = build_model(5, 1, ArchitectureConfig(hidden_layers=(4,)))
    values = predict_outputs(reg, torch.as_tensor(x), regression=True)
    assert values.shape == (50,) and values.dtype == np.float64


def test_evaluate_model_regression_and_restores_train_mode() -> None:
    torch.manual_seed(0)
    model = MLP(3, 1, (4,))
    model.train()
    x = np.random.default_rng(0).random((20, 3), dtype=np.float32)
    y = np.linspace(-0.01, 0.01, 20).astype(np.float32)
    result = evaluate_model(model, x, y, regression=True)
    assert set(result) >= {"samples", "loss", "mae", "rmse", "direction_accuracy"}
    assert result["samples"] == 20 and model.training
