"""The real `JobRunner`: the training pipeline behind the worker runtime's narrow port.

The pipeline's side of the port (libs/events/worker/port.py) lives here, in services/, so that
libs/events never imports the pipeline's heavy half. It maps a `TrainCommand` to a
`TrainingRequest`, checks it before the job is accepted (strategy parses, symbols/timeframes
valid, data files exist, and the data makes a split worth training: the prepared data is kept
for the run), runs `TrainingPipeline.run` with the relay's
`report` as progress callback (the pipeline's `ProgressUpdate` as is) and the job's cancel
signal as token, and sorts the outcome:

    (check) SplitError / WindowError -> rejected, naming the field (a window without bars)
    TrainingCancelled          -> JobCancelled (with a checkpoint when draining)
    DataError                  -> JobFailed("data")
    other BAD_INPUT_ERRORS     -> JobFailed("bad_input")
    OSError / MemoryError      -> JobFailed("infrastructure")   (retried on another delivery)
    anything else              -> raised as is: the runtime reports failed("code")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec

from libs.events.errors import CommandRejected
from libs.events.schema import TrainCommand
from libs.events.worker.port import (
    CancelSignal,
    JobCallbacks,
    JobCancelled,
    JobFailed,
    JobPlan,
    JobResult,
    RunnerInfo,
)
from libs.pipeline import data as data_mod
from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from libs.pipeline.data import DataError, WindowError
from libs.pipeline.dataset import SplitError
from libs.pipeline.device import DeviceManager
from libs.pipeline.evaluate import headline
from libs.pipeline.pipeline import (
    BAD_INPUT_ERRORS,
    Prepared,
    RequestError,
    TrainingPipeline,
    TrainingRequest,
    TrainingResult,
    check_lineage,
)
from libs.pipeline.storage.models import LoadedModel, ModelRef, ModelStorage
from libs.pipeline.strategy import StrategyError, check_strategy, check_strategy_by_name
from libs.pipeline.types import TIMEFRAME_SECONDS

if TYPE_CHECKING:
    from libs.pipeline.trainer import CheckpointCallback

log = logging.getLogger(__name__)


class PipelineRunner:
    """`JobRunner` over `TrainingPipeline`. Directories default as the pipeline's do
    ($TRAINBUS_DATA_DIR, $TRAINBUS_STRATEGIES_DIR, $TRAINBUS_MODELS_DIR, else ./data ...)."""

    def __init__(
        self,
        *,
        data_dir: Path | str | None = None,
        models_dir: Path | str | None = None,
        strategies_dir: Path | str | None = None,
        checkpoint_every: int = 1,
        checkpoint_interval: float = 0.0,
        device_manager: DeviceManager | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.strategies_dir = Path(strategies_dir) if strategies_dir is not None else None
        self.storage = ModelStorage(models_dir)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._prepared: Prepared | None = None  # the last checked request's data, for its run
        self.pipeline = TrainingPipeline(
            data_dir=self.data_dir,
            strategies_dir=self.strategies_dir,
            storage=self.storage,
            device_manager=device_manager or DeviceManager(),
        )

    # --- JobRunner -------------------------------------------------------------------------

    def describe(self) -> RunnerInfo:
        import torch

        device = self.pipeline.device_manager.select()
        capabilities: dict[str, Any] = {
            "device_type": device.type,
            "device_name": device.name,
            **{k: v for k, v in msgspec.to_builtins(device.capabilities).items()
               if v is not None},
            "torch": torch.__version__.split("+")[0],
            "threads": torch.get_num_threads(),
        }
        return RunnerInfo(device=device.device, capabilities=capabilities)

    @staticmethod
    def request_for(command: TrainCommand) -> TrainingRequest:
        """The pipeline request a train command stands for (also what a direct run uses)."""
        return TrainingRequest(
            strategy=command.strategy,
            strategy_yaml=command.strategy_yaml,
            symbols=list(command.symbols),
            timeframes=list(command.timeframes),
            start=command.start,
            end=command.end,
            seed=command.seed,
            epochs=command.epochs,  # as `trainbus pipeline run --epochs` passes it
        )

    def check(self, command: TrainCommand) -> JobPlan:
        """Raises CommandRejected naming the field when the job cannot start."""
        request = self.request_for(command)
        field = "strategy" if command.strategy is not None else "strategy_yaml"
        try:
            strategy = self.pipeline.load_strategy(request)
            if command.strategy_yaml is not None:
                check_lineage(strategy, self.pipeline.strategies_dir_for(request))
        except StrategyError as exc:
            unknown = command.strategy is not None and "not found" in str(exc).lower()
            raise CommandRejected(
                str(exc)[:2000], field=field,
                category="unknown_strategy" if unknown else "invalid",
            ) from None
        try:
            symbols, timeframes, _ = self.pipeline.resolve_selection(strategy, request)
        except (DataError, RequestError) as exc:
            raise CommandRejected(str(exc), field="symbols" if isinstance(exc, DataError)
                                  else "timeframes", category="invalid") from None
        directory = self.data_dir if self.data_dir is not None else data_mod.data_dir()
        missing = [f"{s} {tf}" for s in symbols for tf in timeframes
                   if not _has_data(s, tf, directory)]
        if missing:
            raise CommandRejected(
                f"no price data for {', '.join(missing)} on this worker", field="symbols",
                category="invalid",
            )
        self._prepared = None
        try:
            self._prepared = self.pipeline.prepare(request)
        except SplitError as exc:
            raise CommandRejected(str(exc)[:2000], field=exc.field, category="invalid") from None
        except WindowError as exc:  # the dates asked for hold no bar: bad input, not bad data
            field = "start" if command.start is not None or command.end is None else "end"
            raise CommandRejected(str(exc)[:2000], field=field, category="invalid") from None
        except BAD_INPUT_ERRORS:
            pass  # a broken file or indicator: the run reports it as it always has
        return JobPlan(seed=command.seed if command.seed is not None else strategy.training.seed,
                       warnings=self._strategy_warnings(command))

    def _strategy_warnings(self, command: TrainCommand) -> list[str]:
        """The keys the strategy sets that are accepted but ignored (it loaded: no problems)."""
        if command.strategy_yaml is not None:
            result = check_strategy(command.strategy_yaml, source="<request>")
        else:
            assert command.strategy is not None
            result = check_strategy_by_name(command.strategy, self.pipeline.strategies_dir)
        return [str(warning) for warning in result.warnings]

    def run(
        self,
        command: TrainCommand,
        callbacks: JobCallbacks,
        cancel: CancelSignal,
        resume_from: bytes | None,
    ) -> JobResult:
        request = self.request_for(command)
        resume = self._decode_checkpoint(resume_from)
        try:
            result = self._run(request, callbacks, cancel, resume)
        except CheckpointError as exc:
            if resume is None:
                raise JobFailed("bad_input", str(exc)) from exc
            log.warning("checkpoint does not fit this job (%s); training from the start", exc)
            result = self._run(request, callbacks, cancel, None)
        archive = self.storage.to_archive(result.model)
        return JobResult(
            strategy=result.model.strategy,
            timeframe=result.model.timeframe,
            version=result.model.version,
            local_path=result.model.path,
            weights_sha256=result.weights_sha256,
            archive=archive,
            test_metrics=dict(headline(result.test_metrics)),
            best_epoch=result.best_epoch,
            epochs_trained=result.epochs_trained,
            warnings=list(result.warnings),
        )

    # --- helpers ---------------------------------------------------------------------------

    def _run(
        self,
        request: TrainingRequest,
        callbacks: JobCallbacks,
        cancel: CancelSignal,
        resume: Checkpoint | None,
    ) -> TrainingResult:
        prepared, self._prepared = self._prepared, None
        try:
            return self.pipeline.run(
                request,
                callbacks.report,
                cast(CancelToken, cancel),  # duck-typed: the pipeline only calls is_cancelled()
                checkpoint_callback=_checkpoint_sender(callbacks, cancel),
                checkpoint_every=self.checkpoint_every,
                checkpoint_interval=self.checkpoint_interval,
                resume_from=resume,
                prepared=prepared,
                every_batch=False,  # the relay sends a few a second: it needs no more
            )
        except TrainingCancelled as exc:
            cp = exc.checkpoint
            data = checkpoint_to_bytes(cp) if cp is not None and cancel.cause == "drain" else None
            raise JobCancelled(
                cancel.reason, checkpoint=data, epoch=cp.epoch if cp else 0,
                batch=cp.batch_in_epoch if cp else 0,
            ) from None
        except CheckpointError:
            raise
        except DataError as exc:
            raise JobFailed("data", str(exc)) from exc
        except BAD_INPUT_ERRORS as exc:
            raise JobFailed("bad_input", str(exc)) from exc
        except (OSError, MemoryError) as exc:
            raise JobFailed("infrastructure", f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _decode_checkpoint(data: bytes | None) -> Checkpoint | None:
        if data is None:
            return None
        try:
            return checkpoint_from_bytes(data)
        except CheckpointError as exc:
            log.warning("unreadable checkpoint (%s); training from the start", exc)
            return None


def _checkpoint_sender(callbacks: JobCallbacks, cancel: CancelSignal) -> CheckpointCallback:
    def send(cp: Checkpoint) -> None:
        if cancel.is_cancelled():
            return  # the cancel path hands its checkpoint over with JobCancelled
        callbacks.checkpoint(epoch=cp.epoch, batch=cp.batch_in_epoch,
                             data=checkpoint_to_bytes(cp))

    return send


def _has_data(symbol: str, timeframe: str, directory: Path) -> bool:
    """Whether load_price_data finds this symbol/timeframe (its file, or a finer one)."""
    if data_mod.price_file(symbol, timeframe, directory) is not None:
        return True
    target = TIMEFRAME_SECONDS[timeframe]
    return any(
        TIMEFRAME_SECONDS[tf] < target and target % TIMEFRAME_SECONDS[tf] == 0
        for tf in data_mod.available_timeframes(symbol, directory)
    )


def load_model_archive(data: bytes) -> LoadedModel:
    """A model fetched from the object store (`fetch_model`), ready for inference, in memory."""
    return ModelStorage(Path(".")).load_archive(data)


def install_model_archive(data: bytes, models_dir: Path | str | None = None) -> ModelRef:
    """Install a fetched model into a models dir (keeps its version number when free)."""
    return ModelStorage(models_dir).from_archive(data)
