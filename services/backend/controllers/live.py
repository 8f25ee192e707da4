"""`GET /api/v1/stream`: the dashboard's live feed (server-sent events) of every job and worker.

The per-job stream (`/api/v1/jobs/{id}/events`) follows one job's events; a jobs table needs
every job's state as it changes. The source of state stays the projection: this stream watches
KV `<prefix>_jobs` (each put is a job whose projected state changed) and KV `<prefix>_workers`
(heartbeats, deletes and TTL markers) with ordered push consumers that start at "new", then
reads the current projection once. Frames (each `data:` is one JSON document):

    event: snapshot   {"jobs": [row, ...] newest first (at most `limit`), "total": N,
                       "workers": [heartbeat, ...]}            first, once subscribed
    event: job        row                                      a job's state changed
    event: workers    [heartbeat, ...]                         the live workers changed
    event: error      text                                     NATS failed; the stream ends
    event: shutdown   ""                                       the backend is stopping
    : keep-alive                                               while nothing changes

A row is a job's state without its history (`last_seq` orders two rows of one job: a client
keeps the higher one, so a change seen both in the snapshot and as a frame is harmless).
`job_row` is the one definition of a row: it is made from the same `JobState` (the projector's
fold) that the per-job stream (services/backend/sse.py) sends whole, and the dashboard shows rows
as sent, never building one itself.
Changes are coalesced per job between sends (the projector flushes every 50 ms; a slow client
gets the latest state of each job, never a growing backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
import nats.errors
import nats.js.errors
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from msgspec import Struct
from nats.js.api import DeliverPolicy

from libs.events.fold import JobError, JobState
from libs.events.heartbeat import WorkerHeartbeat, decode_heartbeat, heartbeat_key, read_workers
from libs.events.job_query import headline_metric
from libs.events.projector import decode_state, load_projection
from libs.events.subjects import CHECKPOINT_KEY
from services.backend.runtime import Runtime

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from libs.events.bus import Bus

_encoder: Final = msgspec.json.Encoder()
_TRANSIENT: Final = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
_DELETED_OPS: Final = ("DEL", "PURGE")
COALESCE: Final = 0.1  # seconds between batches of frames
_unsubscribing: set[asyncio.Task[None]] = set()


class JobRow(Struct, frozen=True, kw_only=True):
    """One job as the jobs table shows it: its projected state without the epoch history."""

    job_id: str
    status: str
    strategy: str | None
    inline_strategy: bool
    pool: str | None
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    requested_by: str
    worker: str | None
    worker_kind: str | None
    host: str | None
    device: str | None
    phase: str | None
    fold: int | None
    folds: int | None
    epoch: int | None
    total_epochs: int | None
    percent: float | None
    eta_seconds: float | None
    best_val_accuracy: float | None
    test_accuracy: float | None
    error: JobError | None
    cancel_reason: str | None
    cancel_requested_by: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    last_seq: int
    # How the run is organised, what it re-runs, and its headline test metric (the jobs
    # table shows and filters by them, as GET /api/v1/jobs does).
    experiment: str | None = None
    tags: dict[str, str] = {}
    derived_from: str | None = None
    metric: str | None = None
    metric_value: float | None = None


class Snapshot(Struct, frozen=True, kw_only=True):
    jobs: list[JobRow]
    total: int
    workers: list[WorkerHeartbeat]


def job_row(state: JobState) -> JobRow:
    accuracies = [m.val_accuracy for m in state.history if m.val_accuracy is not None]
    headline = headline_metric(state.test_metrics)
    return JobRow(
        job_id=state.job_id, status=state.status, strategy=state.strategy,
        inline_strategy=state.inline_strategy, pool=state.pool, symbols=state.symbols,
        timeframes=state.timeframes, requested_by=state.requested_by, worker=state.worker,
        worker_kind=state.worker_kind, host=state.host, device=state.device, phase=state.phase,
        fold=state.fold, folds=state.folds,
        epoch=state.epoch, total_epochs=state.total_epochs, percent=state.percent,
        eta_seconds=state.eta_seconds,
        best_val_accuracy=max(accuracies) if accuracies else None,
        test_accuracy=state.test_metrics.get("accuracy"),
        error=state.error, cancel_reason=state.cancel_reason,
        cancel_requested_by=state.cancel_requested_by, created_at=state.created_at,
        started_at=state.started_at, finished_at=state.finished_at,
        updated_at=state.updated_at, last_seq=state.last_seq,
        experiment=state.experiment, tags=dict(state.tags), derived_from=state.derived_from,
        metric=headline[0] if headline else None,
        metric_value=headline[1] if headline else None,
    )


class LiveController(Controller):
    path = "/api/v1/stream"
    tags = ("live",)

    @get(
        "/",
        summary="Live feed of every job's state and the workers (SSE)",
        description="A `snapshot` frame, then `job` and `workers` frames as the projection "
                    "and the heartbeats change. `limit` caps the jobs in the snapshot.",
        media_type="text/event-stream",
    )
    async def stream(
        self, runtime: NamedDependency[Runtime],
        limit: Annotated[int, QueryParameter(ge=1, le=2000)] = 500,
    ) -> ServerSentEvent:
        bus = runtime.require_bus()
        return ServerSentEvent(_frames(bus, limit=limit, stopping=runtime.stopping,
                                       keepalive=runtime.settings.sse_keepalive))


def _deleted(msg: Msg) -> bool:
    headers = msg.headers or {}
    return headers.get("KV-Operation") in _DELETED_OPS or "Nats-Marker-Reason" in headers


class _Changes:
    """What the two KV watchers saw since the last batch (their callbacks run on the loop):
    the latest state of each changed job, and each worker's latest heartbeat (None: gone)."""

    def __init__(self, bus: Bus) -> None:
        self.jobs_prefix = f"$KV.{bus.names.jobs_bucket}."
        self.workers_prefix = f"$KV.{bus.names.workers_bucket}."
        self.jobs: dict[str, JobState] = {}
        self.beats: dict[str, WorkerHeartbeat | None] = {}
        self.wake = asyncio.Event()

    async def on_job(self, msg: Msg) -> None:
        key = msg.subject[len(self.jobs_prefix):]
        if key == CHECKPOINT_KEY or _deleted(msg):
            return
        try:
            self.jobs[key] = decode_state(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.wake.set()

    async def on_worker(self, msg: Msg) -> None:
        key = msg.subject[len(self.workers_prefix):]
        if _deleted(msg):
            self.beats[key] = None
        else:
            try:
                self.beats[key] = decode_heartbeat(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return
        self.wake.set()

    def frames(self, live: dict[str, WorkerHeartbeat], ttl: float) -> list[ServerSentEventMessage]:
        """One `job` frame per changed job, and one `workers` frame when any heartbeat changed
        (applied to `live`); the batch is then empty again."""
        self.wake.clear()
        out = [_frame("job", job_row(state)) for state in self.jobs.values()]
        self.jobs.clear()
        if self.beats:
            for key, beat in self.beats.items():
                if beat is None:
                    live.pop(key, None)
                else:
                    live[key] = beat
            self.beats.clear()
            _expire(live, ttl)
            out.append(_frame("workers", _sorted(live)))
        return out


async def _frames(
    bus: Bus, *, limit: int, stopping: asyncio.Event, keepalive: float
) -> AsyncIterator[ServerSentEventMessage]:
    changes = _Changes(bus)
    subs: list[Any] = []
    try:
        try:
            # Subscribe first, then read: a change between the two is in both (rows carry
            # last_seq), never in neither.
            for prefix, bucket, cb in (
                (changes.jobs_prefix, bus.names.jobs_bucket, changes.on_job),
                (changes.workers_prefix, bus.names.workers_bucket, changes.on_worker),
            ):
                subs.append(await bus.js.subscribe(
                    f"{prefix}>", stream=f"KV_{bucket}", cb=cb, ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW))
            projection = await load_projection(bus.js, bus.names.jobs_bucket)
            live = {heartbeat_key(b.worker_id): b for b in await read_workers(bus)}
        except _TRANSIENT as exc:
            yield ServerSentEventMessage(event="error", data=str(exc) or type(exc).__name__)
            return
        states = sorted(projection.states.values(),
                        key=lambda s: (s.created_at, s.command_seq), reverse=True)
        yield _frame("snapshot", Snapshot(jobs=[job_row(s) for s in states[:limit]],
                                          total=len(states), workers=_sorted(live)))
        quiet = 0.0
        tick = min(1.0, keepalive)
        while not stopping.is_set():
            try:
                await asyncio.wait_for(changes.wake.wait(), timeout=tick)
            except TimeoutError:
                quiet += tick
                if _expire(live, bus.config.workers_ttl):
                    yield _frame("workers", _sorted(live))
                    quiet = 0.0
                elif quiet >= keepalive:
                    quiet = 0.0
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            quiet = 0.0
            for frame in changes.frames(live, bus.config.workers_ttl):
                yield frame
            await asyncio.sleep(COALESCE)
        yield ServerSentEventMessage(event="shutdown", data="")
    finally:
        # Not awaited: this generator may be closing because the client left (cancelled).
        for sub in subs:
            task = asyncio.get_running_loop().create_task(_unsubscribe(sub))
            _unsubscribing.add(task)
            task.add_done_callback(_unsubscribing.discard)


async def _unsubscribe(sub: Any) -> None:
    with contextlib.suppress(*_TRANSIENT):
        await sub.unsubscribe()


def _expire(live: dict[str, WorkerHeartbeat], ttl: float) -> bool:
    """Drop heartbeats older than the bucket TTL (their TTL marker may not have come yet)."""
    now = time.time()
    stale = [key for key, beat in live.items() if now - beat.updated_at > ttl]
    for key in stale:
        del live[key]
    return bool(stale)


def _sorted(live: dict[str, WorkerHeartbeat]) -> list[WorkerHeartbeat]:
    return sorted(live.values(), key=lambda b: b.worker_id)


def _frame(event: str, body: object) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=_encoder.encode(body).decode())
