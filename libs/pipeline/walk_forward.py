"""Walk-forward evaluation: several out-of-sample periods instead of one.

`training.walk_forward` cuts the time axis of all symbols into `folds` + 1 blocks
(libs/pipeline/splits.py `walk_forward_windows`); each fold trains a fresh model (same seed,
same recipe, the same purge and embargo) and is scored on its own test block with the same
metrics set as the final model (libs/pipeline/scorecard.py). Then the pipeline trains the final
model as configured. A fold's checkpoint names its fold and carries the finished folds'
results, so a drained or killed job resumes in the fold it was in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from libs.pipeline.checkpoint import Checkpoint
from libs.pipeline.dataset import DataSplits, SymbolData, split_data
from libs.pipeline.evaluate import headline
from libs.pipeline.labels import CLASS_NAMES, class_names
from libs.pipeline.splits import AFTER_ALL, BEFORE_ALL, iso, time_axis, walk_forward_windows
from libs.pipeline.strategy import StrategyConfig, embargo_of, sequence_length_of
from libs.pipeline.trainer import TrainOutcome


@dataclass(frozen=True, slots=True)
class Fold:
    number: int  # 1-based
    splits: DataSplits


# Train fold k (its splits, a checkpoint of the same fold to resume from, the checkpoint meta).
TrainFold = Callable[[Fold, Checkpoint | None, dict[str, Any]], tuple[nn.Module, TrainOutcome]]
ScoreFold = Callable[[nn.Module, DataSplits], dict[str, Any]]
StartFold = Callable[[Fold], None]


def folds_of(per_symbol: Sequence[SymbolData], strategy: StrategyConfig) -> list[Fold]:
    walk = strategy.training.walk_forward
    if walk is None:
        return []
    axis = time_axis([d.times for d in per_symbol])
    windows = walk_forward_windows(axis, walk, strategy.training.data_split)
    embargo = embargo_of(strategy.training)
    length = sequence_length_of(strategy.model)
    names = class_names(strategy.training.labels) or CLASS_NAMES
    return [Fold(k, split_data(per_symbol, w, embargo=embargo, sequence_length=length,
                               class_names=names))
            for k, w in enumerate(windows, 1)]


def resumed_results(resume: Checkpoint | None) -> list[dict[str, Any]]:
    """The folds a checkpoint says were finished before it was taken."""
    if resume is None:
        return []
    return list(resume.meta.get("walk_forward", {}).get("done", []))


def checkpoint_fold(resume: Checkpoint | None) -> int | None:
    """The fold a checkpoint was taken in (None: in the final model's training)."""
    if resume is None:
        return None
    fold = resume.meta.get("walk_forward", {}).get("fold")
    return int(fold) if fold is not None else None


def run_folds(
    folds: Sequence[Fold], *, train_fold: TrainFold, score_fold: ScoreFold,
    start_fold: StartFold, resume: Checkpoint | None, meta: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Train and score every fold not finished yet; the results of all folds, in order."""
    results = resumed_results(resume)
    in_fold = checkpoint_fold(resume)
    for fold in folds[len(results):]:
        start_fold(fold)
        tags = {**meta, "walk_forward": {"fold": fold.number, "done": results}}
        model, outcome = train_fold(fold, resume if in_fold == fold.number else None, tags)
        results = [*results, fold_result(fold, outcome, score_fold(model, fold.splits))]
    return results


def _span(window: tuple[int, int], first: int) -> list[str | None]:
    start, end = window
    return [iso(first if start == BEFORE_ALL else start), None if end == AFTER_ALL else iso(end)]


def fold_result(fold: Fold, outcome: TrainOutcome, metrics: dict[str, Any]) -> dict[str, Any]:
    splits = fold.splits
    assert splits.windows is not None
    first = int(min((int(s.times[0]) for s in splits.sources if len(s)), default=0))
    counts = splits.report.get("per_symbol", {}).values()
    dropped = {kind: sum(c[name][kind] for c in counts for name in ("train", "validation", "test"))
               for kind in ("purged", "embargoed")}
    return {
        "fold": fold.number,
        "train": _span(splits.windows.train, first),
        "validation": _span(splits.windows.validation, first),
        "test": _span(splits.windows.test, first),
        "rows": {"train": splits.n_train, "validation": splits.n_val, "test": splits.n_test,
                 **dropped},
        "best_epoch": outcome.best_epoch,
        "epochs_trained": outcome.epochs_trained,
        "stopped_early": outcome.stopped_early,
        "metrics": metrics,
    }


def summary(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over the folds of every headline number."""
    numbers: dict[str, list[float]] = {}
    for result in results:
        for key, value in headline(result["metrics"]).items():
            if math.isfinite(value):
                numbers.setdefault(key, []).append(float(value))
    return {
        key: {"mean": float(np.mean(values)),
              "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
              "folds": len(values)}
        for key, values in numbers.items()
    }
