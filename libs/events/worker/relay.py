"""From the training thread to the event loop, and from the loop to the log, for one job.

`JobStop` is the job's cancel signal: the loop trips it (cancel command, drain, fenced out,
lost connection), the runner checks it before every batch. The first cause wins.

`EventRelay` is the runner's `JobCallbacks`: it runs in the training thread, turns each report
into an event stamped with the emit time, throttles `progress` by time (the latest pending one
is always sent before the next phase/epoch/checkpoint and at the end) and hands items to the
loop with `call_soon_threadsafe`, never blocking the trainer.

`JobWriter` publishes one job's events in order, each fenced on the last message of the job it
has judged (`Nats-Expected-Last-Subject-Sequence` on `<prefix>.evt.<job>.>`); a refusal caused
only by foreign messages (not a new owner) is read past, not obeyed. `pump` drains the relay's
queue through it and stores checkpoints in the object store first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, Literal

import nats.js.errors

from libs.events.bus import Bus, publish_event
from libs.events.errors import FencedOut, ObjectStoreError, PublishRefused
from libs.events.fold import JobState, counts, fold, fold_judged
from libs.events.log import LogMessage, to_log_message
from libs.events.models import checkpoint_object_name, delete_quietly, put_bytes
from libs.events.schema import (
    AnyEvent,
    CheckpointEvent,
    EpochEvent,
    EventHeader,
    PhaseEvent,
    ProgressEvent,
)
from libs.pipeline.progress import ProgressUpdate

log = logging.getLogger(__name__)

StopCause = Literal["cancel", "drain", "fenced", "infrastructure"]


class JobStop:
    """The cancel signal of one job attempt (thread-safe; set once, first cause wins)."""

    __slots__ = ("_event", "cause", "reason", "tripped_at")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.cause: StopCause | None = None
        self.reason: str | None = None
        self.tripped_at: float | None = None

    def trip(self, cause: StopCause, reason: str | None = None) -> bool:
        """Trip the signal; False when it was already tripped (the first cause stands)."""
        if self._event.is_set():
            return False
        self.cause, self.reason, self.tripped_at = cause, reason, time.monotonic()
        self._event.set()
        return True

    def is_cancelled(self) -> bool:
        return self._event.is_set()

    # pipeline CancelToken compatibility (the trainer only calls is_cancelled)
    def cancel(self, reason: str | None = None) -> None:
        self.trip("cancel", reason)

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


@dataclass(frozen=True, slots=True)
class CheckpointBlob:
    epoch: int
    batch: int
    data: bytes


class Close:
    """End of a job's relay queue."""


CLOSE: Final = Close()
RelayItem = AnyEvent | CheckpointBlob | Close


class EventRelay:
    """`JobCallbacks` for one attempt; called from the training thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[RelayItem],
        *,
        job_id: str,
        attempt: int,
        worker_id: str,
        progress_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._job_id, self._attempt, self._worker_id = job_id, attempt, worker_id
        self._interval = progress_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: ProgressUpdate | None = None  # the latest batch update not sent
        self._last_progress = float("-inf")
        self.sent_progress = 0
        self.dropped_progress = 0

    # --- JobCallbacks ---

    def report(self, update: ProgressUpdate) -> None:
        """The one place a pipeline update becomes an event: phase and epoch at once (after the
        pending progress), batch progress throttled to one per `progress_interval`."""
        if update.kind == "batch":
            self._progress(update)
            return
        event: PhaseEvent | EpochEvent
        if update.kind == "epoch":
            event = EpochEvent(
                **self._header(), epoch=update.epoch, total_epochs=update.total_epochs,
                train_loss=_finite(update.train_loss),
                train_accuracy=_finite(update.train_accuracy),
                val_loss=_finite(update.val_loss), val_accuracy=_finite(update.val_accuracy),
                learning_rate=_finite(update.learning_rate),
                duration=max(0.0, update.epoch_duration or 0.0),
            )
        else:
            event = PhaseEvent(**self._header(), phase=update.phase, **_fold_of(update))
        with self._lock:
            self._flush_locked()
            self._send(event)

    def _header(self) -> EventHeader:
        # The emit time: subscribers measure latency from it.
        return {"job_id": self._job_id, "attempt": self._attempt,
                "worker_id": self._worker_id, "time": time.time()}

    def _progress(self, update: ProgressUpdate) -> None:
        # Every batch update the trainer hands over calls this: only the sent ones become
        # events (a few per second); the others are kept as they are, the latest to be flushed
        # before the next event.
        now = self._clock()
        with self._lock:
            if now - self._last_progress >= self._interval:
                self._last_progress = now
                self._pending = None
                self._send(self._progress_event(update))
                self.sent_progress += 1
            else:
                if self._pending is not None:
                    self.dropped_progress += 1
                self._pending = update

    def _progress_event(self, u: ProgressUpdate) -> ProgressEvent:
        return ProgressEvent(
            **self._header(), epoch=u.epoch, total_epochs=u.total_epochs, batch=u.batch,
            total_batches=u.total_batches, percent=min(100.0, max(0.0, u.percent)),
            train_loss=_finite(u.train_loss), train_accuracy=_finite(u.train_accuracy),
            eta_seconds=None if u.eta_seconds is None else max(0.0, u.eta_seconds),
        )

    def checkpoint(self, *, epoch: int, batch: int, data: bytes) -> None:
        with self._lock:
            self._flush_locked()
            self._send(CheckpointBlob(epoch=epoch, batch=batch, data=data))

    # --- loop side ---

    def flush(self) -> None:
        """Send the pending progress event, if any (call once the runner has returned)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending is not None:
            self._send(self._progress_event(self._pending))
            self._pending = None
            self.sent_progress += 1

    def _send(self, item: RelayItem) -> None:
        # RuntimeError: the loop is gone (forced exit) and nobody listens any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


# A writer re-fences at most this often for one event: a flood of foreign messages faster
# than we can read them ends as an infrastructure failure (retried), never as "fenced out".
MAX_REFENCES: Final = 50


class JobWriter:
    """Publishes one attempt's events, each fenced on the last message of the job it has read.

    `last_seq` starts as the last sequence on `<prefix>.evt.<job>.>` when the attempt claims the
    job (0 when the job has no event yet); `state` is the job as folded from the log up to
    then (fold.py), and the writer folds its own events into it.

    Why a refused publish is judged instead of obeyed: anyone who may publish on the job's
    subjects (a forger, a stray client, the bytes `garbage`) moves the fence's last sequence,
    so "the sequence moved" alone let any message fence the real worker out and leave the job
    running for ever. Per-subject permissions would close that only with one credential per
    worker and job; the fold already knows who owns a job. So on `FencedOut` the writer reads
    what was stored since its fence, folds it, and gives the job up only when that changed the
    owner (a later `accepted`) or finished it; otherwise it re-fences on the newest sequence
    and publishes again. The fence still guarantees that nothing unread lies before the event
    it stores, so a real claim by another worker always wins."""

    def __init__(self, bus: Bus, *, job_id: str, attempt: int, last_seq: int,
                 state: JobState) -> None:
        self.bus = bus
        self.job_id = job_id
        self.attempt = attempt
        self.last_seq = last_seq
        self.state = state
        self.foreign_skipped = 0  # foreign messages read past (for logs and tests)
        # publish_event signs with bus.signer: the verified signer our stored events carry.
        self.signer = bus.signer.public_key if bus.signer is not None else None
        self._n = 0

    async def publish(self, event: AnyEvent) -> int:
        for _ in range(MAX_REFENCES):
            try:
                receipt = await publish_event(
                    self.bus, event, n=self._n, expected_last_subject_seq=self.last_seq
                )
            except FencedOut:
                await self._judge_since_fence(event)
                continue
            self._n += 1
            # max(): a retried publish whose first try was stored answers with the older seq.
            self.last_seq = max(self.last_seq, receipt.seq)
            folded = fold(self.state, LogMessage(
                seq=receipt.seq, subject="", time=event.time, job_id=self.job_id, body=event,
                signer=self.signer))
            assert folded is not None  # a known job never folds back to unknown
            self.state = folded
            return receipt.seq
        raise PublishRefused(f"job {self.job_id}: its event subjects keep moving (more than "
                             f"{MAX_REFENCES} refused publishes of one event)")

    async def _judge_since_fence(self, event: AnyEvent) -> None:
        """Fold what was stored on the job's subjects since `last_seq`; raise `FencedOut` when
        `event` no longer counts (the job has another owner, or is finished), else move the
        fence past the foreign messages."""
        scope = self.bus.names.job_events(self.job_id)
        async for message in stored_after(self.bus, scope, self.last_seq):
            new, foreign = fold_judged(self.state, message)
            if foreign:
                self.foreign_skipped += 1
                log.warning("job %s: read past a foreign message at seq %d (%s)", self.job_id,
                            message.seq, type(message.body).__name__)
            assert new is not None  # a known job never folds back to unknown
            self.state = new
            self.last_seq = message.seq
        if not counts(self.state, event, signer=self.signer):
            raise FencedOut(scope, self.last_seq,
                            f"the job is now {self.state.status} by attempt "
                            f"{self.state.attempt} of {self.state.worker}")


async def stored_after(bus: Bus, subject: str, after_seq: int) -> AsyncIterator[LogMessage]:
    """The messages stored on `subject` (wildcards allowed) after `after_seq`, in order, one
    direct get each (`next_by_subj`), as the fold reads them."""
    seq = after_seq
    while True:
        try:
            raw = await bus.js.get_msg(bus.names.stream, seq + 1, subject=subject, direct=True,
                                       next=True)
        except nats.js.errors.NotFoundError:
            return
        seq = int(raw.seq or seq + 1)
        stamp = raw.time.timestamp() if raw.time is not None else 0.0
        yield to_log_message(bus.names, seq, str(raw.subject), raw.data or b"", raw.headers,
                             stamp)


EventSink = Callable[[AnyEvent], None]


async def pump(
    queue: asyncio.Queue[RelayItem],
    writer: JobWriter,
    *,
    worker_id: str,
    on_event: EventSink,
    checkpoints: list[str],
) -> None:
    """Publish the relay's items until CLOSE. A checkpoint is stored first, then announced
    (the `checkpoint` event is the pointer a resuming worker follows), then the previous
    checkpoint object of this attempt is deleted. Raises FencedOut / PublishError."""
    while True:
        item = await queue.get()
        if isinstance(item, Close):
            return
        event: AnyEvent
        if isinstance(item, CheckpointBlob):
            stored = await _store_checkpoint(writer, item, worker_id, checkpoints)
            if stored is None:
                continue
            event = stored
        else:
            event = item
        await writer.publish(event)
        on_event(event)
        if isinstance(event, CheckpointEvent):
            for stale in checkpoints[:-1]:
                await delete_quietly(writer.bus, stale)
            del checkpoints[:-1]


async def _store_checkpoint(
    writer: JobWriter, blob: CheckpointBlob, worker_id: str, checkpoints: list[str]
) -> CheckpointEvent | None:
    name = checkpoint_object_name(writer.job_id, writer.attempt, blob.epoch, blob.batch)
    try:
        await put_bytes(writer.bus, name, blob.data,
                        description=f"checkpoint of {writer.job_id} after epoch {blob.epoch}")
    except ObjectStoreError as exc:  # a lost checkpoint costs a longer resume, not the job
        log.warning("job %s: checkpoint after epoch %d not stored: %s", writer.job_id,
                    blob.epoch, exc)
        return None
    # A drain before an epoch's first batch stores that epoch's checkpoint again, under the
    # same name: once in the list, or the pump deletes it as the stale previous one.
    if name in checkpoints:
        checkpoints.remove(name)
    checkpoints.append(name)
    return CheckpointEvent(job_id=writer.job_id, attempt=writer.attempt, worker_id=worker_id,
                           time=time.time(), epoch=blob.epoch, object_name=name)


def _fold_of(update: ProgressUpdate) -> dict[str, int]:
    """The walk-forward position of a phase update, when it is in a fold."""
    if not update.fold:
        return {}
    return {"fold": update.fold, "folds": update.folds, "epoch": update.epoch,
            "total_epochs": update.total_epochs}
