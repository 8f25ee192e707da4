"""Cooperative cancellation: a token the caller trips, an exception the trainer raises.

The token is a plain `threading.Event`, so any thread (the NATS worker's event loop thread, a
signal handler, a test's progress callback) can trip it while training runs in another. The
pipeline checks it between steps and the trainer before every batch; a check costs ~50 ns.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.pipeline.checkpoint import Checkpoint


class CancelToken:
    """Set once, never cleared: a cancelled job stays cancelled."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str | None = None) -> None:
        if reason is not None and self.reason is None:
            self.reason = reason
        self._event.set()

    def is_cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (or timeout); returns whether it was cancelled."""
        return self._event.wait(timeout)


class TrainingCancelled(Exception):
    """Raised when a cancel token is tripped. Not a failure: report it as `cancelled`.

    `checkpoint` is the state at the moment of cancellation when the caller asked for
    checkpoints (a `checkpoint_callback` was given), else None. `phase` names where it stopped.
    """

    def __init__(
        self,
        message: str = "training cancelled",
        *,
        phase: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        super().__init__(message)
        self.phase = phase
        self.checkpoint = checkpoint


def raise_if_cancelled(token: CancelToken | None, phase: str) -> None:
    if token is not None and token.is_cancelled():
        raise TrainingCancelled(f"cancelled during {phase}", phase=phase)
