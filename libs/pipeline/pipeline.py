"""TrainingPipeline: every step of a training job as one facade, and `run` that does them all.

Per symbol: load -> indicators -> fuzzy -> features -> labels (aligned, warm-up dropped), the
one chain of libs/pipeline/dataset.py; then each symbol is split chronologically and the splits
are concatenated in symbol order; then the MLP is built (seeded), trained, evaluated on the test
slice and saved. The steps that add something of their own (the strategy and selection from a
request, the model-size cap, training with checkpoints, evaluation, the save) are methods;
only `train_model` takes a progress callback and a cancel token. `run` also checks the token
between steps and emits a "phase" update as each step starts.

Errors: everything in BAD_INPUT_ERRORS (all ValueError subclasses) means the request or its data
cannot be trained on (worker: `rejected` / `failed(bad_input)`, CLI: exit 2); TrainingCancelled
means cancelled (never a failure); anything else is a failure. Nothing is written before
training and evaluation are done, and the save itself is atomic, so a cancel or a
crash never leaves a half-written model (libs/pipeline/storage/).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pandas as pd
from msgspec import Meta

from libs.pipeline import data as data_mod
from libs.pipeline import dataset as dataset_mod
from libs.pipeline import labels as labels_mod
from libs.pipeline import strategy as strategy_config
from libs.pipeline.cancel import CancelToken, TrainingCancelled, raise_if_cancelled
from libs.pipeline.checkpoint import Checkpoint, CheckpointError
from libs.pipeline.data import DataError
from libs.pipeline.dataset import DataSplits, SymbolData
from libs.pipeline.device import DeviceError, DeviceInfo, DeviceManager
from libs.pipeline.evaluate import evaluate_model as evaluate_on
from libs.pipeline.features import FeatureError
from libs.pipeline.fuzzy import FuzzyError
from libs.pipeline.indicators import IndicatorError
from libs.pipeline.model import MLP, build_model
from libs.pipeline.progress import EpochRecord, Phase, ProgressCallback, ProgressUpdate
from libs.pipeline.storage.models import ModelRef, ModelStorage, weights_sha256
from libs.pipeline.strategy import StrategyConfig, StrategyError
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
        directory = Path(request.strategies_dir) if request.strategies_dir else self.strategies_dir
        assert request.strategy is not None
        return strategy_config.load_strategy_by_name(request.strategy, directory)

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
        """Split every symbol chronologically, then concatenate the splits in symbol order:
        every symbol is in train, validation and test; nothing is shuffled across time."""
        try:
            return dataset_mod.combine_multi_symbol_data(per_symbol, strategy.training.data_split)
        except ValueError as exc:
            if isinstance(exc, BAD_INPUT_ERRORS):
                raise
            # dataset.py raises plain ValueError for inconsistent symbols: that is bad input.
            raise DataError(str(exc)) from exc

    # --- model, training, evaluation, save ----------------------------------------------------

    def create_model(self, strategy: StrategyConfig, input_dim: int, *, seed: int) -> MLP:
        """The strategy's MLP, initialised from `seed` (same seed, same initial weights).
        A model over MAX_MODEL_PARAMETERS is bad input, refused before any memory is taken."""
        widths = [input_dim, *strategy.model.architecture.hidden_layers,
                  labels_mod.num_outputs(strategy.training.labels)]
        parameters = sum((a + 1) * b for a, b in itertools.pairwise(widths))
        if parameters > MAX_MODEL_PARAMETERS:
            raise TrainingInputError(
                f"model.architecture.hidden_layers: {input_dim} features into "
                f"{list(widths[1:-1])} make {parameters:,} parameters, more than the limit of "
                f"{MAX_MODEL_PARAMETERS:,}"
            )
        seed_everything(seed)
        return build_model(
            input_dim, labels_mod.num_outputs(strategy.training.labels), strategy.model
        )

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
        resume_from: Checkpoint | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
    ) -> TrainOutcome:
        return train(
            model,
            splits.x_train,
            splits.y_train,
            splits.x_val,
            splits.y_val,
            strategy.training,
            regression=labels_mod.is_regression(strategy.training.labels),
            device=device,
            seed=seed,
            epochs=epochs,
            progress_callback=progress_callback,
            cancel_token=cancel_token,
            checkpoint_callback=checkpoint_callback,
            checkpoint_every=checkpoint_every,
            resume_from=resume_from,
            checkpoint_meta=checkpoint_meta,
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

    def run(
        self,
        request: TrainingRequest,
        progress_callback: ProgressCallback | None = None,
        cancel_token: CancelToken | None = None,
        *,
        checkpoint_callback: CheckpointCallback | None = None,
        checkpoint_every: int | None = None,
        resume_from: Checkpoint | None = None,
    ) -> TrainingResult:
        """Train, evaluate and save one model. Raises BAD_INPUT_ERRORS, TrainingCancelled,
        or anything else as a failure. `resume_from` continues an interrupted run of the same
        request (its checkpoint meta must match this strategy and data)."""
        t0 = time.perf_counter()
        notify = SafeCallback(progress_callback)
        strategy = self.load_strategy(request)
        symbols, timeframes, base_tf = self.resolve_selection(strategy, request)
        seed = request.seed if request.seed is not None else strategy.training.seed
        epochs = request.epochs or strategy.training.epochs
        start = request.start or strategy.training_data.start_date
        end = request.end or strategy.training_data.end_date
        data_dir = Path(request.data_dir) if request.data_dir else self.data_dir
        storage = ModelStorage(request.models_dir) if request.models_dir else self.storage
        device = self.device_manager.select()
        s_hash = strategy_config.strategy_hash(strategy)

        def phase(name: Phase, message: str, percent: float = 0.0) -> None:
            raise_if_cancelled(cancel_token, name)
            notify(
                ProgressUpdate(
                    kind="phase", phase=name, message=message, total_epochs=epochs, percent=percent
                )
            )

        per_symbol: list[SymbolData] = []
        frames: dict[str, pd.DataFrame] = {}
        for symbol in symbols:
            phase("data", f"{symbol}: loading {', '.join(timeframes)}")
            prices = dataset_mod.load_symbol_prices(
                strategy, symbol, timeframes, data_dir=data_dir, start=start, end=end
            )
            frames.update({f"{symbol}_{tf}": frame for tf, frame in prices.items()})
            per_symbol.append(dataset_mod.symbol_data_from_prices(
                strategy, symbol, prices, base_tf, start=start, end=end, step=phase
            ))

        phase("split", "chronological split, symbols concatenated")
        splits = self.combine_multi_symbol_data(strategy, per_symbol)
        fingerprint = data_mod.data_fingerprint(frames)

        phase("model", f"MLP {list(strategy.model.architecture.hidden_layers)} on {device.device}")
        model = self.create_model(strategy, len(splits.feature_names), seed=seed)
        meta = {"strategy_hash": s_hash, "data_fingerprint": fingerprint}
        if resume_from is not None:
            for key, value in meta.items():
                if resume_from.meta.get(key, value) != value:
                    raise CheckpointError(
                        f"checkpoint was taken for another {key.replace('_', ' ')}: "
                        "resume only the same strategy on the same data"
                    )

        phase("training", f"{epochs} epochs, {splits.n_train} training rows")
        try:
            outcome = self.train_model(
                model,
                splits,
                strategy,
                device=device,
                seed=seed,
                epochs=epochs,
                progress_callback=progress_callback,
                cancel_token=cancel_token,
                checkpoint_callback=checkpoint_callback,
                checkpoint_every=checkpoint_every,
                resume_from=resume_from,
                checkpoint_meta=meta,
            )
        except TrainingCancelled:
            log.info("training of %s cancelled; nothing saved", strategy.name)
            raise

        phase("evaluation", f"{splits.n_test} test rows", 100.0)
        test_metrics = self.evaluate_model(model, splits, strategy, device=device)

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
            timeframe=base_tf,
            timeframes=timeframes,
            metrics=metrics,
            seed=seed,
            device=device.device,
            data_window={"start": start, "end": end, "time_ranges": time_ranges, "rows": rows},
            data_fingerprint=fingerprint,
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
                timeframes=timeframes,
                base_timeframe=base_tf,
                start=start,
                end=end,
                time_ranges=time_ranges,
                rows=rows,
                train_rows=splits.n_train,
                val_rows=splits.n_val,
                test_rows=splits.n_test,
                feature_count=len(splits.feature_names),
                data_fingerprint=fingerprint,
            ),
            device=device,
            seed=seed,
            weights_sha256=weights_sha256(model.state_dict()),
            duration_seconds=time.perf_counter() - t0,
            resumed_from_epoch=outcome.resumed_from_epoch,
        )
