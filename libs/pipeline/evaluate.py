"""Test-slice metrics, numpy only (no sklearn dependency).

Classification: loss, accuracy, per-class and weighted/macro precision, recall, F1 (zero_division
0, like sklearn's default), the confusion matrix (rows: true class, columns: predicted) and the
class distribution of targets and predictions. Regression (forward returns): loss, MAE, RMSE and
direction accuracy. An empty test slice gives `{"samples": 0, "note": "empty test slice"}`.
Every result is plain JSON-able data (it goes into metrics.json and job events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from libs.pipeline.tasks import task_for
from libs.pipeline.trainer import to_tensors

CLASS_NAMES: tuple[str, ...] = ("BUY", "HOLD", "SELL")  # 0, 1, 2 everywhere
EMPTY_RESULT: dict[str, Any] = {"samples": 0, "note": "empty test slice"}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = samples of true class i predicted as j."""
    idx = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int = 3,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class/weighted/macro P/R/F1, confusion matrix, class distribution."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    n = len(y_true)
    if n == 0:
        return dict(EMPTY_RESULT)
    names = list(class_names or _default_names(num_classes))
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # true counts
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / n
    return {
        "samples": n,
        "accuracy": float(tp.sum() / n),
        "precision": float((precision * weights).sum()),  # weighted by support
        "recall": float((recall * weights).sum()),
        "f1_score": float((f1 * weights).sum()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1_score": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "class_distribution": {
            "true": {name: int(support[i]) for i, name in enumerate(names)},
            "predicted": {name: int(predicted[i]) for i, name in enumerate(names)},
        },
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    n = len(y_true)
    if n == 0:
        return dict(EMPTY_RESULT)
    err = y_pred - y_true
    return {
        "samples": n,
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "direction_accuracy": float(((y_pred > 0) == (y_true > 0)).mean()),
        "mean_target": float(y_true.mean()),
        "mean_prediction": float(y_pred.mean()),
    }


def _default_names(num_classes: int) -> list[str]:
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    x_test: np.ndarray | torch.Tensor,
    y_test: np.ndarray | torch.Tensor,
    *,
    regression: bool = False,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    chunk: int = 65536,
) -> dict[str, Any]:
    """Metrics of `model` on the test slice (model put in eval mode, restored after)."""
    if len(x_test) == 0:
        return dict(EMPTY_RESULT)
    dev = torch.device(device)
    task = task_for(regression)
    x, y = to_tensors(x_test, y_test, task=task, device=dev)
    was_training = model.training
    model.eval()
    try:
        out = torch.cat(
            [
                task.output(model, x[i : i + chunk]).float()
                for i in range(0, len(x), chunk)
            ]
        )
    finally:
        model.train(was_training)
    loss = float(task.eval_loss()(out, y).item())
    if regression:
        result = regression_metrics(y.cpu().numpy(), out.cpu().numpy())
    else:
        num_classes = out.shape[1]
        result = classification_metrics(
            y.cpu().numpy(), out.argmax(dim=1).cpu().numpy(), num_classes, class_names
        )
    return {"samples": result["samples"], "loss": loss, **result}
