"""The host trainer's session view: what this workstation is doing, for its heartbeat.

Fed with every event the worker publishes (`WorkerObserver.on_event`); read by the heartbeat
(`session_view`). Pure bookkeeping: no I/O, no coordination.
"""

from __future__ import annotations

from typing import Any

import msgspec

from libs.events.heartbeat import SessionView
from libs.events.schema import (
    AcceptedEvent,
    AnyEvent,
    CancelledEvent,
    CompletedEvent,
    EpochEvent,
    FailedEvent,
    ProgressEvent,
    ResumedEvent,
)


class HostSession:
    """The current (or last) job of this host trainer."""

    def __init__(self) -> None:
        self._view = SessionView()
        self.jobs_done = 0

    @property
    def view(self) -> SessionView:
        return self._view

    def on_event(self, event: AnyEvent) -> None:
        v = self._view
        if isinstance(event, AcceptedEvent):
            self._view = SessionView(job_id=event.job_id, status="running")
            return
        if event.job_id != v.job_id:
            return
        if isinstance(event, ResumedEvent):
            self._view = msgspec.structs.replace(v, epoch=event.from_epoch)
        elif isinstance(event, ProgressEvent):
            self._view = msgspec.structs.replace(
                v, epoch=event.epoch, total_epochs=event.total_epochs,
                metrics={**v.metrics, "train_loss": event.train_loss,
                         "train_accuracy": event.train_accuracy, "percent": event.percent},
            )
        elif isinstance(event, EpochEvent):
            self._view = msgspec.structs.replace(
                v, epoch=event.epoch, total_epochs=event.total_epochs,
                metrics={"train_loss": event.train_loss, "train_accuracy": event.train_accuracy,
                         "val_loss": event.val_loss, "val_accuracy": event.val_accuracy,
                         "percent": 100.0 * event.epoch / max(event.total_epochs, 1)},
            )
        elif isinstance(event, CompletedEvent):
            self.jobs_done += 1
            self._view = msgspec.structs.replace(
                v, status="completed", metrics={**v.metrics, **{
                    f"test_{k}": val for k, val in event.test_metrics.items()
                    if k in ("accuracy", "loss", "macro_f1")}},
            )
        elif isinstance(event, CancelledEvent):
            self._view = msgspec.structs.replace(v, status="cancelled")
        elif isinstance(event, FailedEvent):
            self._view = msgspec.structs.replace(v, status="failed")

    def session_view(self) -> dict[str, Any] | None:
        return msgspec.to_builtins(self._view)
