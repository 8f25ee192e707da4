"""How a training run says where it is: the phases, one progress update, one finished epoch.

A leaf module (msgspec and the standard library only), defined once: the training loop and the
pipeline produce these values, the worker port (libs/events/worker/port.py) carries them as they
are, and the relay (libs/events/worker/relay.py) is the one place that turns them into events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, get_args

import msgspec

Phase = Literal[
    "data",
    "indicators",
    "fuzzy",
    "features",
    "labels",
    "split",
    "walk_forward",
    "model",
    "training",
    "evaluation",
    "save",
]
PHASES: Final[tuple[str, ...]] = get_args(Phase)


class ProgressUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One progress report. `kind` says which fields are meaningful:

    - phase: a pipeline step started (`phase`, `message`);
    - batch: after every training batch (running train loss/accuracy of the epoch so far);
    - epoch: after every epoch (adds val metrics, learning rate, epoch duration).
    `percent` is progress over the training run (completed batches / all batches). During
    walk-forward evaluation each fold's finished epoch is a `walk_forward` phase update naming
    the fold (`fold` of `folds`, 1-based) and the epoch; its percent is over all the folds.
    """

    kind: Literal["phase", "batch", "epoch"]
    phase: Phase
    epoch: int = 0  # 1-based
    total_epochs: int = 0
    batch: int = 0  # 1-based within the epoch
    total_batches: int = 0  # per epoch
    completed_batches: int = 0  # over the run
    total_batches_all: int = 0  # total_batches * total_epochs
    percent: float = 0.0
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    epoch_duration: float | None = None
    elapsed: float = 0.0  # training seconds so far (including before a resume)
    eta_seconds: float | None = None
    message: str | None = None
    fold: int = 0  # 1-based; 0: not a walk-forward fold
    folds: int = 0


ProgressCallback = Callable[[ProgressUpdate], None]


class EpochRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One finished epoch. Accuracy is direction accuracy for a regression target."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float  # the rate used during this epoch (before the scheduler stepped)
    duration: float  # seconds, training pass + validation
