"""The trainer on small real data (synthetic bars through the real pipeline steps).

Covers: every optimizer and scheduler, clipping, class weights, regression, progress updates,
a raising callback, cancellation mid-epoch, early stopping restoring the best weights (not the
last), checkpoint -> bytes -> resume giving bit-identical weights, determinism across two
processes, and bad inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from libs.pipeline.model import build_model
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.storage.models import weights_sha256
from libs.pipeline.strategy import (
    CosineLR,
    EarlyStoppingConfig,
    ExponentialLR,
    ReduceOnPlateauLR,
    StepLR,
    StrategyConfig,
    TrainingConfig,
)
from libs.pipeline.tasks import class_weights
from libs.pipeline.trainer import TrainingInputError, build_optimizer, seed_everything, train

from .conftest import fresh_model, run

REPO_ROOT = Path(__file__).resolve().parents[2]


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def with_training(strategy: StrategyConfig, **changes: Any) -> TrainingConfig:
    return msgspec.structs.replace(strategy.training, **changes)


# --- optimizers, schedulers, options --------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_each_optimizer_trains_and_changes_the_weights(
    optimizer: str, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(tiny_strategy, optimizer=optimizer, weight_decay=1e-4, epochs=2)
    model = fresh_model(tiny_strategy, tiny_splits.x_train.shape[1])
    before = copy_state(model)
    out = train(
        model, tiny_splits.x_train, tiny_splits.y_train, tiny_splits.x_val, tiny_splits.y_val, cfg
    )
    assert out.epochs_trained == 2 and len(out.history) == 2
    assert not same_weights(before, copy_state(model))
    assert all(math.isfinite(h.train_loss) and math.isfinite(h.val_loss or 0) for h in out.history)


@pytest.mark.parametrize(("optimizer", "fused"), [
    ("adam", True), ("adamw", True), ("sgd", None), ("rmsprop", None)])
def test_adam_runs_torchs_fused_kernel_on_cpu(
    optimizer: str, fused: bool | None, tiny_strategy: StrategyConfig
) -> None:
    cfg = with_training(tiny_strategy, optimizer=optimizer, momentum=0.9)
    model = build_model(6, 3, tiny_strategy.model)
    assert build_optimizer(model, cfg).defaults.get("fused") is fused
    # parameters on a device without a test machine here keep torch's default
    assert build_optimizer(model.to("meta"), cfg).defaults.get("fused") is None


def test_a_checkpoint_of_an_unfused_optimizer_resumes_into_the_same_weights(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    """A checkpoint taken before the fused kernel (its groups say fused None) resumes on the
    fused kernel, as one taken now does: loading it must not switch the kernel back."""
    cfg = with_training(tiny_strategy, epochs=3, checkpoint_every=1)
    saved: list[Checkpoint] = []
    run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=saved.append)
    now = saved[0]
    assert all(group["fused"] is True for group in now.optimizer_state["param_groups"])
    before = dataclasses.replace(now, optimizer_state={
        **now.optimizer_state,
        "param_groups": [{**group, "fused": None} for group in now.optimizer_state["param_groups"]],
    })
    weights = []
    for cp in (now, before):
        model = build_model(tiny_splits.x_train.shape[1], 3, tiny_strategy.model)
        train(model, tiny_splits.x_train, tiny_splits.y_train, tiny_splits.x_val,
              tiny_splits.y_val, cfg,  # through bytes, as a worker stores it (and unshared)
              resume_from=checkpoint_from_bytes(checkpoint_to_bytes(cp)))
        weights.append(weights_sha256(model.state_dict()))
    assert weights[0] == weights[1]


@pytest.mark.parametrize(
    ("scheduler", "expected_lrs"),
    [
        (StepLR(step_size=1, gamma=0.5), [0.004, 0.002, 0.001]),
        (ExponentialLR(gamma=0.1), [0.004, 0.0004, 0.00004]),
        (CosineLR(t_max=2, eta_min=0.0), [0.004, 0.002, 0.0]),
        (ReduceOnPlateauLR(factor=0.5, patience=0), None),
    ],
)
def test_each_scheduler_steps_once_per_epoch(
    scheduler: Any,
    expected_lrs: list[float] | None,
    tiny_strategy: StrategyConfig,
    tiny_splits: Any,
) -> None:
    cfg = with_training(tiny_strategy, lr_scheduler=scheduler, learning_rate=0.004, epochs=3)
    _, out = run(tiny_strategy, tiny_splits, cfg)
    lrs = [h.learning_rate for h in out.history]  # the rate used during each epoch
    if expected_lrs is not None:
        assert lrs == pytest.approx(expected_lrs, abs=1e-12)
    else:  # plateau: never above the start, halves only after an epoch without improvement
        assert lrs[0] == 0.004 and all(b in (a, a / 2) for a, b in itertools.pairwise(lrs))


def test_gradient_clipping_and_class_weights_run(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(tiny_strategy, gradient_clip=0.5, class_weights=True, epochs=2)
    _, out = run(tiny_strategy, tiny_splits, cfg)
    assert out.epochs_trained == 2


def test_class_weights_are_inverse_frequency() -> None:
    y = torch.tensor([0, 0, 0, 1, 2, 2])  # counts 3, 1, 2 of n=6, K=3: w = 6 / (3 * count)
    assert class_weights(y, 3).tolist() == pytest.approx([2 / 3, 2.0, 1.0])
    assert class_weights(torch.tensor([0, 0, 2]), 3).tolist() == pytest.approx([0.5, 0.0, 1.0])


def test_regression_target(tiny_strategy: StrategyConfig, tiny_splits: Any) -> None:
    rng = np.random.default_rng(0)
    y_train = rng.normal(0, 0.01, tiny_splits.n_train).astype(np.float32)
    y_val = rng.normal(0, 0.01, tiny_splits.n_val).astype(np.float32)
    seed_everything(0)
    model = build_model(tiny_splits.x_train.shape[1], 1, tiny_strategy.model)
    out = train(
        model,
        tiny_splits.x_train,
        y_train,
        tiny_splits.x_val,
        y_val,
        with_training(tiny_strategy, epochs=2),
        regression=True,
    )
    assert out.epochs_trained == 2
    assert 0.0 <= out.history[-1].train_accuracy <= 1.0  # direction accuracy


# --- progress -------------------------------------------------------------------------------


def test_progress_updates_every_batch_with_consistent_counts(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    updates: list[ProgressUpdate] = []
    _, out = run(tiny_strategy, tiny_splits, progress_callback=updates.append)
    batches = math.ceil(tiny_splits.n_train / tiny_strategy.training.batch_size)
    epochs = tiny_strategy.training.epochs
    batch_updates = [u for u in updates if u.kind == "batch"]
    epoch_updates = [u for u in updates if u.kind == "epoch"]
    # Check: one update per batch, completed counts up by one, percent is over the whole run
    assert len(batch_updates) == batches * epochs
    assert [u.completed_batches for u in batch_updates] == list(range(1, batches * epochs + 1))
    assert all(u.total_batches_all == batches * epochs for u in batch_updates)
    assert [u.batch for u in batch_updates[:batches]] == list(range(1, batches + 1))
    assert all(0 < u.percent <= 100 for u in batch_updates)
    assert all(u.train_loss is not None and u.train_loss > 0 for u in batch_updates)
    assert all(u.eta_seconds is not None and u.eta_seconds >= 0 for u in batch_updates)
    # Check: epoch updates carry validation metrics, lr, duration, and match the history
    assert [u.epoch for u in epoch_updates] == list(range(1, epochs + 1))
    for u, h in zip(epoch_updates, out.history, strict=True):
        assert (u.val_loss, u.val_accuracy, u.learning_rate) == (
            h.val_loss,
            h.val_accuracy,
            h.learning_rate,
        )
        assert u.train_loss == pytest.approx(h.train_loss)
        assert u.epoch_duration is not None and u.epoch_duration > 0
    assert epoch_updates[-1].percent == 100.0 and epoch_updates[-1].eta_seconds == 0.0
    # the last batch update of an epoch has the exact epoch stats
    assert batch_updates[batches - 1].train_loss == pytest.approx(out.history[0].train_loss)
    assert msgspec.json.decode(msgspec.json.encode(updates[0]), type=ProgressUpdate) == updates[0]


def test_a_raising_callback_is_logged_once_and_training_finishes(
    tiny_strategy: StrategyConfig, tiny_splits: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def broken(update: ProgressUpdate) -> None:
        calls.append(update)
        raise RuntimeError("display went away")

    with caplog.at_level(logging.ERROR, logger="libs.pipeline.trainer"):
        _, out = run(tiny_strategy, tiny_splits, progress_callback=broken)
    assert out.epochs_trained == tiny_strategy.training.epochs
    assert len(calls) > 10
    assert len([r for r in caplog.records if "broken raised" in r.getMessage()]) == 1


def test_same_weights_with_or_without_a_callback(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    a, _ = run(tiny_strategy, tiny_splits)
    b, _ = run(
        tiny_strategy, tiny_splits, progress_callback=lambda u: None, cancel_token=CancelToken()
    )
    assert weights_sha256(a.state_dict()) == weights_sha256(b.state_dict())


def test_every_batch_false_hands_over_only_the_refreshed_updates_and_trains_the_same(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    every: list[ProgressUpdate] = []
    refreshed: list[ProgressUpdate] = []
    a, _ = run(tiny_strategy, tiny_splits, progress_callback=every.append, stats_interval=1e9)
    b, _ = run(tiny_strategy, tiny_splits, progress_callback=refreshed.append,
               stats_interval=1e9, every_batch=False)
    batches = math.ceil(tiny_splits.n_train / tiny_strategy.training.batch_size)
    epochs = tiny_strategy.training.epochs
    assert batches > 2
    # A refresh a run never reaches: each epoch's first and last batch, as in the full stream.
    got = [u for u in refreshed if u.kind == "batch"]
    assert [(u.epoch, u.batch) for u in got] == [
        (e, k) for e in range(1, epochs + 1) for k in (1, batches)
    ]
    by_position = {(u.epoch, u.batch): u for u in every if u.kind == "batch"}
    assert all(u.train_loss == by_position[u.epoch, u.batch].train_loss
               and u.completed_batches == by_position[u.epoch, u.batch].completed_batches
               for u in got)

    def epochs_of(updates: list[ProgressUpdate]) -> list[tuple[Any, ...]]:
        return [(u.epoch, u.train_loss, u.train_accuracy, u.val_loss, u.percent)
                for u in updates if u.kind == "epoch"]

    assert epochs_of(refreshed) == epochs_of(every) and len(epochs_of(every)) == epochs
    assert weights_sha256(a.state_dict()) == weights_sha256(b.state_dict())


# --- cancellation ---------------------------------------------------------------------------


def cancel_at(token: CancelToken, epoch: int, batch: int):
    def callback(update: ProgressUpdate) -> None:
        if update.kind == "batch" and update.epoch == epoch and update.batch == batch:
            token.cancel("test")

    return callback


def test_cancel_mid_epoch_raises_with_a_checkpoint(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    token = CancelToken()
    taken: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        run(
            tiny_strategy,
            tiny_splits,
            progress_callback=cancel_at(token, 2, 5),
            cancel_token=token,
            checkpoint_callback=taken.append,
        )
    cp = info.value.checkpoint
    assert cp is not None and taken == [cp]
    # Check: tripped after batch 5 of epoch 2, so 1 epoch done and 5 batches of the next
    assert (cp.epoch, cp.batch_in_epoch, len(cp.history)) == (1, 5, 1)
    assert cp.partial_seen == 5 * tiny_strategy.training.batch_size
    assert info.value.phase == "training"


def test_cancel_without_checkpoint_callback_carries_none(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(TrainingCancelled) as info:
        run(tiny_strategy, tiny_splits, cancel_token=token)
    assert info.value.checkpoint is None


# --- early stopping -------------------------------------------------------------------------


def test_early_stopping_restores_the_best_epoch_not_the_last(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    # min_delta 2.0 on val_accuracy: only epoch 1 can be "best", so epoch 2 runs out patience.
    cfg = with_training(
        tiny_strategy,
        epochs=5,
        early_stopping=EarlyStoppingConfig(patience=1, min_delta=2.0, monitor="val_accuracy"),
    )
    model = fresh_model(tiny_strategy, tiny_splits.x_train.shape[1])
    at_epoch_end: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(update: ProgressUpdate) -> None:
        if update.kind == "epoch":
            at_epoch_end[update.epoch] = copy_state(model)

    out = train(
        model,
        tiny_splits.x_train,
        tiny_splits.y_train,
        tiny_splits.x_val,
        tiny_splits.y_val,
        cfg,
        progress_callback=snapshot,
    )
    assert out.stopped_early and out.restored_best
    assert (out.best_epoch, out.epochs_trained) == (1, 2)
    final = copy_state(model)
    # Check: the final weights are epoch 1's (a real copy was kept) and not epoch 2's
    assert same_weights(final, at_epoch_end[1])
    assert not same_weights(final, at_epoch_end[2])


def test_early_stopping_on_val_loss_keeps_the_lowest(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(
        tiny_strategy,
        epochs=6,
        learning_rate=0.05,
        early_stopping=EarlyStoppingConfig(patience=2, min_delta=0.0),
    )
    _, out = run(tiny_strategy, tiny_splits, cfg)
    losses = [h.val_loss for h in out.history]
    assert out.best_epoch == 1 + int(np.argmin(losses))
    assert out.best_metric == min(losses)


def test_regression_early_stopping_keeps_the_best_epoch_on_a_small_loss_problem(
    tiny_strategy: StrategyConfig,
) -> None:
    """Forward returns are ~1e-3, so their Huber loss is ~1e-5: an absolute min_delta of 1e-4
    would call every epoch "no better" and keep epoch 1. The relative rule keeps improving."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    y = (0.002 * np.tanh(x @ rng.normal(size=6)) + rng.normal(0, 5e-4, 4000)).astype(np.float32)
    cfg = with_training(
        tiny_strategy, epochs=12, learning_rate=0.003, batch_size=128,
        early_stopping=EarlyStoppingConfig(patience=3, min_delta=1e-4, monitor="val_loss"),
    )
    seed_everything(0)
    model = build_model(6, 1, tiny_strategy.model)
    out = train(model, x[:3000], y[:3000], x[3000:], y[3000:], cfg, regression=True)
    losses = [float(h.val_loss) for h in out.history if h.val_loss is not None]
    assert out.best_epoch == 1 + int(np.argmin(losses)) and out.best_metric == min(losses)
    assert min(losses) < 1e-5  # the small-loss regime the old absolute rule broke
    # The old rule (improvement > 1e-4 absolute) would have kept an epoch 5x worse.
    kept = 0
    for epoch, loss in enumerate(losses):
        if loss < losses[kept] - 1e-4:
            kept = epoch
    assert losses[kept] > 5 * min(losses)


# --- checkpoints and resume -------------------------------------------------------------------

RESUME_CONFIGS = {
    "adam+plateau+early": dict(
        optimizer="adam",
        lr_scheduler=ReduceOnPlateauLR(factor=0.5, patience=0),
        early_stopping=EarlyStoppingConfig(patience=10),
        gradient_clip=1.0,
        epochs=4,
    ),
    "sgd+step+weights": dict(
        optimizer="sgd",
        lr_scheduler=StepLR(step_size=1, gamma=0.7),
        class_weights=True,
        weight_decay=1e-3,
        epochs=4,
    ),
}


@pytest.mark.parametrize("name", list(RESUME_CONFIGS))
def test_resume_after_cancel_mid_epoch_is_bit_identical(
    name: str, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(tiny_strategy, **RESUME_CONFIGS[name])
    full, full_out = run(tiny_strategy, tiny_splits, cfg)

    token = CancelToken()
    with pytest.raises(TrainingCancelled) as info:
        run(
            tiny_strategy,
            tiny_splits,
            cfg,
            progress_callback=cancel_at(token, 2, 7),
            cancel_token=token,
            checkpoint_callback=lambda cp: None,
        )
    assert info.value.checkpoint is not None
    # through bytes, as a worker would store it; resume into a differently initialised model
    cp = checkpoint_from_bytes(checkpoint_to_bytes(info.value.checkpoint))
    seed_everything(999)
    torch.rand(17)  # disturb the global RNG: resume must restore it
    resumed = build_model(tiny_splits.x_train.shape[1], 3, tiny_strategy.model)
    out = train(
        resumed,
        tiny_splits.x_train,
        tiny_splits.y_train,
        tiny_splits.x_val,
        tiny_splits.y_val,
        cfg,
        resume_from=cp,
    )
    assert weights_sha256(resumed.state_dict()) == weights_sha256(full.state_dict())
    assert out.resumed_from_epoch == 1 and out.epochs_trained == full_out.epochs_trained
    for a, b in zip(out.history, full_out.history, strict=True):
        assert (a.epoch, a.val_loss, a.val_accuracy, a.learning_rate) == (
            b.epoch,
            b.val_loss,
            b.val_accuracy,
            b.learning_rate,
        )
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-12)
        assert a.train_accuracy == b.train_accuracy


def test_periodic_checkpoints_and_resume_from_an_epoch_boundary(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(
        tiny_strategy,
        epochs=4,
        checkpoint_every=2,
        lr_scheduler=CosineLR(),
        early_stopping=EarlyStoppingConfig(patience=5),
    )
    taken: list[Checkpoint] = []
    full, _ = run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=taken.append)
    assert [cp.epoch for cp in taken] == [2]  # every 2 epochs, none after the last
    every_epoch: list[Checkpoint] = []
    run(
        tiny_strategy, tiny_splits, cfg, checkpoint_callback=every_epoch.append, checkpoint_every=1
    )  # the argument overrides training.checkpoint_every
    assert [cp.epoch for cp in every_epoch] == [1, 2, 3]
    resumed = fresh_model(tiny_strategy, tiny_splits.x_train.shape[1], seed=5)
    train(
        resumed,
        tiny_splits.x_train,
        tiny_splits.y_train,
        tiny_splits.x_val,
        tiny_splits.y_val,
        cfg,
        resume_from=checkpoint_from_bytes(checkpoint_to_bytes(taken[0])),
    )
    assert weights_sha256(resumed.state_dict()) == weights_sha256(full.state_dict())


def test_checkpoints_are_at_least_checkpoint_interval_seconds_apart_and_a_cancel_still_takes_one(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(tiny_strategy, epochs=4)
    # An interval no run of seconds reaches: no epoch checkpoint at all ...
    none: list[Checkpoint] = []
    run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=none.append, checkpoint_every=1,
        checkpoint_interval=1e9)
    assert none == []
    # ... epochs longer than the interval (each epoch report waits it out): every epoch again.
    def slow_epochs(update: ProgressUpdate) -> None:
        if update.kind == "epoch":
            time.sleep(0.06)

    every: list[Checkpoint] = []
    run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=every.append, checkpoint_every=1,
        checkpoint_interval=0.05, progress_callback=slow_epochs)
    assert [cp.epoch for cp in every] == [1, 2, 3]
    # A cancel (a drain) hands its position over whatever the interval.
    token = CancelToken()
    taken: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=taken.append,
            checkpoint_every=1, checkpoint_interval=1e9, cancel_token=token,
            progress_callback=cancel_at(token, 2, 5))
    assert info.value.checkpoint is not None and taken == [info.value.checkpoint]
    assert (info.value.checkpoint.epoch, info.value.checkpoint.batch_in_epoch) == (1, 5)


def test_checkpoint_bytes_round_trip_everything(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    cfg = with_training(
        tiny_strategy,
        epochs=2,
        lr_scheduler=ReduceOnPlateauLR(),
        early_stopping=EarlyStoppingConfig(patience=3),
    )
    taken: list[Checkpoint] = []
    run(tiny_strategy, tiny_splits, cfg, checkpoint_callback=taken.append, checkpoint_every=1)
    cp = taken[0]
    data = checkpoint_to_bytes(cp)
    assert b"pickle" not in data[:200]
    back = checkpoint_from_bytes(data)
    assert same_weights(back.model_state, cp.model_state)
    assert back.best_state is not None and same_weights(back.best_state, cp.best_state or {})
    # optimizer state: int keys and tuples survive, tensors equal
    assert set(back.optimizer_state["state"]) == set(cp.optimizer_state["state"])
    assert back.optimizer_state["param_groups"][0]["betas"] == (0.9, 0.999)
    for key, state in cp.optimizer_state["state"].items():
        for name, value in state.items():
            assert torch.equal(back.optimizer_state["state"][key][name], value)
    assert back.scheduler_state == cp.scheduler_state  # includes inf (`mode_worse`)
    assert back.scheduler_state is not None
    assert math.isinf(back.scheduler_state["mode_worse"])
    assert back.history == cp.history and back.rng.python == cp.rng.python
    assert torch.equal(back.rng.shuffle, cp.rng.shuffle)
    assert (back.epoch, back.best_epoch, back.meta) == (cp.epoch, cp.best_epoch, cp.meta)


def test_checkpoint_refusals(tiny_strategy: StrategyConfig, tiny_splits: Any) -> None:
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(b"definitely not a checkpoint")
    taken: list[Checkpoint] = []
    run(
        tiny_strategy,
        tiny_splits,
        with_training(tiny_strategy, epochs=2),
        checkpoint_callback=taken.append,
        checkpoint_every=1,
    )
    cp = taken[0]
    other = build_model(
        tiny_splits.x_train.shape[1],
        3,
        msgspec.structs.replace(
            tiny_strategy.model,
            architecture=msgspec.structs.replace(
                tiny_strategy.model.architecture, hidden_layers=(4,)
            ),
        ),
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        train(
            other,
            tiny_splits.x_train,
            tiny_splits.y_train,
            tiny_splits.x_val,
            tiny_splits.y_val,
            with_training(tiny_strategy, epochs=2),
            resume_from=cp,
        )
    with pytest.raises(CheckpointError, match="same settings"):
        run(
            tiny_strategy,
            tiny_splits,
            with_training(tiny_strategy, epochs=2),
            seed=5,
            resume_from=cp,
        )


# --- determinism ------------------------------------------------------------------------------

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from libs.pipeline.strategy import parse_strategy
    from libs.pipeline.dataset import build_symbol_data
    from libs.pipeline.pipeline import TrainingPipeline
    from libs.pipeline.storage.models import weights_sha256
    from libs.pipeline.trainer import train
    from tests.pipeline.conftest import TINY_STRATEGY_YAML

    strategy = parse_strategy(TINY_STRATEGY_YAML)
    pipe = TrainingPipeline(data_dir=Path({data!r}))
    parts = [build_symbol_data(strategy, symbol, ["1h"], data_dir=Path({data!r}))
             for symbol in ("EURUSD", "GBPUSD")]
    s = pipe.combine_multi_symbol_data(strategy, parts)
    model = pipe.create_model(strategy, s.x_train.shape[1], seed=strategy.training.seed)
    train(model, s.x_train, s.y_train, s.x_val, s.y_val, strategy.training)
    print(weights_sha256(model.state_dict()))
    """
)


def test_two_processes_give_bit_identical_weights(
    tiny_strategy: StrategyConfig, tiny_splits: Any, tiny_data_dir: Path
) -> None:
    script = DETERMINISM_SCRIPT.format(root=str(REPO_ROOT), data=str(tiny_data_dir))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    hashes = [out.strip().splitlines()[-1] for out, _ in outputs]
    # and the same as this process, which has run other tests before (global state differs)
    from libs.pipeline.pipeline import TrainingPipeline

    model = TrainingPipeline().create_model(
        tiny_strategy, tiny_splits.x_train.shape[1], seed=tiny_strategy.training.seed
    )
    train(
        model,
        tiny_splits.x_train,
        tiny_splits.y_train,
        tiny_splits.x_val,
        tiny_splits.y_val,
        tiny_strategy.training,
    )
    assert hashes[0] == hashes[1] == weights_sha256(model.state_dict())


def test_deterministic_mode_is_restored_after_training(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    run(tiny_strategy, tiny_splits, with_training(tiny_strategy, epochs=1))
    assert torch.are_deterministic_algorithms_enabled() == before


# --- bad input --------------------------------------------------------------------------------


def test_bad_inputs_are_typed_errors(tiny_strategy: StrategyConfig, tiny_splits: Any) -> None:
    x, y = tiny_splits.x_train, tiny_splits.y_train
    xv, yv = tiny_splits.x_val, tiny_splits.y_val
    model = fresh_model(tiny_strategy, x.shape[1])
    cfg = tiny_strategy.training
    nan_x = x.copy()
    nan_x[3, 2] = np.nan
    cases = [
        ((nan_x, y, xv, yv, cfg), "NaN"),
        ((x, y + 3, xv, yv, cfg), "class ids"),
        ((x[:0], y[:0], xv, yv, cfg), "training split is empty"),
        ((x, y[:-1], xv, yv, cfg), "labels"),
        ((x[:, :-1], y, xv[:, :-1], yv, cfg), "features"),
        (
            (
                x,
                y,
                xv[:0],
                yv[:0],
                with_training(tiny_strategy, early_stopping=EarlyStoppingConfig()),
            ),
            "early_stopping needs a validation split",
        ),
        (
            (x, y, xv[:0], yv[:0], with_training(tiny_strategy, lr_scheduler=ReduceOnPlateauLR())),
            "reduce_on_plateau needs a validation split",
        ),
    ]
    for args, message in cases:
        with pytest.raises(TrainingInputError, match=message):
            train(model, *args)
    assert issubclass(TrainingInputError, ValueError)


def test_no_validation_split_monitors_train_loss(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    model = fresh_model(tiny_strategy, tiny_splits.x_train.shape[1])
    out = train(
        model,
        tiny_splits.x_train,
        tiny_splits.y_train,
        tiny_splits.x_val[:0],
        tiny_splits.y_val[:0],
        with_training(tiny_strategy, epochs=2),
    )
    assert out.monitor == "train_loss" and out.history[0].val_loss is None
