"""One contract for the worker's `JobRunner` port (libs/events/worker/port.py), run against every
implementation: the real `PipelineRunner` (real torch training on real files) and the fake the
runtime tests use. A fake that drifts from the real runner would make those tests prove nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from libs.events.errors import CommandRejected
from libs.events.worker.port import JobCancelled, JobPlan, JobResult, JobRunner, RunnerInfo
from libs.pipeline.progress import ProgressUpdate
from services.trainers.pipeline_runner import PipelineRunner
from tests.harness.strategies import TINY_SEED
from tests.harness.workspace import Workspace
from tests.trainers.conftest import command
from tests.trainers.fakes import FakeRunner


@dataclass
class Reports:
    """JobCallbacks that keep what they are told."""

    phases: list[str] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    progress_reports: int = 0
    checkpoints: list[int] = field(default_factory=list)

    on_epoch: Any = None  # called after each epoch report (a test trips its signal here)

    def report(self, update: ProgressUpdate) -> None:
        if update.kind == "phase":
            self.phases.append(update.phase)
        elif update.kind == "batch":
            self.progress_reports += 1
        else:
            self.epochs.append(update.epoch)
            if self.on_epoch is not None:
                self.on_epoch()

    def checkpoint(self, *, epoch: int, batch: int, data: bytes) -> None:
        assert isinstance(data, bytes) and data
        self.checkpoints.append(epoch)


class Signal:
    """A CancelSignal the test trips."""

    def __init__(self, cause: str | None = None) -> None:
        self._cause = cause
        self.tripped = threading.Event()
        if cause is not None:
            self.tripped.set()

    @property
    def cause(self) -> str | None:
        return self._cause

    @property
    def reason(self) -> str | None:
        return "asked" if self._cause else None

    def is_cancelled(self) -> bool:
        return self.tripped.is_set()


@pytest.fixture(params=["pipeline", "fake"])
def runner(request: pytest.FixtureRequest, trainer_env: Workspace, tmp_path: Path) -> JobRunner:
    if request.param == "pipeline":
        return PipelineRunner(data_dir=trainer_env.data_dir, models_dir=tmp_path / "models",
                              strategies_dir=trainer_env.strategies_dir)
    return FakeRunner(epochs=4)


def test_describe_names_a_device(runner: JobRunner) -> None:
    info = runner.describe()
    assert isinstance(info, RunnerInfo) and info.device


def test_check_refuses_an_unknown_strategy_naming_the_field(runner: JobRunner) -> None:
    with pytest.raises(CommandRejected) as caught:
        runner.check(command("c-1", strategy="unknown"))
    assert caught.value.field == "strategy" and caught.value.category == "unknown_strategy"


def test_check_resolves_the_seed(runner: JobRunner) -> None:
    assert runner.check(command("c-2", seed=5)) == JobPlan(seed=5)
    assert runner.check(command("c-3", seed=None)) == JobPlan(seed=TINY_SEED)


def test_run_reports_each_epoch_and_returns_the_model(runner: JobRunner) -> None:
    reports = Reports()
    result = runner.run(command("c-4"), reports, Signal(), None)
    assert isinstance(result, JobResult)
    assert result.archive and len(result.weights_sha256) == 64
    assert reports.epochs == list(range(1, result.epochs_trained + 1)) and reports.epochs
    assert reports.progress_reports > 0 and "training" in reports.phases


def test_a_tripped_signal_ends_the_run_cancelled(runner: JobRunner) -> None:
    with pytest.raises(JobCancelled) as caught:
        runner.run(command("c-5", strategy="slow"), Reports(), Signal("cancel"), None)
    assert caught.value.checkpoint is None  # a cancel hands back nothing; only a drain does


def test_a_drain_mid_training_hands_back_a_checkpoint_that_resumes(runner: JobRunner) -> None:
    signal = Signal()
    signal._cause = "drain"
    reports = Reports(on_epoch=signal.tripped.set)  # drain once the first epoch is reported
    with pytest.raises(JobCancelled) as caught:
        runner.run(command("c-6"), reports, signal, None)
    assert caught.value.checkpoint is not None and caught.value.epoch >= 1
    resumed = Reports()
    done = runner.run(command("c-6"), resumed, Signal(), caught.value.checkpoint)
    assert isinstance(done, JobResult)
    assert resumed.epochs and resumed.epochs[0] > 1  # it went on, it did not start over
