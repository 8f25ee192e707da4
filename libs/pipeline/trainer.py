"""The training loop: one function, `train`, read top to bottom; pure helpers around it.

Speed habits (measured on these 2-core machines): the whole split lives on the
device as tensors and batches are index slices of a `randperm` (a per-sample DataLoader is
1.4-2.7x slower here). The running train loss/accuracy cost no device op per batch: the batch's
detached output and loss are kept by reference and reduced in one go (a host sync on GPUs) on a
timer while a progress callback listens, else at the epoch's end. Deterministic mode is on, but
without NaN-filling every allocation (that alone cost ~5% of a small MLP's step).

Reproducibility: python/numpy/torch are seeded from the run's seed, shuffling uses its own
`torch.Generator` (so nothing else that draws random numbers can change the batch order), and
deterministic algorithms are switched on for the duration of the run. Same inputs, same device
type: bit-identical weights, across processes. Checkpoints carry every RNG state, so a resumed
run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec
import numpy as np
import torch
from torch import nn

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng,
    cpu_copy,
    restore_rng,
)
from libs.pipeline.config import (
    CosineLR,
    ExponentialLR,
    ReduceOnPlateauLR,
    StepLR,
    TrainingConfig,
)
from libs.pipeline.device import DeviceInfo, cpu_device
from libs.pipeline.progress import (
    EpochRecord,
    ProgressCallback,
    ProgressUpdate,
)

log = logging.getLogger(__name__)

# Regression target (forward returns, ~1e-3 scale): Huber with a small delta is MSE for normal
# moves and L1 for the fat tails, so a few outliers do not dominate.
HUBER_DELTA = 0.01
_VAL_CHUNK = 65536  # rows per validation forward: bounds activation memory on big splits


class TrainingInputError(ValueError):
    """Raised when the tensors or the training config cannot be trained on (bad input)."""


CheckpointCallback = Callable[[Checkpoint], None]


class TrainOutcome(msgspec.Struct, frozen=True, kw_only=True):
    history: list[EpochRecord]
    best_epoch: int | None
    best_metric: float | None
    monitor: Literal["val_loss", "val_accuracy", "train_loss"]
    stopped_early: bool
    restored_best: bool  # final weights are the best epoch's (early stopping), not the last's
    epochs_trained: int
    batches_per_epoch: int
    total_batches: int  # completed over the run, including before a resume
    train_samples: int
    val_samples: int
    duration: float  # training seconds, including before a resume
    resumed_from_epoch: int | None
    device: str


# --- pure helpers -----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed every global RNG a run can touch (torch also seeds CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels for the run, then the process's previous settings back.

    warn_only: an op without a deterministic kernel warns instead of failing the job.
    fill_uninitialized_memory is switched off: it NaN-fills every `empty` allocation (~30 per
    step here, ~5% of a small MLP's step) to expose code that reads uninitialised memory, which
    this loop never does.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    # A property of torch's module subclass, which type stubs do not see.
    deterministic: Any = torch.utils.deterministic
    previous_fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        deterministic.fill_uninitialized_memory = previous_fill


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise TrainingInputError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_epochs: int
) -> Any:
    """The epoch-level LR scheduler, or None. Stepped once per epoch."""
    s = cfg.lr_scheduler
    if s is None:
        return None
    if isinstance(s, StepLR):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if isinstance(s, ExponentialLR):
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma)
    if isinstance(s, ReduceOnPlateauLR):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr
        )
    if isinstance(s, CosineLR):
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=s.t_max or total_epochs, eta_min=s.eta_min
        )
    raise TrainingInputError(f"unknown lr_scheduler {type(s).__name__}")


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (K * count_c); a class absent from training weighs 0."""
    counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
    weights = torch.where(counts > 0, y.numel() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights


def build_loss(
    cfg: TrainingConfig, *, regression: bool, y_train: torch.Tensor, num_classes: int
) -> nn.Module:
    if regression:
        return nn.HuberLoss(delta=HUBER_DELTA)
    if cfg.class_weights:
        return nn.CrossEntropyLoss(weight=class_weights(y_train, num_classes))
    return nn.CrossEntropyLoss()


def eval_loss_fn(regression: bool) -> nn.Module:
    """Validation/test loss: unweighted, so it is comparable across class-weight settings."""
    return nn.HuberLoss(delta=HUBER_DELTA) if regression else nn.CrossEntropyLoss()


def hits(output: torch.Tensor, target: torch.Tensor, regression: bool) -> torch.Tensor:
    """Correct predictions in a batch, as a 0-dim tensor (no host sync).

    Regression counts direction hits: sign of the predicted return equals the actual's.
    """
    if regression:
        return ((output > 0) == (target > 0)).sum()
    return (output.argmax(dim=1) == target).sum()


def model_output(model: nn.Module, x: torch.Tensor, regression: bool) -> torch.Tensor:
    out = model(x)
    return out.squeeze(-1) if regression else out


@torch.no_grad()
def evaluate_loss_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    regression: bool,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy over (x, y) in eval mode, chunked; (None, None) when empty."""
    n = len(x)
    if n == 0:
        return None, None
    loss_fn = eval_loss_fn(regression)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        for start in range(0, n, _VAL_CHUNK):
            xb, yb = x[start : start + _VAL_CHUNK], y[start : start + _VAL_CHUNK]
            with _autocast(x.device, autocast_dtype):
                out = model_output(model, xb, regression)
            out = out.float()
            loss_sum += loss_fn(out, yb).double() * len(xb)
            correct += hits(out, yb, regression)
    finally:
        model.train(was_training)
    return loss_sum.item() / n, correct.item() / n


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_tensors(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    regression: bool,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    yt = torch.as_tensor(np.ascontiguousarray(y) if isinstance(y, np.ndarray) else y)
    xt = xt.to(device=device, dtype=torch.float32)
    yt = yt.to(device=device, dtype=torch.float32 if regression else torch.int64)
    return xt, yt


def _check_inputs(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: TrainingConfig,
    *,
    regression: bool,
    num_outputs: int,
) -> None:
    for name, x, y in (("train", x_train, y_train), ("validation", x_val, y_val)):
        if x.ndim != 2:
            raise TrainingInputError(
                f"{name} features must be 2-D (rows, features), got {tuple(x.shape)}"
            )
        if len(x) != len(y):
            raise TrainingInputError(f"{name}: {len(x)} feature rows but {len(y)} labels")
        # One float32 sum (~1 ms per 6M values) instead of isfinite().all() (~30 ms): NaN and
        # inf propagate into it; only then pay for the exact check.
        if len(x) and not math.isfinite(x.sum().item()):
            if not bool(torch.isfinite(x).all()):
                raise TrainingInputError(f"{name} features contain NaN or inf")
            raise TrainingInputError(f"{name} features are too large (their sum overflows)")
        if not regression and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
            raise TrainingInputError(
                f"{name} labels must be class ids in [0, {num_outputs}), got "
                f"[{int(y.min())}, {int(y.max())}]"
            )
    if len(x_train) == 0:
        raise TrainingInputError("the training split is empty: more data or a larger train share")
    input_dim = getattr(model, "input_dim", None)
    if input_dim is not None and x_train.shape[1] != input_dim:
        raise TrainingInputError(f"model expects {input_dim} features, data has {x_train.shape[1]}")
    if regression and num_outputs != 1:
        raise TrainingInputError(f"a regression target needs 1 model output, got {num_outputs}")
    if len(x_val) == 0:
        if cfg.early_stopping is not None:
            raise TrainingInputError(
                "early_stopping needs a validation split: set data_split.validation > 0"
            )
        if isinstance(cfg.lr_scheduler, ReduceOnPlateauLR):
            raise TrainingInputError(
                "lr_scheduler reduce_on_plateau needs a validation split: "
                "set data_split.validation > 0"
            )


def _improved(metric: float, best: float | None, *, maximize: bool, min_delta: float) -> bool:
    if best is None:
        return True
    return metric > best + min_delta if maximize else metric < best - min_delta


class SafeCallback:
    """Calls the progress callback; a callback that raises is logged once, never fatal."""

    __slots__ = ("callback", "failures")

    def __init__(self, callback: Callable[[Any], None] | None) -> None:
        self.callback = callback
        self.failures = 0

    def __call__(self, item: Any) -> None:
        if self.callback is None:
            return
        try:
            self.callback(item)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception(
                    "%s raised; training continues (further errors are counted)",
                    getattr(self.callback, "__name__", "callback"),
                )


class _RunningStats:
    """Train loss/accuracy of the current epoch, at no device op per batch.

    `record` only keeps references to the batch's detached output and loss (a list append;
    holding them keeps a few KB alive, not the autograd graph). `fold(upto)` reduces what was
    recorded with a handful of vectorised ops and two `.item()` calls (the host sync on GPUs).
    Targets are taken in the epoch's shuffled order once, so the comparison is one contiguous
    slice. The trainer folds on a timer when someone listens, and every MAX_PENDING batches
    regardless, so memory stays bounded on huge epochs.
    """

    MAX_PENDING = 512

    __slots__ = (
        "batch_size",
        "correct",
        "folded",
        "loss_sum",
        "losses",
        "outputs",
        "regression",
        "seen",
        "targets",
    )

    def __init__(
        self,
        targets: torch.Tensor,
        *,
        regression: bool,
        batch_size: int,
        start_batch: int,
        loss_sum: float,
        correct: float,
        seen: int,
    ) -> None:
        self.regression = regression
        self.targets = targets > 0 if regression else targets  # direction for a regression
        self.batch_size = batch_size
        self.outputs: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []  # batch mean losses, pre-scaled for short batches
        self.folded = start_batch  # batches already reduced into the numbers below
        self.loss_sum, self.correct, self.seen = loss_sum, correct, seen

    def record(self, out: torch.Tensor, loss: torch.Tensor, n: int) -> None:
        self.outputs.append(out)
        # every batch is full but the last: scale that one so sum(losses) * batch_size is exact
        self.losses.append(loss if n == self.batch_size else loss * (n / self.batch_size))

    @property
    def pending(self) -> int:
        return len(self.losses)

    def fold(self) -> None:
        if not self.losses:
            return
        lo = self.folded * self.batch_size
        out = torch.cat(self.outputs)
        hi = lo + len(out)
        predicted = out > 0 if self.regression else out.argmax(dim=1)
        hits = (predicted == self.targets[lo:hi]).sum()
        loss = torch.stack(self.losses).double().sum() * self.batch_size
        self.loss_sum += loss.item()
        self.correct += hits.item()
        self.seen += hi - lo
        self.folded += len(self.losses)
        self.outputs.clear()
        self.losses.clear()

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.seen if self.seen else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else 0.0


def _restore(
    cp: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    shuffle: torch.Generator,
    seed: int,
    total_epochs: int,
) -> None:
    if cp.seed != seed or cp.total_epochs != total_epochs:
        raise CheckpointError(
            f"checkpoint was taken for seed {cp.seed} / {cp.total_epochs} epochs, this run has "
            f"seed {seed} / {total_epochs} epochs: resume with the same settings"
        )
    try:
        model.load_state_dict(cp.model_state, strict=True)
    except RuntimeError as exc:  # shapes/keys differ: a checkpoint of another model
        raise CheckpointError(f"checkpoint does not fit this model: {exc}") from exc
    optimizer.load_state_dict(cp.optimizer_state)
    if (scheduler is None) != (cp.scheduler_state is None):
        raise CheckpointError("checkpoint and run disagree on whether an lr_scheduler is used")
    if scheduler is not None:
        scheduler.load_state_dict(cp.scheduler_state)
    if scaler is not None and cp.scaler_state is not None:
        scaler.load_state_dict(cp.scaler_state)
    restore_rng(cp.rng, shuffle)


# --- the loop ---------------------------------------------------------------------------------


def train(
    model: nn.Module,
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    x_val: np.ndarray | torch.Tensor,
    y_val: np.ndarray | torch.Tensor,
    cfg: TrainingConfig,
    *,
    regression: bool = False,
    device: DeviceInfo | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    progress_callback: ProgressCallback | None = None,
    cancel_token: CancelToken | None = None,
    checkpoint_callback: CheckpointCallback | None = None,
    checkpoint_every: int | None = None,
    resume_from: Checkpoint | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    stats_interval: float = 0.05,
) -> TrainOutcome:
    """Train `model` in place and return its history.

    seed/epochs override `cfg.seed`/`cfg.epochs`; `checkpoint_every` overrides
    `cfg.checkpoint_every` (0: never). `checkpoint_callback` gets a Checkpoint every N epochs
    and on cancel (then also attached to the TrainingCancelled). With early stopping the model
    ends with the best epoch's weights. The progress callback is called after every batch; its
    running train loss/accuracy are refreshed at most every `stats_interval` seconds (and on
    the epoch's first and last batch, the last being exact). Raises TrainingInputError (bad
    input), CheckpointError (a resume_from that does not fit), TrainingCancelled.
    """
    device = device or cpu_device()
    dev = device.torch_device
    seed = cfg.seed if seed is None else seed
    total_epochs = epochs if epochs is not None else cfg.epochs
    if total_epochs <= 0:
        raise TrainingInputError(f"epochs must be > 0, got {total_epochs}")
    every = cfg.checkpoint_every if checkpoint_every is None else checkpoint_every
    if dev.type == "cuda":
        # cuBLAS needs this for deterministic matmuls; only effective before CUDA init.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    autocast_dtype = device.autocast_dtype if dev.type == "cuda" else None
    autocast = _autocast(dev, autocast_dtype)
    notify = SafeCallback(progress_callback)
    save_checkpoint = SafeCallback(checkpoint_callback)

    with deterministic_algorithms():
        # --- setup: seeds, tensors on the device, optimizer, scheduler, loss -----------------
        seed_everything(seed)  # dropout draws from torch's global generator
        shuffle = torch.Generator(device="cpu").manual_seed(seed)  # batch order, and only that
        model.to(dev)
        model.train()
        num_outputs = int(getattr(model, "num_outputs", 0) or 0)
        x_tr, y_tr = to_tensors(x_train, y_train, regression=regression, device=dev)
        x_va, y_va = to_tensors(x_val, y_val, regression=regression, device=dev)
        if not num_outputs:  # a foreign module: infer from one forward
            with torch.no_grad():
                num_outputs = model(x_tr[:1]).shape[-1]
        _check_inputs(
            model, x_tr, y_tr, x_va, y_va, cfg, regression=regression, num_outputs=num_outputs
        )
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_epochs)
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        # fp16 autocast needs loss scaling to keep small gradients; bf16 does not.
        scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
        loss_fn = build_loss(cfg, regression=regression, y_train=y_tr, num_classes=num_outputs)
        loss_fn.to(dev)
        params = [p for p in model.parameters() if p.requires_grad]

        early = cfg.early_stopping
        monitor: Literal["val_loss", "val_accuracy", "train_loss"] = (
            early.monitor if early is not None else "val_loss"
        )
        if len(x_va) == 0:
            monitor = "train_loss"  # only reachable without early stopping (checked above)
        maximize = monitor == "val_accuracy"
        min_delta = early.min_delta if early is not None else 0.0

        n_train, batch_size = len(x_tr), cfg.batch_size
        batches = math.ceil(n_train / batch_size)
        total_all = batches * total_epochs

        history: list[EpochRecord] = []
        best_epoch: int | None = None
        best_metric: float | None = None
        best_state: dict[str, torch.Tensor] | None = None
        since_best = 0
        start_epoch, start_batch = 1, 0
        partial = (0.0, 0.0, 0, 0.0)  # loss_sum, correct, seen, duration of a resumed epoch
        elapsed_before = 0.0
        cp: Checkpoint | None
        if resume_from is not None:
            cp = resume_from
            _restore(
                cp,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                shuffle=shuffle,
                seed=seed,
                total_epochs=total_epochs,
            )
            history = list(cp.history)
            best_epoch, best_metric = cp.best_epoch, cp.best_metric
            best_state = (
                {k: v.to(dev) for k, v in cp.best_state.items()}
                if cp.best_state is not None
                else None
            )
            since_best = cp.epochs_without_improvement
            start_epoch, start_batch = cp.epoch + 1, cp.batch_in_epoch
            partial = (
                cp.partial_loss_sum,
                cp.partial_correct,
                cp.partial_seen,
                cp.partial_duration,
            )
            elapsed_before = cp.elapsed

        def snapshot(
            epochs_done: int,
            batch_in_epoch: int,
            shuffle_state: torch.Tensor,
            running: tuple[float, float, int, float],
            elapsed: float,
        ) -> Checkpoint:
            # A deep CPU copy: the checkpoint must not alias live tensors (KTRDR's bug).
            return Checkpoint(
                epoch=epochs_done,
                batch_in_epoch=batch_in_epoch,
                total_epochs=total_epochs,
                seed=seed,
                model_state=cpu_copy(model.state_dict()),
                optimizer_state=cpu_copy(optimizer.state_dict()),
                scheduler_state=cpu_copy(scheduler.state_dict()) if scheduler else None,
                scaler_state=cpu_copy(scaler.state_dict()) if scaler else None,
                history=list(history),
                best_epoch=best_epoch,
                best_metric=best_metric,
                best_state=cpu_copy(best_state) if best_state is not None else None,
                epochs_without_improvement=since_best,
                rng=capture_rng(shuffle, shuffle_state=shuffle_state),
                partial_loss_sum=running[0],
                partial_correct=running[1],
                partial_seen=running[2],
                partial_duration=running[3],
                elapsed=elapsed,
                meta=dict(checkpoint_meta or {}),
            )

        completed = (start_epoch - 1) * batches + start_batch
        completed_at_start = completed
        next_fold = 0.0  # perf_counter time of the next running-stats refresh
        stopped_early = False
        t_run = time.perf_counter()

        # --- epochs --------------------------------------------------------------------------
        for epoch in range(start_epoch, total_epochs + 1):
            t_epoch = time.perf_counter() - partial[3]
            lr = optimizer.param_groups[0]["lr"]
            shuffle_state = shuffle.get_state()  # before the draw: what a resume re-draws from
            perm = torch.randperm(n_train, generator=shuffle).to(dev)
            # Running stats cost no device op per batch (references only); `stats.fold` turns
            # them into numbers (a host sync on GPUs) on a timer when someone listens.
            stats = _RunningStats(
                y_tr[perm],
                regression=regression,
                batch_size=batch_size,
                start_batch=start_batch,
                loss_sum=partial[0],
                correct=partial[1],
                seen=partial[2],
            )

            for bi in range(start_batch, batches):
                if cancel_token is not None and cancel_token.is_cancelled():
                    cp = None
                    if checkpoint_callback is not None:
                        stats.fold()
                        now = time.perf_counter()
                        running = (stats.loss_sum, stats.correct, stats.seen, now - t_epoch)
                        cp = snapshot(
                            epoch - 1, bi, shuffle_state, running, elapsed_before + now - t_run
                        )
                        save_checkpoint(cp)
                    raise TrainingCancelled(
                        f"training cancelled at epoch {epoch}, batch {bi + 1}",
                        phase="training",
                        checkpoint=cp,
                    )

                lo = bi * batch_size
                idx = perm[lo : lo + batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                with autocast:
                    out = model_output(model, xb, regression)
                    loss = loss_fn(out, yb)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if cfg.gradient_clip is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                        torch.nn.utils.clip_grad_norm_(params, cfg.gradient_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if cfg.gradient_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.gradient_clip)
                    optimizer.step()
                stats.record(out.detach(), loss.detach(), len(idx))
                if stats.pending >= _RunningStats.MAX_PENDING:  # bound memory on huge epochs
                    stats.fold()
                completed += 1

                if notify.callback is not None:
                    # refresh the running numbers on the epoch's first batch (so no update says
                    # 0), every stats_interval seconds, and exactly on its last batch
                    now = time.perf_counter()
                    if now >= next_fold or stats.seen == 0 or bi == batches - 1:
                        stats.fold()
                        next_fold = now + stats_interval
                    elapsed = now - t_run
                    notify(
                        ProgressUpdate(
                            kind="batch",
                            phase="training",
                            epoch=epoch,
                            total_epochs=total_epochs,
                            batch=bi + 1,
                            total_batches=batches,
                            completed_batches=completed,
                            total_batches_all=total_all,
                            percent=100.0 * completed / total_all,
                            train_loss=stats.mean_loss,
                            train_accuracy=stats.accuracy,
                            elapsed=elapsed_before + elapsed,
                            eta_seconds=elapsed
                            / (completed - completed_at_start)
                            * (total_all - completed),
                        )
                    )
            start_batch, partial = 0, (0.0, 0.0, 0, 0.0)  # only the first resumed epoch is partial
            stats.fold()
            train_loss, train_acc = stats.mean_loss, stats.accuracy

            # --- epoch end: validate, track the best, step the scheduler ----------------------
            val_loss, val_acc = evaluate_loss_accuracy(
                model, x_va, y_va, regression=regression, autocast_dtype=autocast_dtype
            )
            duration = time.perf_counter() - t_epoch
            history.append(
                EpochRecord(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_accuracy=train_acc,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    learning_rate=lr,
                    duration=duration,
                )
            )
            metric = {"val_loss": val_loss, "val_accuracy": val_acc, "train_loss": train_loss}[
                monitor
            ]
            assert metric is not None  # monitor falls back to train_loss when there is no val
            if _improved(metric, best_metric, maximize=maximize, min_delta=min_delta):
                best_epoch, best_metric, since_best = epoch, metric, 0
                if early is not None:  # a real copy: state_dict() tensors alias the live weights
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
            if plateau:
                scheduler.step(val_loss)
            elif scheduler is not None:
                scheduler.step()
            stopped_early = early is not None and since_best >= early.patience

            elapsed = time.perf_counter() - t_run
            done_here = completed - completed_at_start
            finished = stopped_early or epoch == total_epochs
            notify(
                ProgressUpdate(
                    kind="epoch",
                    phase="training",
                    epoch=epoch,
                    total_epochs=total_epochs,
                    batch=batches,
                    total_batches=batches,
                    completed_batches=completed,
                    total_batches_all=total_all,
                    percent=100.0 if finished else 100.0 * completed / total_all,
                    train_loss=train_loss,
                    train_accuracy=train_acc,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    learning_rate=lr,
                    epoch_duration=duration,
                    elapsed=elapsed_before + elapsed,
                    eta_seconds=0.0
                    if finished
                    else elapsed / max(done_here, 1) * (total_all - completed),
                )
            )
            if stopped_early:
                log.info(
                    "early stopping at epoch %d (best %s %.6g at epoch %s)",
                    epoch,
                    monitor,
                    best_metric,
                    best_epoch,
                )
                break
            if checkpoint_callback is not None and every and epoch % every == 0 and not finished:
                save_checkpoint(
                    snapshot(
                        epoch, 0, shuffle.get_state(), (0.0, 0.0, 0, 0.0), elapsed_before + elapsed
                    )
                )

        # --- the best epoch's weights, not the last's --------------------------------------
        restored = False
        if (
            early is not None
            and best_state is not None
            and history
            and best_epoch != history[-1].epoch
        ):
            model.load_state_dict(best_state)
            restored = True

    return TrainOutcome(
        history=history,
        best_epoch=best_epoch,
        best_metric=best_metric,
        monitor=monitor,
        stopped_early=stopped_early,
        restored_best=restored,
        epochs_trained=len(history),
        batches_per_epoch=batches,
        total_batches=completed,
        train_samples=n_train,
        val_samples=len(x_va),
        duration=elapsed_before + time.perf_counter() - t_run,
        resumed_from_epoch=resume_from.epoch if resume_from is not None else None,
        device=device.device,
    )
