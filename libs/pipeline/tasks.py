"""What the model learns, as one object: classification (BUY/HOLD/SELL classes) or regression (a
forward return). The training loop, the evaluation and the running statistics ask the task
instead of testing a `regression` flag: the target dtype, the output shape, the losses, what
counts as a hit, and which labels are valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

# Regression target (forward returns, ~1e-3 scale): Huber with a small delta is MSE for normal
# moves and L1 for the fat tails, so a few outliers do not dominate.
HUBER_DELTA: Final = 0.01


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (K * count_c); a class absent from training weighs 0."""
    counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
    return torch.where(counts > 0, y.numel() / (num_classes * counts.clamp(min=1)), 0.0)


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_t)^gamma, so
    rows the model already gets right weigh less; `weight` scales each class as in
    CrossEntropyLoss (a weighted mean). gamma = 0 is cross-entropy."""

    def __init__(self, *, gamma: float, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)
        self.weight: torch.Tensor | None

    def per_row(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each row's focal loss, without the class weights."""
        log_p = torch.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        return -((1.0 - log_p.exp()) ** self.gamma) * log_p

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.per_row(logits, target)
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (loss * w).sum() / w.sum()


def per_row_losses(
    loss_fn: nn.Module, output: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(each row's loss, each row's class weight or None) for a loss `Task.train_loss` builds:
    the terms its own mean averages, so a weighted mean of them can add sample weights."""
    if isinstance(loss_fn, FocalLoss):
        rows = loss_fn.per_row(output, target)
    elif isinstance(loss_fn, nn.CrossEntropyLoss):
        rows = F.cross_entropy(output, target, reduction="none")
    elif isinstance(loss_fn, nn.HuberLoss):
        return F.huber_loss(output, target, reduction="none", delta=loss_fn.delta), None
    elif isinstance(loss_fn, nn.MSELoss):
        return F.mse_loss(output, target, reduction="none"), None
    else:
        raise TypeError(f"no per-row form for {type(loss_fn).__name__}")
    class_weight: torch.Tensor | None = loss_fn.weight
    return rows, None if class_weight is None else class_weight[target]


def sample_weighted_loss(
    loss_fn: nn.Module, output: torch.Tensor, target: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of a batch with optional per-row sample weights (e.g. the
    uniqueness weights of labels.sample_weights): sum(w_i * c_i * l_i) / sum(w_i * c_i) over
    the rows, c_i the class weight of row i's target (1 without class weights). Without
    `weight` this is `loss_fn(output, target)` itself, bit for bit."""
    if weight is None:
        return loss_fn(output, target)
    rows, class_weight = per_row_losses(loss_fn, output, target)
    scale = weight.to(rows.dtype) if class_weight is None else weight * class_weight
    return (rows * scale).sum() / scale.sum()


@dataclass(frozen=True, slots=True)
class Task:
    """The learning task. `regression`: one output, a float target, direction accuracy;
    else one logit per class, an int64 class id, accuracy."""

    regression: bool

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.float32 if self.regression else torch.int64

    def output(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out.squeeze(-1) if self.regression else out

    def predicted(self, output: torch.Tensor) -> torch.Tensor:
        """What a hit compares: the predicted direction (regression) or class."""
        return output > 0 if self.regression else output.argmax(dim=1)

    def actual(self, target: torch.Tensor) -> torch.Tensor:
        return target > 0 if self.regression else target

    def hits(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a batch, as a 0-dim tensor (no host sync)."""
        return (self.predicted(output) == self.actual(target)).sum()

    def train_loss(
        self, *, weighted: bool, y_train: torch.Tensor, num_classes: int,
        loss: str | None = None, focal_gamma: float = 2.0, huber_delta: float | None = None,
    ) -> nn.Module:
        """The training loss the strategy names (`training.loss`; None: cross-entropy or
        Huber), class-weighted by inverse frequency when `weighted`."""
        if self.regression:
            if loss == "mse":
                return nn.MSELoss()
            return nn.HuberLoss(delta=huber_delta or HUBER_DELTA)
        weight = class_weights(y_train, num_classes) if weighted else None
        if loss == "focal":
            return FocalLoss(gamma=focal_gamma, weight=weight)
        return nn.CrossEntropyLoss(weight=weight)

    def eval_loss(self) -> nn.Module:
        """Validation/test loss: unweighted, so it is comparable across class-weight settings."""
        return nn.HuberLoss(delta=HUBER_DELTA) if self.regression else nn.CrossEntropyLoss()

    def label_problem(self, y: torch.Tensor, num_outputs: int) -> str | None:
        """Why a model with `num_outputs` cannot learn these labels, or None."""
        if not self.regression and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
            return (f"labels must be class ids in [0, {num_outputs}), got "
                    f"[{int(y.min())}, {int(y.max())}]")
        return None

    def outputs_problem(self, num_outputs: int) -> str | None:
        """Why a model with `num_outputs` does not fit this task, or None."""
        if self.regression and num_outputs != 1:
            return f"a regression target needs 1 model output, got {num_outputs}"
        return None


CLASSIFICATION: Final = Task(regression=False)
REGRESSION: Final = Task(regression=True)


def task_for(regression: bool) -> Task:
    return REGRESSION if regression else CLASSIFICATION
