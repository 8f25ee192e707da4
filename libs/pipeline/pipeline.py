"""TrainingPipeline: every step of a training job as one facade, and `run` that does them all.

Per symbol: load -> indicators -> fuzzy -> features -> labels (aligned, warm-up and unconfirmed
labels dropped), the one chain of libs/pipeline/dataset.py; then all symbols are split on one
time axis, purged and embargoed (libs/pipeline/splits.py) and the slices concatenated in symbol
order (`prepare`, which also refuses a split too small or with one class); then, when
`training.walk_forward` asks, each fold is trained and scored (libs/pipeline/walk_forward.py);
then the MLP is built (seeded), trained, scored on the test slice beside its baselines and a
costs-aware backtest (libs/pipeline/scorecard.py), and saved with its warnings. The steps that
add something of their own are methods; only `train_model` takes a progress callback and a
cancel token. `run` also checks the token between steps and emits a "phase" update as each
step starts.

Errors: everything in BAD_INPUT_ERRORS (all ValueError subclasses) means the request or its data
cannot be trained on (worker: `rejected` / `failed(bad_input)`, CLI: exit 2); TrainingCancelled
means cancelled (never a failure); anything else is a failure. Nothing is written before
training and evaluation are done, and the save itself is atomic, so a cancel or a
crash never leaves a half-written model (libs/pipeline/storage/).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import pandas as pd
from msgspec import Meta
from torch import nn

from libs.pipeline import data as data_mod
from libs.pipeline import dataset as dataset_mod
from libs.pipeline import labels as labels_mod
from libs.pipeline import scorecard
from libs.pipeline import strategy as strategy_config
from libs.pipeline import walk_forward as walk_mod
from libs.pipeline.cancel import CancelToken, TrainingCancelled, raise_if_cancelled
from libs.pipeline.checkpoint import Checkpoint, CheckpointError
from libs.pipeline.data import DataError
from libs.pipeline.dataset import (
    DataSplits,
    SplitError,
    SymbolData,
    check_trainable,
    cusum_key,
)
from libs.pipeline.device import DeviceError, DeviceInfo, DeviceManager
from libs.pipeline.evaluate import evaluate_model as evaluate_on
from libs.pipeline.features import FeatureError
from libs.pipeline.fuzzy import FuzzyError
from libs.pipeline.indicators import IndicatorError
from libs.pipeline.model import MLP, build_model
from libs.pipeline.normalization import fit_model_scaler
from libs.pipeline.progress import EpochRecord, Phase, ProgressCallback, ProgressUpdate
from libs.pipeline.recurrent import recurrent_parameter_count
from libs.pipeline.storage.models import ModelRef, ModelStorage, weights_sha256
from libs.pipeline.strategy import StrategyConfig, StrategyError
from libs.pipeline.tasks import HUBER_DELTA
from libs.pipeline.trainer import (
    CheckpointCallback,
    SafeCallback,
    TrainingInputError,
    TrainOutcome,
    seed_everything,
    train,
)
from libs.pipeline.types import TIMEFRAMES

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """Raised when a TrainingRequest is inconsistent (no strategy, both forms, bad overrides)."""


# Bad input: the same request would fail the same way again. Everything else is a failure.
# Weights and biases of one model: 100M float32 is 400 MB, x4 with Adam's state and gradients.
# A real strategy's MLP has well under a million.
MAX_MODEL_PARAMETERS = 100_000_000

BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (
    RequestError,
    StrategyError,
    DataError,
    IndicatorError,
    FuzzyError,
    FeatureError,
    TrainingInputError,
    DeviceError,
    CheckpointError,
    SplitError,
)


def is_bad_input(exc: BaseException) -> bool:
    return isinstance(exc, BAD_INPUT_ERRORS)


class TrainingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to train. Exactly one of `strategy` (a name in the strategies dir) or
    `strategy_yaml` (the full YAML text). Overrides default to the strategy's own values."""

    strategy: str | None = None
    strategy_yaml: str | None = None
    symbols: list[str] | None = None
    timeframes: list[str] | None = None
    start: str | None = None  # ISO date/time; default training_data.start_date
    end: str | None = None  # ISO date/time, a bare date includes that day
    seed: int | None = None  # default training.seed
    epochs: Annotated[int, Meta(gt=0)] | None = None  # default training.epochs
    data_dir: str | None = None  # default $TRAINBUS_DATA_DIR or ./data
    strategies_dir: str | None = None  # default $TRAINBUS_STRATEGIES_DIR or ./strategies
    models_dir: str | None = None  # default $TRAINBUS_MODELS_DIR or ./models


class DataSummary(msgspec.Struct, frozen=True, kw_only=True):
    symbols: list[str]
    timeframes: list[str]
    base_timeframe: str
    start: str | None  # the requested window
    end: str | None
    time_ranges: dict[str, list[str]]  # per symbol: first and last usable bar (ISO)
    rows: dict[str, dict[str, int]]  # per symbol: train / validation / test
    train_rows: int
    val_rows: int
    test_rows: int
    feature_count: int
    data_fingerprint: str


class TrainingResult(msgspec.Struct, frozen=True, kw_only=True):
    model: ModelRef
    strategy: str
    strategy_hash: str
    history: list[EpochRecord]
    best_epoch: int | None
    epochs_trained: int
    stopped_early: bool
    restored_best: bool
    test_metrics: dict[str, Any]
    feature_names: list[str]
    data: DataSummary
    device: DeviceInfo
    seed: int
    weights_sha256: str
    duration_seconds: float
    resumed_from_epoch: int | None = None
    warnings: list[str] = []
    splits: dict[str, Any] = {}
    walk_forward: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class Prepared:
    """A request's data, ready to train on: what `prepare` computed (the worker's check does it
    once, and the run reuses it)."""

    request: TrainingRequest
    strategy: StrategyConfig
    symbols: list[str]
    timeframes: list[str]
    base_tf: str
    start: str | None
    end: str | None
    splits: DataSplits
    folds: list[walk_mod.Fold]
    fingerprint: str


class TrainingPipeline:
    """Stateless apart from where things live (dirs) and which device/storage to use."""

    def __init__(
        self,
        *,
        data_dir: Path | str | None = None,
        strategies_dir: Path | str | None = None,
        storage: ModelStorage | None = None,
        device_manager: DeviceManager | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.strategies_dir = Path(strategies_dir) if strategies_dir is not None else None
        self.storage = storage or ModelStorage()
        self.device_manager = device_manager or DeviceManager()

    # --- the request ------------------------------------------------------------------------

    def load_strategy(self, request: TrainingRequest) -> StrategyConfig:
        """Names only (never paths) for `strategy`: requests come from untrusted senders."""
        if (request.strategy is None) == (request.strategy_yaml is None):
            raise RequestError("give exactly one of `strategy` (a name) or `strategy_yaml`")
        if request.strategy_yaml is not None:
            return strategy_config.parse_strategy(request.strategy_yaml, source="<request>")
        directory = self.strategies_dir_for(request)
        assert request.strategy is not None
        return strategy_config.load_strategy_by_name(request.strategy, directory)

    def strategies_dir_for(self, request: TrainingRequest) -> Path | None:
        return Path(request.strategies_dir) if request.strategies_dir else self.strategies_dir

    @staticmethod
    def resolve_selection(
        strategy: StrategyConfig, request: TrainingRequest
    ) -> tuple[list[str], list[str], str]:
        """(symbols, timeframes, base timeframe) after the request's overrides."""
        symbols = list(request.symbols) if request.symbols else strategy_config.symbols_of(strategy)
        timeframes = (
            list(request.timeframes)
            if request.timeframes
            else strategy_config.timeframes_of(strategy)
        )
        for symbol in symbols:
            data_mod.validate_symbol(symbol)
        bad = [tf for tf in timeframes if tf not in TIMEFRAMES]
        if bad:
            raise RequestError(f"unknown timeframe(s) {bad}: use {', '.join(TIMEFRAMES)}")
        for what, items in (("symbols", symbols), ("timeframes", timeframes)):
            if len(set(items)) != len(items):
                raise RequestError(f"duplicate {what}: {items}")
        return symbols, timeframes, strategy_config.base_timeframe(strategy, timeframes)

    # --- per-symbol steps -------------------------------------------------------------------

    # --- across symbols ---------------------------------------------------------------------

    def combine_multi_symbol_data(
        self, strategy: StrategyConfig, per_symbol: Sequence[SymbolData]
    ) -> DataSplits:
        """Split every symbol on one time axis (purged, embargoed), then concatenate the slices
        in symbol order; nothing is shuffled across time."""
        try:
            return dataset_mod.combine_multi_symbol_data(
                per_symbol, strategy.training.data_split,
                embargo=strategy_config.embargo_of(strategy.training),
                sequence_length=strategy_config.sequence_length_of(strategy.model),
                class_names=labels_mod.class_names(strategy.training.labels)
                or labels_mod.CLASS_NAMES)
        except ValueError as exc:
            if isinstance(exc, BAD_INPUT_ERRORS):
                raise
            # dataset.py raises plain ValueError for inconsistent symbols: that is bad input.
            raise DataError(str(exc)) from exc

    # --- model, training, evaluation, save ----------------------------------------------------

    def create_model(self, strategy: StrategyConfig, input_dim: int, *, seed: int) -> MLP:
        """The strategy's model (an MLP, or an LSTM / GRU over windows of `input_dim` features
        per step), initialised from `seed` (same seed, same initial weights). A model over
        MAX_MODEL_PARAMETERS is bad input, refused before any memory is taken."""
        outputs = labels_mod.num_outputs(strategy.training.labels)
        if strategy_config.is_recurrent(strategy.model):
            arch, kind = strategy.model.architecture, strategy.model.type
            parameters = recurrent_parameter_count(kind, input_dim, outputs, arch)  # type: ignore[arg-type]
            if parameters > MAX_MODEL_PARAMETERS:
                raise TrainingInputError(
                    f"model.architecture.hidden_size: a {kind} of {arch.num_layers} layers of "
                    f"{arch.hidden_size} over {input_dim} features makes {parameters:,} "
                    f"parameters, more than the limit of {MAX_MODEL_PARAMETERS:,}")
            seed_everything(seed)
            return build_model(input_dim, outputs, strategy.model)  # type: ignore[return-value]
        widths = [input_dim, *strategy.model.architecture.hidden_layers, outputs]
        parameters = sum((a + 1) * b for a, b in itertools.pairwise(widths))
        if parameters > MAX_MODEL_PARAMETERS:
            raise TrainingInputError(
                f"model.architecture.hidden_layers: {input_dim} features into "
                f"{list(widths[1:-1])} make {parameters:,} parameters, more than the limit of "
                f"{MAX_MODEL_PARAMETERS:,}"
            )
        seed_everything(seed)
        return build_model(input_dim, outputs, strategy.model)  # type: ignore[return-value]

    def train_model(
        self,
        model: MLP,
        splits: DataSplits,
        strategy: StrategyConfig,
        *,
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
        every_batch: bool = True,
    ) -> TrainOutcome:
        """Train on `splits`. A fresh start first fits the model's input normalization on
        `splits.x_train` alone (each walk-forward fold on its own training slice; validation
        and test rows never shape it); a resumed run keeps the checkpointed buffers."""
        if resume_from is None:
            fit_model_scaler(model, splits.x_train, strategy, splits.feature_names)
        return train(
            model,
            splits.x_train,
            splits.y_train,
            splits.x_val,
            splits.y_val,
            strategy.training,
            regression=labels_mod.is_regression(strategy.training.labels),
            sample_weight=splits.w_train,
            device=device,
            seed=seed,
            epochs=epochs,
            progress_callback=progress_callback,
            cancel_token=cancel_token,
            checkpoint_callback=checkpoint_callback,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
            resume_from=resume_from,
            checkpoint_meta=checkpoint_meta,
            every_batch=every_batch,
        )

    def evaluate_model(
        self,
        model: MLP,
        splits: DataSplits,
        strategy: StrategyConfig,
        *,
        device: DeviceInfo | None = None,
    ) -> dict[str, Any]:
        return evaluate_on(
            model,
            splits.x_test,
            splits.y_test,
            regression=labels_mod.is_regression(strategy.training.labels),
            device=device.device if device is not None else "cpu",
            class_names=labels_mod.class_names(strategy.training.labels) or None,
        )

    def save_model(
        self,
        model: MLP,
        strategy: StrategyConfig,
        splits: DataSplits,
        *,
        timeframe: str,
        timeframes: Sequence[str],
        metrics: Mapping[str, Any],
        seed: int,
        device: str,
        data_window: Mapping[str, Any] | None = None,
        data_fingerprint: str | None = None,
        extra: Mapping[str, Any] | None = None,
        storage: ModelStorage | None = None,
    ) -> ModelRef:
        return (storage or self.storage).save(
            model,
            strategy,
            timeframe=timeframe,
            feature_names=splits.feature_names,
            timeframes=timeframes,
            symbols=splits.symbols,
            metrics=metrics,
            seed=seed,
            device=device,
            data_window=data_window,
            data_fingerprint=data_fingerprint,
            extra=extra,
        )

    # --- all of it ------------------------------------------------------------------------------

    def prepare(
        self, request: TrainingRequest, step: dataset_mod.StepHook | None = None
    ) -> Prepared:
        """The request's strategy and data, split (and cut into folds): everything before a
        model. Raises BAD_INPUT_ERRORS, a split too small or with one class included."""
        hook = step or (lambda _phase, _message: None)
        strategy = self.load_strategy(request)
        symbols, timeframes, base_tf = self.resolve_selection(strategy, request)
        start = request.start or strategy.training_data.start_date
        end = request.end or strategy.training_data.end_date
        data_dir = Path(request.data_dir) if request.data_dir else self.data_dir
        per_symbol: list[SymbolData] = []
        frames: dict[str, pd.DataFrame] = {}
        for symbol in symbols:
            hook("data", f"{symbol}: loading {', '.join(timeframes)}")
            prices = dataset_mod.load_symbol_prices(
                strategy, symbol, timeframes, data_dir=data_dir, start=start, end=end
            )
            # The context_data series too (`context:<name>` keys): the fingerprint covers them.
            frames.update({f"{symbol}_{tf}": frame for tf, frame in prices.items()})
            per_symbol.append(dataset_mod.symbol_data_from_prices(
                strategy, symbol, prices, base_tf, start=start, end=end, step=hook
            ))
        hook("split", "one time axis for every symbol, purged and embargoed")
        splits = self.combine_multi_symbol_data(strategy, per_symbol)
        regression = labels_mod.is_regression(strategy.training.labels)
        validation = strategy.training.data_split.validation > 0
        thinned_by = cusum_key(strategy.training.labels)
        check_trainable(splits, regression=regression, validation=validation,
                        thinned_by=thinned_by)
        folds = walk_mod.folds_of(per_symbol, strategy)
        for fold in folds:
            check_trainable(fold.splits, regression=regression, validation=validation,
                            where=f"fold {fold.number} of {len(folds)}: ",
                            field="training.walk_forward.folds", thinned_by=thinned_by)
        return Prepared(
            request=request, strategy=strategy, symbols=symbols, timeframes=timeframes,
            base_tf=base_tf, start=start, end=end, splits=splits, folds=folds,
            fingerprint=data_mod.data_fingerprint(frames),
        )

    def run(
        self,
        request: TrainingRequest,
        progress_callback: ProgressCallback | None = None,
        cancel_token: CancelToken | None = None,
        *,
        checkpoint_callback: CheckpointCallback | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float = 0.0,
        resume_from: Checkpoint | None = None,
        prepared: Prepared | None = None,
        every_batch: bool = True,
    ) -> TrainingResult:
        """Train, evaluate and save one model. Raises BAD_INPUT_ERRORS, TrainingCancelled,
        or anything else as a failure. `resume_from` continues an interrupted run of the same
        request (its checkpoint meta must match this strategy and data); `prepared` is this
        request's `prepare`, when the caller already has it. Checkpoints: every
        `checkpoint_every` epochs, at least `checkpoint_interval` seconds apart; `every_batch`
        False: the progress callback hears only the batch updates with fresh running numbers
        (trainer.train).
        """
        t0 = time.perf_counter()
        notify = SafeCallback(progress_callback)
        epochs = request.epochs or (prepared.strategy.training.epochs if prepared else 0)

        def phase(name: Phase, message: str, percent: float = 0.0) -> None:
            raise_if_cancelled(cancel_token, name)
            notify(ProgressUpdate(kind="phase", phase=name, message=message,
                                  total_epochs=epochs, percent=percent))

        if prepared is None or prepared.request != request:
            prepared = self.prepare(request, step=phase)
        else:
            ready = prepared.splits
            phase("split", f"prepared when the job was checked: {ready.n_train} / "
                           f"{ready.n_val} / {ready.n_test} rows")
        strategy, splits = prepared.strategy, prepared.splits
        seed = request.seed if request.seed is not None else strategy.training.seed
        epochs = request.epochs or strategy.training.epochs
        storage = ModelStorage(request.models_dir) if request.models_dir else self.storage
        device = self.device_manager.select()
        s_hash = strategy_config.strategy_hash(strategy)
        meta: dict[str, Any] = {"strategy_hash": s_hash, "data_fingerprint": prepared.fingerprint}
        if resume_from is not None:
            for key in ("strategy_hash", "data_fingerprint"):
                if resume_from.meta.get(key, meta[key]) != meta[key]:
                    raise CheckpointError(
                        f"checkpoint was taken for another {key.replace('_', ' ')}: "
                        "resume only the same strategy on the same data"
                    )
        train_args: dict[str, Any] = {
            "device": device, "seed": seed, "epochs": epochs, "cancel_token": cancel_token,
            "checkpoint_callback": checkpoint_callback, "checkpoint_every": checkpoint_every,
            "checkpoint_interval": checkpoint_interval, "every_batch": every_batch,
        }

        def score(model: nn.Module, on: DataSplits) -> dict[str, Any]:
            return scorecard.score(model, on, strategy, device=device.device, seed=seed)

        folds = self._walk_forward(prepared, train_args, score, notify, phase, resume_from, meta)
        if prepared.folds:
            meta = {**meta, "walk_forward": {"fold": None, "done": folds}}

        arch = strategy.model.architecture
        shape = (f"{strategy.model.type.upper()} {arch.num_layers} x {arch.hidden_size} over "
                 f"{arch.sequence_length} bars" if strategy_config.is_recurrent(strategy.model)
                 else f"MLP {list(arch.hidden_layers)}")
        phase("model", f"{shape} on {device.device}")
        model = self.create_model(strategy, len(splits.feature_names), seed=seed)
        phase("training", f"{epochs} epochs, {splits.n_train} training rows")
        in_fold = walk_mod.checkpoint_fold(resume_from) is not None
        try:
            outcome = self.train_model(
                model, splits, strategy, progress_callback=progress_callback,
                resume_from=None if in_fold else resume_from, checkpoint_meta=meta, **train_args,
            )
        except TrainingCancelled:
            log.info("training of %s cancelled; nothing saved", strategy.name)
            raise

        phase("evaluation", f"{splits.n_test} test rows, baselines and backtest", 100.0)
        test_metrics = score(model, splits)
        walk = ({"mode": strategy.training.walk_forward.mode, "folds": folds,
                 "summary": walk_mod.summary(folds)}
                if strategy.training.walk_forward is not None else None)
        warnings = _warnings(outcome, test_metrics, splits, strategy)

        phase("save", f"saving to {storage.base_dir}", 100.0)
        history = [msgspec.to_builtins(h) for h in outcome.history]
        metrics = {
            "history": history,
            "best_epoch": outcome.best_epoch,
            "best_metric": outcome.best_metric,
            "monitor": outcome.monitor,
            "epochs_trained": outcome.epochs_trained,
            "stopped_early": outcome.stopped_early,
            "restored_best": outcome.restored_best,
            "training_seconds": outcome.duration,
            "test": test_metrics,
            "splits": dict(splits.report),
            "walk_forward": walk,
            "warnings": warnings,
        }
        rows = {s: r._asdict() for s, r in splits.rows.items()}
        time_ranges = {s: list(r) for s, r in splits.time_ranges.items()}
        overrides = {
            k: v
            for k, v in (
                ("symbols", request.symbols),
                ("timeframes", request.timeframes),
                ("seed", request.seed),
                ("epochs", request.epochs),
                ("start", request.start),
                ("end", request.end),
            )
            if v is not None
        }
        ref = self.save_model(
            model,
            strategy,
            splits,
            timeframe=prepared.base_tf,
            timeframes=prepared.timeframes,
            metrics=metrics,
            seed=seed,
            device=device.device,
            data_window={"start": prepared.start, "end": prepared.end,
                         "time_ranges": time_ranges, "rows": rows},
            data_fingerprint=prepared.fingerprint,
            extra={
                "epochs": epochs,
                "overrides": overrides,
                "resumed_from_epoch": outcome.resumed_from_epoch,
            },
            storage=storage,
        )
        return TrainingResult(
            model=ref,
            strategy=strategy.name,
            strategy_hash=s_hash,
            history=outcome.history,
            best_epoch=outcome.best_epoch,
            epochs_trained=outcome.epochs_trained,
            stopped_early=outcome.stopped_early,
            restored_best=outcome.restored_best,
            test_metrics=test_metrics,
            feature_names=list(splits.feature_names),
            data=DataSummary(
                symbols=list(splits.symbols),
                timeframes=prepared.timeframes,
                base_timeframe=prepared.base_tf,
                start=prepared.start,
                end=prepared.end,
                time_ranges=time_ranges,
                rows=rows,
                train_rows=splits.n_train,
                val_rows=splits.n_val,
                test_rows=splits.n_test,
                feature_count=len(splits.feature_names),
                data_fingerprint=prepared.fingerprint,
            ),
            device=device,
            seed=seed,
            weights_sha256=weights_sha256(model.state_dict()),
            duration_seconds=time.perf_counter() - t0,
            resumed_from_epoch=outcome.resumed_from_epoch,
            warnings=warnings,
            splits=dict(splits.report),
            walk_forward=walk,
        )

    def _walk_forward(
        self, prepared: Prepared, train_args: dict[str, Any],
        score: walk_mod.ScoreFold, notify: ProgressCallback,
        phase: dataset_mod.StepHook, resume: Checkpoint | None, meta: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Each fold trained and scored (none when the strategy has no walk_forward)."""
        folds, strategy = prepared.folds, prepared.strategy

        def start_fold(fold: walk_mod.Fold) -> None:
            phase("walk_forward", f"fold {fold.number}/{len(folds)}: "
                  f"{fold.splits.n_train} training rows, {fold.splits.n_test} test rows")

        def train_fold(
            fold: walk_mod.Fold, resume_fold: Checkpoint | None, tags: dict[str, Any]
        ) -> tuple[MLP, TrainOutcome]:
            model = self.create_model(strategy, len(fold.splits.feature_names),
                                      seed=train_args["seed"])
            outcome = self.train_model(
                model, fold.splits, strategy, progress_callback=_fold_progress(fold, folds,
                                                                               notify),
                resume_from=resume_fold, checkpoint_meta=tags, **train_args)
            return model, outcome

        return walk_mod.run_folds(folds, train_fold=train_fold, score_fold=score,
                                  start_fold=start_fold, resume=resume, meta=meta)


def check_lineage(inline: StrategyConfig, strategies_dir: Path | None) -> None:
    """For a service taking strategies from untrusted senders (the trainers): an inline
    strategy may share a file strategy's name (and so its model lineage and its
    `latest` pointer) only when it IS that strategy: same resolved content, same hash. Anything
    else would slip foreign models into the file strategy's lineage."""
    try:
        path = strategy_config.resolve_strategy_path(inline.name, strategies_dir)
    except StrategyError:
        return  # no file strategy of that name: the inline one has the lineage to itself
    try:
        own = strategy_config.parse_strategy(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, StrategyError):
        own = None
    if own is None or strategy_config.strategy_hash(own) != strategy_config.strategy_hash(inline):
        raise StrategyError(
            f"name: {inline.name!r} is the name of the trainer's strategy file {path.name}, "
            "whose content differs: its models would land in that strategy's lineage; rename "
            "the inline strategy, or train the file by its name"
        )


def _fold_progress(
    fold: walk_mod.Fold, folds: Sequence[walk_mod.Fold], notify: ProgressCallback
) -> ProgressCallback:
    """A fold's finished epochs as `walk_forward` phase updates (its batches stay quiet, and
    its epochs stay out of the final model's history)."""

    def report(update: ProgressUpdate) -> None:
        if update.kind != "epoch":
            return
        share = update.epoch / max(update.total_epochs, 1)
        notify(ProgressUpdate(
            kind="phase", phase="walk_forward", fold=fold.number, folds=len(folds),
            epoch=update.epoch, total_epochs=update.total_epochs,
            percent=100.0 * (fold.number - 1 + share) / len(folds),
            message=f"fold {fold.number}/{len(folds)}: epoch {update.epoch}/"
                    f"{update.total_epochs}",
        ))

    return report


def _constant_loss(y_train: np.ndarray, regression: bool) -> float:
    """The training loss of the best constant prediction (the class prior, the mean return)."""
    if regression:
        err = np.abs(y_train.astype(np.float64) - float(y_train.mean()))
        huber = np.where(err <= HUBER_DELTA, 0.5 * err**2, HUBER_DELTA * (err - 0.5 * HUBER_DELTA))
        return float(huber.mean())
    prior = np.bincount(y_train.astype(np.int64)) / len(y_train)
    prior = prior[prior > 0]
    return float(-(prior * np.log(prior)).sum())


def _warnings(
    outcome: TrainOutcome, test: Mapping[str, Any], splits: DataSplits, strategy: StrategyConfig
) -> list[str]:
    """What the researcher must know before trusting this model."""
    regression = labels_mod.is_regression(strategy.training.labels)
    warnings: list[str] = []
    losses = [h.train_loss for h in outcome.history]
    constant = _constant_loss(splits.y_train, regression)
    lr = strategy.training.learning_rate
    if any(not math.isfinite(loss) for loss in losses):
        warnings.append(f"training diverged: the training loss is not finite; lower "
                        f"training.learning_rate ({lr:g})")
    elif losses and min(losses) > 1.5 * constant:
        warnings.append(f"training diverged: the best training loss {min(losses):.6g} is worse "
                        f"than a constant prediction's {constant:.6g}; lower "
                        f"training.learning_rate ({lr:g})")
    edge = scorecard.no_edge(dict(test), regression)
    if edge is not None:
        warnings.append(edge)
    missing = [s for s, rows in splits.rows.items() if rows.test == 0]
    if missing:
        warnings.append(f"no test rows for {', '.join(missing)}: their data ends before the "
                        "test window of the other symbols")
    return warnings
