"""The narrow port between the worker runtime and the work it runs.

The runtime (libs/events/worker/runtime.py) knows NATS and nothing about training; a
`JobRunner` knows training and nothing about NATS. The real runner is `PipelineRunner` in
services/trainers/pipeline_runner.py (the training pipeline); tests may plug in a fast fake.
A runner's `check` and `run` are synchronous and are called in a worker thread; `run` reports
through `JobCallbacks` (thread-safe) and watches a `CancelSignal` before every unit of work.

`run` ends in one of three ways: it returns a `JobResult`, raises `JobCancelled` (the signal was
tripped; carries a checkpoint when the runner could take one), or raises `JobFailed` with a
category. Anything else it raises is a bug (the runtime reports `failed(code)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from libs.events.schema import TrainCommand
from libs.pipeline.progress import ProgressUpdate

FailureCategoryName = Literal["bad_input", "data", "code", "infrastructure"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerInfo:
    """What the runner trains on, for `accepted` events and heartbeats."""

    device: str
    capabilities: dict[str, Any] = field(default_factory=dict)


class CancelSignal(Protocol):
    """Tripped by the runtime; checked by the runner. `cause` is "cancel" (a cancel command:
    the job ends cancelled), "drain" (worker shutdown: hand back a checkpoint, the job goes
    on elsewhere), "fenced" or "infrastructure" (this attempt lost the job); None until
    tripped."""

    @property
    def cause(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...

    def is_cancelled(self) -> bool: ...


class JobCallbacks(Protocol):
    """What a runner reports, from its own thread. Each call is cheap and never blocks."""

    def report(self, update: ProgressUpdate) -> None:
        """A phase started, a batch or an epoch finished: the pipeline's own value, as is."""
        ...

    def checkpoint(self, *, epoch: int, batch: int, data: bytes) -> None:
        """A resumable state after `epoch` full epochs (+ `batch` batches of the next)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPlan:
    """What `check` resolved before the job is accepted: the seed the job trains with (the
    command's, else the strategy's own `training.seed`), and the strategy's warnings (keys
    accepted but ignored), both announced in `accepted`."""

    seed: int
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """A finished, locally saved model and its archive bytes (for the object store)."""

    strategy: str
    timeframe: str
    version: int
    local_path: str
    weights_sha256: str
    archive: bytes
    test_metrics: dict[str, float | None] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_trained: int = 0
    warnings: list[str] = field(default_factory=list)


class JobCancelled(Exception):
    """Raised by `run` when the cancel signal was tripped. `checkpoint` is the state at the
    moment it stopped (bytes a later `run(resume_from=...)` continues from), when one was
    taken; `epoch`/`batch` say where."""

    def __init__(
        self, reason: str | None, *, checkpoint: bytes | None = None, epoch: int = 0,
        batch: int = 0,
    ) -> None:
        super().__init__(reason or "cancelled")
        self.reason = reason
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.batch = batch


class JobFailed(Exception):
    """Raised by `run` (or `check`) when the job cannot finish. Only `infrastructure` failures
    are retried (another delivery); the others are final."""

    def __init__(self, category: FailureCategoryName, reason: str) -> None:
        super().__init__(reason)
        self.category: FailureCategoryName = category
        self.reason = reason


class JobRunner(Protocol):
    """The work behind a worker. `check` and `run` run in a worker thread."""

    def describe(self) -> RunnerInfo: ...

    def check(self, command: TrainCommand) -> JobPlan:
        """Cheap validation before the job is accepted (strategy parses, data files exist,
        names are safe). Raises `libs.events.errors.CommandRejected`."""
        ...

    def run(
        self,
        command: TrainCommand,
        callbacks: JobCallbacks,
        cancel: CancelSignal,
        resume_from: bytes | None,
    ) -> JobResult:
        """Train. Raises JobCancelled or JobFailed; anything else is a bug."""
        ...
