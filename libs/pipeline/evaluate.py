"""Test-slice metrics, named for what they are and equal to scikit-learn's.

Classification (BUY/HOLD/SELL): `accuracy`; `weighted_precision|recall|f1` (each class weighted
by its support, scikit-learn's `average="weighted"`); `macro_precision|recall|f1` (the plain mean
over the classes present in the truth or the predictions, scikit-learn's `average="macro"` with
its default `labels=None`: a class absent from both does not drag the mean down); `per_class`
(every class, absent ones with zeros); the confusion matrix (rows: true class, columns:
predicted); the class distribution of targets and predictions. `zero_division=0` throughout.
Regression (forward returns): MAE, RMSE and direction accuracy.

Beside the model's own numbers: the same metrics per symbol, the naive baselines it must beat
(and by how much it does: the lift), and `headline`, the flat numbers a job's `completed` event
carries. An empty slice gives `{"samples": 0, "note": "empty test slice"}`. Every result is plain
JSON-able data (it goes into metrics.json and job events).

Only `predict_outputs` and `evaluate_model` run the model (torch); the rest is numpy/scikit-learn
on arrays of labels, outputs and predictions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from libs.pipeline.headline import headline
from libs.pipeline.tasks import Task, task_for
from libs.pipeline.trainer import Inputs, to_tensors
from libs.pipeline.windows import Windows

__all__ = [
    "CLASS_NAMES",
    "EMPTY_RESULT",
    "baseline_metrics",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_model",
    "evaluate_predictions",
    "headline",
    "majority_class",
    "per_symbol_metrics",
    "predict_outputs",
    "regression_metrics",
]

CLASS_NAMES: tuple[str, ...] = ("BUY", "HOLD", "SELL")  # 0, 1, 2 everywhere
EMPTY_RESULT: dict[str, Any] = {"samples": 0, "note": "empty test slice"}

# What a baseline is compared on, and the sign of its lift: + means the model is better.
_CLASSIFICATION_LIFT = ("accuracy", "macro_f1")
_REGRESSION_LIFT = ("rmse", "direction_accuracy")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = samples of true class i predicted as j (every class a row and a column)."""
    labels = list(range(num_classes))
    return np.asarray(skm.confusion_matrix(y_true, y_pred, labels=labels), dtype=np.int64)


def _labels(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(np.int64).ravel()


def _accuracy_and_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    _, _, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {"accuracy": float(skm.accuracy_score(y_true, y_pred)), "macro_f1": float(f1)}


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int = 3,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, weighted and macro P/R/F1, per-class P/R/F1, confusion matrix, distribution."""
    y_true = _labels(y_true)
    y_pred = _labels(y_pred)
    n = len(y_true)
    if n == 0:
        return dict(EMPTY_RESULT)
    names = list(class_names or _default_names(num_classes))
    result: dict[str, Any] = {"samples": n, "accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for average in ("weighted", "macro"):
        p, r, f1, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        result |= {f"{average}_precision": float(p), f"{average}_recall": float(r),
                   f"{average}_f1": float(f1)}
    labels = list(range(num_classes))
    precision, recall, f1s, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, num_classes)
    predicted = cm.sum(axis=0)
    result["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1s[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    result["confusion_matrix"] = cm.tolist()
    result["class_names"] = names
    result["class_distribution"] = {
        "true": {name: int(support[i]) for i, name in enumerate(names)},
        "predicted": {name: int(predicted[i]) for i, name in enumerate(names)},
    }
    return result


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


def _class_ids(outputs: np.ndarray) -> np.ndarray:
    """Predicted classes: the argmax of per-class scores (n, K), or class ids as they are (n,)."""
    outputs = np.asarray(outputs)
    return _labels(outputs.argmax(axis=1) if outputs.ndim == 2 else outputs)


# --- running the model ------------------------------------------------------------------------


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor | Windows, task: Task, chunk: int) -> torch.Tensor:
    """The model's raw outputs (logits, or values) in float32, in eval mode, restored after.
    Windows are gathered chunk by chunk (each window only for its chunk)."""
    was_training = model.training
    model.eval()
    try:
        parts = [task.output(model, x[i : i + chunk]).float() for i in range(0, len(x), chunk)]
        # No rows: the model still gives the outputs' shape, (0, K) or (0,).
        return torch.cat(parts) if parts else task.output(model, x[0:0]).float()
    finally:
        model.train(was_training)


def _to_numpy(out: torch.Tensor, *, regression: bool) -> np.ndarray:
    if regression:
        return out.double().cpu().numpy()
    return torch.softmax(out.double(), dim=1).cpu().numpy()


def predict_outputs(
    model: nn.Module,
    x: Inputs,
    *,
    regression: bool,
    device: torch.device | str = "cpu",
    chunk: int = 65536,
) -> np.ndarray:
    """Class probabilities (n, K) float64 (softmax of the logits), or predicted values (n,) for
    regression. The model runs in eval mode, put back in the mode it was in after."""
    task = task_for(regression)
    # to_tensors converts features and targets together; there is no target here.
    xt, _ = to_tensors(x, np.zeros(0, np.float32), task=task, device=torch.device(device))
    return _to_numpy(_forward(model, xt, task, chunk), regression=regression)


def evaluate_predictions(
    y_true: np.ndarray,
    outputs: np.ndarray,
    *,
    regression: bool,
    loss: float | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The metrics of outputs as `predict_outputs` gives them (class probabilities: argmax; or
    class ids), with `loss` when given. An empty slice: EMPTY_RESULT."""
    outputs = np.asarray(outputs)
    if len(np.asarray(y_true).ravel()) == 0:
        return dict(EMPTY_RESULT)
    if regression:
        result = regression_metrics(y_true, outputs)
    else:
        num_classes = outputs.shape[1] if outputs.ndim == 2 else len(CLASS_NAMES)
        result = classification_metrics(y_true, _class_ids(outputs), num_classes, class_names)
    head: dict[str, Any] = {"samples": result["samples"]}
    if loss is not None:
        head["loss"] = float(loss)
    return {**head, **result}


def evaluate_model(
    model: nn.Module,
    x_test: Inputs,
    y_test: np.ndarray | torch.Tensor,
    *,
    regression: bool = False,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    chunk: int = 65536,
) -> dict[str, Any]:
    """Metrics of `model` on the test slice (model put in eval mode, restored after), with the
    unweighted test loss (cross-entropy on the logits, or Huber)."""
    if len(x_test) == 0:
        return dict(EMPTY_RESULT)
    dev = torch.device(device)
    task = task_for(regression)
    x, y = to_tensors(x_test, y_test, task=task, device=dev)
    out = _forward(model, x, task, chunk)
    with torch.no_grad():
        loss = float(task.eval_loss()(out, y).item())
    return evaluate_predictions(
        y.cpu().numpy(), _to_numpy(out, regression=regression), regression=regression,
        loss=loss, class_names=class_names,
    )


# --- per symbol, baselines, the headline ------------------------------------------------------


def per_symbol_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    symbols: np.ndarray,
    *,
    regression: bool,
) -> dict[str, dict[str, Any]]:
    """{symbol: {"samples", "accuracy", "macro_f1"}} (regression: {"samples", "rmse",
    "direction_accuracy"}), symbols sorted. `y_pred`: class ids or per-class scores (argmax),
    or predicted values; `symbols`: each row's symbol."""
    symbols = np.asarray(symbols).astype(str).ravel()
    if regression:
        truth = np.asarray(y_true, dtype=np.float64).ravel()
        pred = np.asarray(y_pred, dtype=np.float64).ravel()
    else:
        truth, pred = _labels(y_true), _class_ids(y_pred)
    if not len(truth) == len(pred) == len(symbols):
        raise ValueError(f"{len(truth)} targets, {len(pred)} predictions, {len(symbols)} symbols")
    out: dict[str, dict[str, Any]] = {}
    for symbol in sorted(set(symbols.tolist())):
        rows = symbols == symbol
        t, p = truth[rows], pred[rows]
        if regression:
            m = regression_metrics(t, p)
            out[symbol] = {"samples": m["samples"], "rmse": m["rmse"],
                           "direction_accuracy": m["direction_accuracy"]}
        else:
            out[symbol] = {"samples": int(rows.sum()), **_accuracy_and_macro_f1(t, p)}
    return out


def _number(value: Any) -> float | int | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def baseline_metrics(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    model: Mapping[str, Any],
    *,
    regression: bool,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """(baselines, lift) of naive predictions against the model's metrics `model`.

    Classification: baselines[name] = {"accuracy", "macro_f1"} (+ extra[name], e.g. the majority
    class's name); lift[name] = model minus baseline, for both. Regression: baselines[name] =
    {"rmse", "mae", "direction_accuracy"}; lift[name] = {"rmse": baseline - model,
    "direction_accuracy": model - baseline}. Positive lift: the model is better. A lift needs the
    model's number: one missing (or not finite) is left out. An empty slice: ({}, {})."""
    extra = extra or {}
    baselines: dict[str, dict[str, Any]] = {}
    lift: dict[str, dict[str, float]] = {}
    if len(np.asarray(y_true).ravel()) == 0:
        return baselines, lift
    for name, pred in predictions.items():
        if regression:
            m = regression_metrics(y_true, pred)
            scores: dict[str, Any] = {k: m[k] for k in ("rmse", "mae", "direction_accuracy")}
        else:
            scores = _accuracy_and_macro_f1(_labels(y_true), _class_ids(pred))
        baselines[name] = {**dict(extra.get(name, {})), **scores}
        gains: dict[str, float] = {}
        for key in _REGRESSION_LIFT if regression else _CLASSIFICATION_LIFT:
            mine, theirs = _number(model.get(key)), _number(scores[key])
            if mine is None or theirs is None:
                continue
            gains[key] = float(theirs - mine if key == "rmse" else mine - theirs)
        lift[name] = gains
    return baselines, lift


def majority_class(y_train: np.ndarray) -> int:
    """The most frequent class in the training labels (ties: the lowest class id)."""
    y = _labels(y_train)
    if len(y) == 0:
        raise ValueError("no training labels: no majority class")
    if y.min() < 0:
        raise ValueError(f"class ids must be >= 0, got {int(y.min())}")
    return int(np.bincount(y).argmax())
