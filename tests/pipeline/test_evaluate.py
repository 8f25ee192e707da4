"""Evaluation metrics against hand computation; empty slices; regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from libs.pipeline.evaluate import (
    classification_metrics,
    confusion_matrix,
    evaluate_model,
    regression_metrics,
)
from libs.pipeline.model import MLP

# 10 samples, classes 0=BUY 1=HOLD 2=SELL
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 1, 2, 0, 0])


def test_confusion_matrix_by_hand() -> None:
    # rows true, columns predicted
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 3, 1], [2, 0, 1]]


def test_per_class_and_weighted_scores_by_hand() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED)
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
        assert got["f1_score"] == pytest.approx(f1)
        assert got["support"] == support
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision"] == pytest.approx((3 * 1 / 2 + 4 * 3 / 4 + 3 * 1 / 2) / 10)
    assert m["recall"] == pytest.approx((3 * 2 / 3 + 4 * 3 / 4 + 3 * 1 / 3) / 10)
    assert m["f1_score"] == pytest.approx((3 * 4 / 7 + 4 * 3 / 4 + 3 * 2 / 5) / 10)
    assert m["macro_f1"] == pytest.approx((4 / 7 + 3 / 4 + 2 / 5) / 3)
    assert m["class_distribution"] == {
        "true": {"BUY": 3, "HOLD": 4, "SELL": 3},
        "predicted": {"BUY": 4, "HOLD": 4, "SELL": 2},
    }


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    m = classification_metrics(np.array([0, 1, 2]), np.array([1, 1, 1]))
    assert m["per_class"]["BUY"] == {"precision": 0.0, "recall": 0.0, "f1_score": 0.0, "support": 1}
    assert all(not math.isnan(v) for v in (m["precision"], m["recall"], m["f1_score"]))


def test_empty_slices_give_a_clear_result() -> None:
    assert classification_metrics(np.array([]), np.array([])) == {
        "samples": 0,
        "note": "empty test slice",
    }
    assert regression_metrics(np.array([]), np.array([]))["samples"] == 0
    model = MLP(4, 3, (3,))
    result = evaluate_model(model, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert result == {"samples": 0, "note": "empty test slice"}


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(
        np.array([0.01, -0.02, 0.03, -0.01]), np.array([0.02, -0.01, -0.01, 0.00])
    )
    assert m["mae"] == pytest.approx((0.01 + 0.01 + 0.04 + 0.01) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1e-4 + 1e-4 + 16e-4 + 1e-4) / 4))
    # up/up, down/down, up/down, down/"not up" (0.0 is not up): 3 of 4
    assert m["direction_accuracy"] == pytest.approx(3 / 4)


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
    result = evaluate_model(Fixed(logits), x, Y_TRUE)
    expected_loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(Y_TRUE)).item()
    assert result["loss"] == pytest.approx(expected_loss)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 3, 1], [2, 0, 1]]


def test_evaluate_model_regression_and_restores_train_mode() -> None:
    torch.manual_seed(0)
    model = MLP(3, 1, (4,))
    model.train()
    x = np.random.default_rng(0).random((20, 3), dtype=np.float32)
    y = np.linspace(-0.01, 0.01, 20).astype(np.float32)
    result = evaluate_model(model, x, y, regression=True)
    assert set(result) >= {"samples", "loss", "mae", "rmse", "direction_accuracy"}
    assert result["samples"] == 20 and model.training
