"""The training loop: one function, `train`, read top to bottom; pure helpers around it.

Speed habits (measured on these 2-core machines): the whole split lives on the
device as tensors and batches are index slices of a `randperm` (a per-sample DataLoader is
1.4-2.7x slower here). The running train loss/accuracy cost no device op per batch: the batch's
detached output and loss are kept by reference and reduced in one go (a host sync on GPUs) on a
timer while a progress callback listens, else at the epoch's end. Deterministic mode is on, but
without NaN-filling every allocation (that alone cost ~5% of a small MLP's step).

Recurrent models train on `Windows` (libs/pipeline/windows.py) instead of rows: each bar goes
to the device once and `x_tr[idx]` gathers the batch's windows, so the loop is the same.

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
from dataclasses import dataclass, field
from typing import Any, Final, Literal

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
from libs.pipeline.device import DeviceInfo, cpu_device
from libs.pipeline.progress import (
    EpochRecord,
    ProgressCallback,
    ProgressUpdate,
)
from libs.pipeline.strategy import (
    CosineLR,
    ExponentialLR,
    ReduceOnPlateauLR,
    StepLR,
    TrainingConfig,
)
from libs.pipeline.tasks import Task, sample_weighted_loss, task_for
from libs.pipeline.windows import Windows

# A split's inputs: row-major rows (rows, features), or sequence windows over bars (rows, steps,
# features when indexed: a recurrent model's). Both index the same way, `x[idx]` a batch.
Inputs = np.ndarray | torch.Tensor | Windows

log = logging.getLogger(__name__)

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
    # cuDNN (its RNNs: LSTM, GRU) picks algorithms by benchmark unless told to be deterministic.
    previous_cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        deterministic.fill_uninitialized_memory = previous_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous_cudnn


# torch's fused Adam/AdamW kernels: one kernel per step for all parameters instead of about ten
# elementwise ops per parameter tensor, the same update to rounding: measured 20-25% less time
# per step of a small MLP on CPU. Not SGD: no gain measured, and its fused momentum buffers
# start uninitialised when fp16 loss scaling skips the first step. MPS has the kernels too but
# no test machine here, so it keeps torch's default.
_FUSED_DEVICES: Final = frozenset({"cpu", "cuda"})


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `model`'s parameters, on the device they are on."""
    params = list(model.parameters())
    fused = (
        all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params) or None
    )  # None: torch's default kernel
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused
        )
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


@torch.no_grad()
def evaluate_loss_accuracy(
    model: nn.Module,
    x: torch.Tensor | Windows,
    y: torch.Tensor,
    *,
    task: Task,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy over (x, y) in eval mode, chunked; (None, None) when empty."""
    n = len(x)
    if n == 0:
        return None, None
    loss_fn = task.eval_loss()
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        for start in range(0, n, _VAL_CHUNK):
            xb, yb = x[start : start + _VAL_CHUNK], y[start : start + _VAL_CHUNK]
            with _autocast(x.device, autocast_dtype):
                out = task.output(model, xb)
            out = out.float()
            loss_sum += loss_fn(out, yb).double() * len(xb)
            correct += task.hits(out, yb)
    finally:
        model.train(was_training)
    return loss_sum.item() / n, correct.item() / n


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_tensors(
    x: Inputs,
    y: np.ndarray | torch.Tensor,
    *,
    task: Task,
    device: torch.device,
) -> tuple[Any, torch.Tensor]:
    """(inputs, targets) on the device: a tensor of rows, or Windows whose bars moved there
    (each bar once; batches are gathered from them)."""
    yt = torch.as_tensor(np.ascontiguousarray(y) if isinstance(y, np.ndarray) else y)
    yt = yt.to(device=device, dtype=task.target_dtype)
    if isinstance(x, Windows):
        return x.to(device), yt
    xt = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    return xt.to(device=device, dtype=torch.float32), yt


def _sample_weights(
    weights: np.ndarray | None, rows: int, device: torch.device
) -> torch.Tensor | None:
    """The training rows' sample weights on the device: finite, >= 0, one per row."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (rows,):
        raise TrainingInputError(f"{w.shape[0] if w.ndim else 0} sample weights for {rows} rows")
    if not np.isfinite(w).all() or (w < 0).any() or (rows and not w.sum() > 0):
        raise TrainingInputError("sample weights must be finite, >= 0 and not all 0")
    return torch.from_numpy(w).to(device)


def _check_inputs(
    model: nn.Module,
    x_train: torch.Tensor | Windows,
    y_train: torch.Tensor,
    x_val: torch.Tensor | Windows,
    y_val: torch.Tensor,
    cfg: TrainingConfig,
    *,
    task: Task,
    num_outputs: int,
) -> None:
    for name, x, y in (("train", x_train, y_train), ("validation", x_val, y_val)):
        if not isinstance(x, Windows) and x.ndim != 2:
            raise TrainingInputError(
                f"{name} features must be 2-D (rows, features), got {tuple(x.shape)}"
            )
        if len(x) != len(y):
            raise TrainingInputError(f"{name}: {len(x)} feature rows but {len(y)} labels")
        # One float32 sum (~1 ms per 6M values) instead of isfinite().all() (~30 ms): NaN and
        # inf propagate into it; only then pay for the exact check. Windows: their bars, each
        # once (the bars no window reads are zero).
        values = x.bars if isinstance(x, Windows) else x
        if len(x) and not math.isfinite(values.sum().item()):
            if not bool(torch.isfinite(values).all()):
                raise TrainingInputError(f"{name} features contain NaN or inf")
            raise TrainingInputError(f"{name} features are too large (their sum overflows)")
        if (problem := task.label_problem(y, num_outputs)) is not None:
            raise TrainingInputError(f"{name} {problem}")
    if len(x_train) == 0:
        raise TrainingInputError("the training split is empty: more data or a larger train share")
    input_dim = getattr(model, "input_dim", None)
    if input_dim is not None and x_train.shape[-1] != input_dim:
        raise TrainingInputError(
            f"model expects {input_dim} features, data has {x_train.shape[-1]}")
    steps = getattr(model, "sequence_length", None)
    if steps is not None and (not isinstance(x_train, Windows) or x_train.length != steps):
        raise TrainingInputError(f"model reads windows of {steps} bars, data has "
                                 f"{x_train.length if isinstance(x_train, Windows) else 'rows'}")
    if (problem := task.outputs_problem(num_outputs)) is not None:
        raise TrainingInputError(problem)
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


@dataclass(kw_only=True)
class EpochProgress:
    """How far the epoch in progress got before a checkpoint (zero at an epoch boundary)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    duration: float = 0.0


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
        "seen",
        "targets",
        "task",
    )

    def __init__(
        self,
        targets: torch.Tensor,
        *,
        task: Task,
        batch_size: int,
        start_batch: int,
        resumed: EpochProgress,
    ) -> None:
        self.task = task
        self.targets = task.actual(targets)
        self.batch_size = batch_size
        self.outputs: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []  # batch mean losses, pre-scaled for short batches
        self.folded = start_batch  # batches already reduced into the numbers below
        self.loss_sum, self.correct, self.seen = resumed.loss_sum, resumed.correct, resumed.seen

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
        hits = (self.task.predicted(out) == self.targets[lo:hi]).sum()
        loss = torch.stack(self.losses).double().sum() * self.batch_size
        self.loss_sum += loss.item()
        self.correct += hits.item()
        self.seen += hi - lo
        self.folded += len(self.losses)
        self.outputs.clear()
        self.losses.clear()

    def progress(self, duration: float) -> EpochProgress:
        self.fold()
        return EpochProgress(loss_sum=self.loss_sum, correct=self.correct, seen=self.seen,
                             duration=duration)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.seen if self.seen else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else 0.0


@dataclass(kw_only=True)
class TrainState:
    """Everything a run accumulates, and so everything a checkpoint carries besides the
    weights and the optimizer: the history, the best epoch so far, where the run is."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0  # epochs without improvement
    start_epoch: int = 1  # the first epoch this process trains (1-based)
    start_batch: int = 0  # batches of `start_epoch` already done before a resume
    resumed: EpochProgress = field(default_factory=EpochProgress)
    elapsed_before: float = 0.0  # training seconds before this process

    @classmethod
    def from_checkpoint(cls, cp: Checkpoint, device: torch.device) -> TrainState:
        return cls(
            history=list(cp.history),
            best_epoch=cp.best_epoch,
            best_metric=cp.best_metric,
            best_state=({k: v.to(device) for k, v in cp.best_state.items()}
                        if cp.best_state is not None else None),
            since_best=cp.epochs_without_improvement,
            start_epoch=cp.epoch + 1,
            start_batch=cp.batch_in_epoch,
            resumed=EpochProgress(loss_sum=cp.partial_loss_sum, correct=cp.partial_correct,
                                  seen=cp.partial_seen, duration=cp.partial_duration),
            elapsed_before=cp.elapsed,
        )

    def record_epoch(
        self, record: EpochRecord, metric: float, model: nn.Module, *, maximize: bool,
        min_delta: float, keep_best: bool,
    ) -> None:
        """Append the epoch; when `metric` improved, it is the best (weights kept when asked).
        An accuracy must rise by `min_delta` points; a loss must fall by `min_delta` of the
        best loss, so the rule means the same whatever the loss's scale."""
        self.history.append(record)
        best = self.best_metric
        improved = best is None or (
            metric > best + min_delta if maximize else metric < best - min_delta * abs(best)
        )
        if improved:
            self.best_epoch, self.best_metric, self.since_best = record.epoch, metric, 0
            if keep_best:  # a real copy: state_dict() tensors alias the live weights
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.since_best += 1

    def restore_best(self, model: nn.Module) -> bool:
        """Load the best epoch's weights when they are kept and are not the last epoch's."""
        if self.best_state is None or not self.history or self.best_epoch == self.history[-1].epoch:
            return False
        model.load_state_dict(self.best_state)
        return True


def _with_kernel_of(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` with this optimizer's kernel choice (fused, foreach) in its groups: loading a
    state dict replaces the groups, so a checkpoint from an unfused optimizer would switch the
    kernel back while the optimizer still tells GradScaler it is fused (fp16 then fails at the
    first step). Only which kernel runs changes, not the state."""
    kernel = [{k: group[k] for k in ("fused", "foreach") if k in group}
              for group in optimizer.param_groups]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(kernel):
        return saved  # load_state_dict says what does not fit
    return {**saved, "param_groups": [{**group, **mine}
                                      for group, mine in zip(groups, kernel, strict=True)]}


@dataclass(frozen=True, kw_only=True)
class _Parts:
    """The live objects a checkpoint is taken from, besides the TrainState."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    shuffle: torch.Generator
    seed: int
    total_epochs: int
    meta: dict[str, Any]

    def snapshot(
        self, state: TrainState, *, epochs_done: int, batch_in_epoch: int,
        shuffle_state: torch.Tensor, progress: EpochProgress, elapsed: float,
    ) -> Checkpoint:
        # A deep CPU copy: the checkpoint must not alias live tensors (KTRDR's bug).
        return Checkpoint(
            epoch=epochs_done,
            batch_in_epoch=batch_in_epoch,
            total_epochs=self.total_epochs,
            seed=self.seed,
            model_state=cpu_copy(self.model.state_dict()),
            optimizer_state=cpu_copy(self.optimizer.state_dict()),
            scheduler_state=cpu_copy(self.scheduler.state_dict()) if self.scheduler else None,
            scaler_state=(cpu_copy(self.scaler.state_dict()) if self.scaler.is_enabled()
                          else None),
            history=list(state.history),
            best_epoch=state.best_epoch,
            best_metric=state.best_metric,
            best_state=cpu_copy(state.best_state) if state.best_state is not None else None,
            epochs_without_improvement=state.since_best,
            rng=capture_rng(self.shuffle, shuffle_state=shuffle_state),
            partial_loss_sum=progress.loss_sum,
            partial_correct=progress.correct,
            partial_seen=progress.seen,
            partial_duration=progress.duration,
            elapsed=elapsed,
            meta=dict(self.meta),
        )

    def step_scheduler(self, val_loss: float | None) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            assert val_loss is not None  # _check_inputs: reduce_on_plateau needs a validation
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()

    def restore(self, cp: Checkpoint) -> None:
        if cp.seed != self.seed or cp.total_epochs != self.total_epochs:
            raise CheckpointError(
                f"checkpoint was taken for seed {cp.seed} / {cp.total_epochs} epochs, this run "
                f"has seed {self.seed} / {self.total_epochs} epochs: resume with the same settings"
            )
        try:
            self.model.load_state_dict(cp.model_state, strict=True)
        except RuntimeError as exc:  # shapes/keys differ: a checkpoint of another model
            raise CheckpointError(f"checkpoint does not fit this model: {exc}") from exc
        self.optimizer.load_state_dict(_with_kernel_of(self.optimizer, cp.optimizer_state))
        if (self.scheduler is None) != (cp.scheduler_state is None):
            raise CheckpointError("checkpoint and run disagree on whether an lr_scheduler is used")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(cp.scheduler_state)
        if self.scaler.is_enabled() and cp.scaler_state is not None:
            self.scaler.load_state_dict(cp.scaler_state)
        restore_rng(cp.rng, self.shuffle)


class _Reporter:
    """The progress and ETA fold: turns the loop's position into ProgressUpdates."""

    def __init__(
        self, notify: SafeCallback, *, total_epochs: int, batches: int, completed: int,
        elapsed_before: float, stats_interval: float, every_batch: bool,
    ) -> None:
        self.notify = notify
        self.total_epochs, self.batches = total_epochs, batches
        self.total_all = batches * total_epochs
        self.completed = completed  # batches over the run, including before a resume
        self.completed_at_start = completed
        self.elapsed_before = elapsed_before
        self.stats_interval = stats_interval
        self.every_batch = every_batch
        self.next_fold = 0.0  # perf_counter time of the next running-stats refresh
        self.t_run = time.perf_counter()

    @property
    def listening(self) -> bool:
        return self.notify.callback is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_run

    def batch(self, epoch: int, batch: int, stats: _RunningStats) -> None:
        self.completed += 1
        if not self.listening:
            return
        # Refresh the running numbers on the epoch's first batch (so no update says 0), every
        # stats_interval seconds, and exactly on its last batch.
        now = time.perf_counter()
        if now >= self.next_fold or stats.seen == 0 or batch == self.batches:
            stats.fold()
            self.next_fold = now + self.stats_interval
        elif not self.every_batch:
            return
        elapsed = now - self.t_run
        self.notify(ProgressUpdate(
            kind="batch", phase="training", epoch=epoch, total_epochs=self.total_epochs,
            batch=batch, total_batches=self.batches, completed_batches=self.completed,
            total_batches_all=self.total_all, percent=100.0 * self.completed / self.total_all,
            train_loss=stats.mean_loss, train_accuracy=stats.accuracy,
            elapsed=self.elapsed_before + elapsed,
            eta_seconds=elapsed / (self.completed - self.completed_at_start)
            * (self.total_all - self.completed),
        ))

    def epoch(self, record: EpochRecord, *, finished: bool) -> None:
        elapsed = self.elapsed()
        done_here = self.completed - self.completed_at_start
        self.notify(ProgressUpdate(
            kind="epoch", phase="training", epoch=record.epoch, total_epochs=self.total_epochs,
            batch=self.batches, total_batches=self.batches, completed_batches=self.completed,
            total_batches_all=self.total_all,
            percent=100.0 if finished else 100.0 * self.completed / self.total_all,
            train_loss=record.train_loss, train_accuracy=record.train_accuracy,
            val_loss=record.val_loss, val_accuracy=record.val_accuracy,
            learning_rate=record.learning_rate, epoch_duration=record.duration,
            elapsed=self.elapsed_before + elapsed,
            eta_seconds=0.0 if finished
            else elapsed / max(done_here, 1) * (self.total_all - self.completed),
        ))


# --- the loop ---------------------------------------------------------------------------------


def train(
    model: nn.Module,
    x_train: Inputs,
    y_train: np.ndarray | torch.Tensor,
    x_val: Inputs,
    y_val: np.ndarray | torch.Tensor,
    cfg: TrainingConfig,
    *,
    regression: bool = False,
    sample_weight: np.ndarray | None = None,
    device: DeviceInfo | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    progress_callback: ProgressCallback | None = None,
    cancel_token: CancelToken | None = None,
    checkpoint_callback: CheckpointCallback | None = None,
    checkpoint_every: int | None = None,
    checkpoint_interval: float = 0.0,
    resume_from: Checkpoint | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    stats_interval: float = 0.05,
    every_batch: bool = True,
) -> TrainOutcome:
    """Train `model` in place and return its history.

    seed/epochs override `cfg.seed`/`cfg.epochs`; `checkpoint_every` overrides
    `cfg.checkpoint_every` (0: never). `checkpoint_callback` gets a Checkpoint every N epochs,
    at least `checkpoint_interval` seconds after the previous one (or the start), and on cancel
    (then also attached to the TrainingCancelled). With early stopping the model
    ends with the best epoch's weights. The progress callback is called after every batch; its
    running train loss/accuracy are refreshed at most every `stats_interval` seconds (and on
    the epoch's first and last batch, the last being exact). `every_batch=False` calls it only
    with those refreshed updates (a few dozen a second), for a listener that throttles anyway
    (a worker's relay, a progress bar): building and handing over an update on every batch
    cost a small MLP 2-3% of its epoch. Raises TrainingInputError (bad input), CheckpointError
    (a resume_from that does not fit), TrainingCancelled.
    """
    task = task_for(regression)
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
    save_checkpoint = SafeCallback(checkpoint_callback)

    with deterministic_algorithms():
        # --- setup: seeds, tensors on the device, optimizer, scheduler, loss -----------------
        seed_everything(seed)  # dropout draws from torch's global generator
        shuffle = torch.Generator(device="cpu").manual_seed(seed)  # batch order, and only that
        model.to(dev)
        model.train()
        num_outputs = int(getattr(model, "num_outputs", 0) or 0)
        x_tr, y_tr = to_tensors(x_train, y_train, task=task, device=dev)
        w_tr = _sample_weights(sample_weight, len(y_tr), dev)
        x_va, y_va = to_tensors(x_val, y_val, task=task, device=dev)
        if not num_outputs:  # a foreign module: infer from one forward
            with torch.no_grad():
                num_outputs = model(x_tr[:1]).shape[-1]
        _check_inputs(model, x_tr, y_tr, x_va, y_va, cfg, task=task, num_outputs=num_outputs)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, total_epochs)
        # fp16 autocast needs loss scaling to keep small gradients; bf16 and fp32 do not (a
        # disabled scaler passes the loss and the step straight through).
        scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype == torch.float16)
        loss_fn = task.train_loss(weighted=cfg.class_weights, y_train=y_tr,
                                  num_classes=num_outputs, loss=cfg.loss,
                                  focal_gamma=cfg.focal_gamma,
                                  huber_delta=cfg.huber_delta).to(dev)
        params = [p for p in model.parameters() if p.requires_grad]

        early = cfg.early_stopping
        monitor: Literal["val_loss", "val_accuracy", "train_loss"] = (
            early.monitor if early is not None else "val_loss"
        )
        if len(x_va) == 0:
            monitor = "train_loss"  # only reachable without early stopping (checked above)

        n_train, batch_size = len(x_tr), cfg.batch_size
        batches = math.ceil(n_train / batch_size)
        parts = _Parts(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       shuffle=shuffle, seed=seed, total_epochs=total_epochs,
                       meta=dict(checkpoint_meta or {}))
        state = TrainState()
        if resume_from is not None:
            parts.restore(resume_from)
            state = TrainState.from_checkpoint(resume_from, dev)
        report = _Reporter(
            SafeCallback(progress_callback), total_epochs=total_epochs, batches=batches,
            completed=(state.start_epoch - 1) * batches + state.start_batch,
            elapsed_before=state.elapsed_before, stats_interval=stats_interval,
            every_batch=every_batch,
        )
        stopped_early = False
        last_checkpoint = 0.0  # seconds into this run (a resumed one counts from its resume)

        # --- epochs --------------------------------------------------------------------------
        for epoch in range(state.start_epoch, total_epochs + 1):
            first_batch = state.start_batch if epoch == state.start_epoch else 0
            resumed = state.resumed if epoch == state.start_epoch else EpochProgress()
            t_epoch = time.perf_counter() - resumed.duration
            lr = optimizer.param_groups[0]["lr"]
            shuffle_state = shuffle.get_state()  # before the draw: what a resume re-draws from
            perm = torch.randperm(n_train, generator=shuffle).to(dev)
            stats = _RunningStats(y_tr[perm], task=task, batch_size=batch_size,
                                  start_batch=first_batch, resumed=resumed)

            for bi in range(first_batch, batches):
                if cancel_token is not None and cancel_token.is_cancelled():
                    cp = None
                    if checkpoint_callback is not None:  # where it stopped, mid-epoch
                        now = time.perf_counter()
                        cp = parts.snapshot(
                            state, epochs_done=epoch - 1, batch_in_epoch=bi,
                            shuffle_state=shuffle_state, progress=stats.progress(now - t_epoch),
                            elapsed=state.elapsed_before + now - report.t_run,
                        )
                        save_checkpoint(cp)
                    raise TrainingCancelled(f"training cancelled at epoch {epoch}, batch {bi + 1}",
                                            phase="training", checkpoint=cp)

                idx = perm[bi * batch_size : (bi + 1) * batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                with autocast:
                    out = task.output(model, xb)
                    loss = sample_weighted_loss(loss_fn, out, yb,
                                                None if w_tr is None else w_tr[idx])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.gradient_clip is not None:
                    scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                    torch.nn.utils.clip_grad_norm_(params, cfg.gradient_clip)
                scaler.step(optimizer)
                scaler.update()

                stats.record(out.detach(), loss.detach(), len(idx))
                if stats.pending >= _RunningStats.MAX_PENDING:  # bound memory on huge epochs
                    stats.fold()
                report.batch(epoch, bi + 1, stats)

            # --- epoch end: validate, track the best, step the scheduler ----------------------
            stats.fold()
            val_loss, val_acc = evaluate_loss_accuracy(
                model, x_va, y_va, task=task, autocast_dtype=autocast_dtype
            )
            record = EpochRecord(
                epoch=epoch, train_loss=stats.mean_loss, train_accuracy=stats.accuracy,
                val_loss=val_loss, val_accuracy=val_acc, learning_rate=lr,
                duration=time.perf_counter() - t_epoch,
            )
            metric = {"val_loss": val_loss, "val_accuracy": val_acc,
                      "train_loss": record.train_loss}[monitor]
            assert metric is not None  # monitor falls back to train_loss when there is no val
            state.record_epoch(
                record, metric, model, maximize=monitor == "val_accuracy",
                min_delta=early.min_delta if early is not None else 0.0,
                keep_best=early is not None,
            )
            parts.step_scheduler(val_loss)
            stopped_early = early is not None and state.since_best >= early.patience
            finished = stopped_early or epoch == total_epochs
            report.epoch(record, finished=finished)
            if stopped_early:
                log.info("early stopping at epoch %d (best %s %.6g at epoch %s)", epoch, monitor,
                         state.best_metric, state.best_epoch)
                break
            run_seconds = report.elapsed()
            if (checkpoint_callback is not None and every and epoch % every == 0
                    and not finished and run_seconds - last_checkpoint >= checkpoint_interval):
                save_checkpoint(parts.snapshot(
                    state, epochs_done=epoch, batch_in_epoch=0,
                    shuffle_state=shuffle.get_state(), progress=EpochProgress(),
                    elapsed=state.elapsed_before + run_seconds,
                ))
                last_checkpoint = run_seconds

        # --- the best epoch's weights, not the last's --------------------------------------
        restored = early is not None and state.restore_best(model)

    return TrainOutcome(
        history=state.history,
        best_epoch=state.best_epoch,
        best_metric=state.best_metric,
        monitor=monitor,
        stopped_early=stopped_early,
        restored_best=restored,
        epochs_trained=len(state.history),
        batches_per_epoch=batches,
        total_batches=report.completed,
        train_samples=n_train,
        val_samples=len(x_va),
        duration=state.elapsed_before + report.elapsed(),
        resumed_from_epoch=resume_from.epoch if resume_from is not None else None,
        device=device.device,
    )
