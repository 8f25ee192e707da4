"""A fast, scriptable `JobRunner` for the runtime's coordination tests (no torch).

It "trains" `epochs` epochs of `batches` batches, sleeping `batch_seconds` per batch, checks the
cancel signal before every batch, reports like the real pipeline, checkpoints every epoch, and
on a drain hands back its position as checkpoint bytes. `fail_with` makes it fail instead;
`hold_after_epoch` makes it wait, after that epoch's checkpoint, until it is cancelled (a stop
that lands exactly between two epochs).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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
from libs.pipeline.progress import ProgressUpdate


@dataclass
class FakeRunner:
    epochs: int = 3
    batches: int = 5
    batch_seconds: float = 0.01
    fail_with: BaseException | None = None
    hold_after_epoch: int | None = None
    strategy_seed: int = 11  # what the strategies of tests/harness/strategies.py say
    runs: list[dict[str, Any]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> RunnerInfo:
        return RunnerInfo(device="fake", capabilities={"fake": True})

    def check(self, command: TrainCommand) -> JobPlan:
        if command.strategy == "unknown":
            raise CommandRejected("strategy 'unknown' not found", field="strategy",
                                  category="unknown_strategy")
        return JobPlan(seed=command.seed if command.seed is not None else self.strategy_seed)

    def run(self, command: TrainCommand, callbacks: JobCallbacks, cancel: CancelSignal,
            resume_from: bytes | None) -> JobResult:
        start = json.loads(resume_from) if resume_from else {"epoch": 0, "batch": 0}
        self.runs.append({"job": command.job_id, "resume": start})
        self.started.set()
        if self.fail_with is not None:
            raise self.fail_with
        callbacks.report(ProgressUpdate(kind="phase", phase="training"))
        epoch, batch = start["epoch"], start["batch"]
        while epoch < self.epochs:
            while batch < self.batches:
                if cancel.is_cancelled():
                    data = json.dumps({"epoch": epoch, "batch": batch}).encode()
                    raise JobCancelled(cancel.reason, epoch=epoch, batch=batch,
                                       checkpoint=data if cancel.cause == "drain" else None)
                time.sleep(self.batch_seconds)
                batch += 1
                callbacks.report(ProgressUpdate(
                    kind="batch", phase="training", epoch=epoch + 1, total_epochs=self.epochs,
                    batch=batch, total_batches=self.batches,
                    percent=100.0 * (epoch * self.batches + batch) / (self.epochs * self.batches),
                    train_loss=1.0, train_accuracy=0.5, eta_seconds=1.0))
            epoch, batch = epoch + 1, 0
            callbacks.report(ProgressUpdate(
                kind="epoch", phase="training", epoch=epoch, total_epochs=self.epochs,
                train_loss=1.0 / epoch, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5,
                learning_rate=0.01, epoch_duration=0.1))
            if epoch < self.epochs:
                callbacks.checkpoint(epoch=epoch, batch=0,
                                     data=json.dumps({"epoch": epoch, "batch": 0}).encode())
            while epoch == self.hold_after_epoch and not cancel.is_cancelled():
                time.sleep(0.005)
        return JobResult(strategy="fake", timeframe="1h", version=1, local_path="/nowhere",
                         weights_sha256="0" * 64, archive=b"model-bytes",
                         test_metrics={"accuracy": 0.5}, best_epoch=self.epochs,
                         epochs_trained=self.epochs - start["epoch"])


def fake_failure(category: str, reason: str = "scripted") -> JobFailed:
    return JobFailed(category, reason)  # type: ignore[arg-type]
