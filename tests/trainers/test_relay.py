"""The training-thread side of a job: the progress throttle and the cancel signal (no NATS)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from libs.events.schema import EpochEvent, PhaseEvent, ProgressEvent
from libs.events.worker.relay import CheckpointBlob, EventRelay, JobStop
from libs.pipeline.progress import ProgressUpdate

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress(relay: EventRelay, epoch: int, batch: int) -> None:
    relay.report(ProgressUpdate(kind="batch", phase="training", epoch=epoch, total_epochs=2,
                                batch=batch, total_batches=10,
                                percent=5.0 * ((epoch - 1) * 10 + batch), train_loss=1.0,
                                train_accuracy=0.5, eta_seconds=3.0))


async def drain(queue: asyncio.Queue) -> list:
    await asyncio.sleep(0)  # let call_soon_threadsafe callbacks run
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_progress_is_throttled_and_the_latest_is_flushed_before_the_epoch() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    clock = Clock()
    relay = EventRelay(asyncio.get_running_loop(), queue, job_id="j", attempt=1,
                       worker_id="w", progress_interval=0.25, clock=clock)
    relay.report(ProgressUpdate(kind="phase", phase="training"))
    for batch in range(1, 11):  # 10 batches, 1/16 s apart
        progress(relay, 1, batch)
        clock.now += 0.0625
    relay.report(ProgressUpdate(kind="epoch", phase="training", epoch=1, total_epochs=2,
                                train_loss=1.0, train_accuracy=0.5, val_loss=1.0,
                                val_accuracy=0.5, learning_rate=0.01, epoch_duration=0.5))
    relay.checkpoint(epoch=1, batch=0, data=b"cp")
    items = await drain(queue)
    # Check: the phase; progress at t = 0, 0.25, 0.5 (batches 1, 5, 9); the held-back batch
    # 10 flushed just before the epoch event; then the checkpoint.
    assert [type(i).__name__ for i in items] == [
        "PhaseEvent", *["ProgressEvent"] * 4, "EpochEvent", "CheckpointBlob"]
    assert isinstance(items[0], PhaseEvent)
    assert [(p.epoch, p.batch) for p in items[1:5] if isinstance(p, ProgressEvent)] == [
        (1, 1), (1, 5), (1, 9), (1, 10)]
    assert isinstance(items[5], EpochEvent) and isinstance(items[6], CheckpointBlob)
    assert relay.sent_progress == 4


async def test_a_pending_progress_is_flushed_at_the_end_and_nan_becomes_null() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    clock = Clock()
    relay = EventRelay(asyncio.get_running_loop(), queue, job_id="j", attempt=1,
                       worker_id="w", progress_interval=10.0, clock=clock)
    progress(relay, 1, 1)
    relay.report(ProgressUpdate(kind="batch", phase="training", epoch=1, total_epochs=2,
                                batch=2, total_batches=10, percent=10.0,
                                train_loss=float("nan")))
    assert len(await drain(queue)) == 1
    relay.flush()
    (last,) = await drain(queue)
    assert (last.batch, last.train_loss) == (2, None)


async def test_events_are_handed_over_from_another_thread() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    relay = EventRelay(asyncio.get_running_loop(), queue, job_id="j", attempt=1,
                       worker_id="w", progress_interval=0.0)

    def train() -> None:
        for batch in range(1, 51):
            progress(relay, 1, batch)

    thread = threading.Thread(target=train)
    thread.start()
    await asyncio.to_thread(thread.join)
    items = await drain(queue)
    assert [i.batch for i in items] == list(range(1, 51))


def test_the_first_stop_cause_wins() -> None:
    stop = JobStop()
    assert not stop.is_cancelled() and stop.cause is None
    assert stop.trip("drain", "shutting down")
    assert not stop.trip("cancel", "too late")
    assert (stop.cause, stop.reason, stop.is_cancelled()) == ("drain", "shutting down", True)
