"""The projector: folds the log into job state in KV `<prefix>_jobs`, one key per job.

Pure part: `fold` and `JobState` (libs/events/fold.py, re-exported here). The runner:

- reads `<prefix>.>` with an ordered push consumer (about 4x faster than a durable pull
  consumer in nats-py) starting right after the last applied stream sequence; that sequence is
  the checkpoint, kept in the same bucket under the reserved key `_checkpoint`;
- folds each message in the consumer callback (no I/O there) and marks the job dirty;
- a flush task writes dirty job states first and the checkpoint last. After a crash the
  runner reloads every state from KV and resumes at checkpoint + 1; messages it sees again
  are at or below their job's `last_seq`, which the fold ignores, so the KV ends exactly as a
  clean replay would leave it.

A position it cannot trust is never skipped to. The bucket is writable by more than the
projector, and a `_checkpoint` put at `seq: 999999999` (or a job state at such a `last_seq`)
would make it ignore every later message while health says lag 0. So at start, and after each
reconnect, `position_problems` checks the stored position against the stream (decodes, names
this stream, not beyond its last sequence; no job beyond it either); anything wrong is logged as
a warning naming it and the projection is rebuilt from the log (`rebuilt_at`, `rebuild_reason`),
deleting the KV entries the log does not back.

Rejections. The fold derives state from the log only: a malformed train command is projected
as a `rejected` job by the fold itself. So that a sender watching `<prefix>.evt.<job>.>` also
hears about it, the runner publishes a `rejected` event for each new rejected job, fenced on
"no event yet" (expected last subject sequence 0): a worker that rejects the same command, or a
restarted projector, cannot publish it twice, and a job someone already claimed is never
rejected. The worker runtime uses `libs.events.commands.validate_train_command` and
`libs.events.bus.publish_rejection` for the same verdict on the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from libs.events.bus import Bus, publish_rejection
from libs.events.errors import BusClosed, PublishError, ReplayError, SetupMissing
from libs.events.fold import TERMINAL, EpochMetrics, JobError, JobState, fold, fold_all
from libs.events.log import (
    REGISTRY_CHANGE,
    LogMessage,
    MalformedCommand,
    Unreadable,
    reply_fields,
    stream_last_seq,
    subscribe_log,
)
from libs.events.schema import decode_stored
from libs.events.subjects import CHECKPOINT_KEY

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = [
    "TERMINAL",
    "Checkpoint",
    "EpochMetrics",
    "JobError",
    "JobState",
    "Projection",
    "Projector",
    "decode_projection",
    "decode_state",
    "fold",
    "fold_all",
    "load_projection",
    "position_problems",
    "read_bucket",
]

log = logging.getLogger(__name__)

PROJECTOR_WORKER_ID: Final = "projector"
_KV_OPERATION: Final = "KV-Operation"
_MARKER_REASON: Final = "Nats-Marker-Reason"
_state_decoder: Final = msgspec.json.Decoder(JobState)
_encoder: Final = msgspec.json.Encoder()


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The last stream sequence whose effects are all in KV."""

    seq: int
    stream: str
    time: float


_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)

# Errors during a flush that a later flush can recover from (the dirty set is kept).
_FLUSH_RETRYABLE: Final = (
    nats.errors.Error,
    nats.js.errors.Error,
    PublishError,
    TimeoutError,
)


def decode_state(raw: bytes) -> JobState:
    """A job state as stored in KV. Raises msgspec errors when it is not one."""
    return decode_stored(_state_decoder, raw)


@dataclass(frozen=True, slots=True)
class Projection:
    """What KV holds: job states, entries that are not states, and the checkpoint."""

    states: dict[str, JobState]
    unreadable: dict[str, str]
    checkpoint: int
    checkpoint_stream: str | None = None  # the stream the checkpoint says it counts


async def load_projection(js: JetStreamContext, bucket: str) -> Projection:
    """Every job state and the checkpoint from the jobs bucket."""
    return decode_projection(await read_bucket(js, bucket))


def decode_projection(values: Mapping[str, bytes]) -> Projection:
    """The projection held by a jobs bucket's values (as `read_bucket` returns them)."""
    states: dict[str, JobState] = {}
    unreadable: dict[str, str] = {}
    checkpoint, checkpoint_stream = 0, None
    for key, value in values.items():
        try:
            if key == CHECKPOINT_KEY:
                stored = decode_stored(_checkpoint_decoder, value)
                checkpoint, checkpoint_stream = stored.seq, stored.stream
            else:
                states[key] = decode_state(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            unreadable[key] = str(exc)
    return Projection(states=states, unreadable=unreadable, checkpoint=checkpoint,
                      checkpoint_stream=checkpoint_stream)


_MAX_NAMED_JOBS: Final = 5


def position_problems(projection: Projection, *, stream: str, last_seq: int) -> list[str]:
    """What makes a stored projection's position untrustworthy against the stream now (empty:
    consistent). A position beyond the stream's last sequence would skip every message up to
    it, so it is a problem, never a shortcut."""
    problems: list[str] = []
    if CHECKPOINT_KEY in projection.unreadable:
        problems.append(f"{CHECKPOINT_KEY} does not decode "
                        f"({projection.unreadable[CHECKPOINT_KEY]})")
    if projection.checkpoint < 0 or projection.checkpoint > last_seq:
        problems.append(f"{CHECKPOINT_KEY} is at sequence {projection.checkpoint}, beyond the "
                        f"stream's last sequence {last_seq}")
    if projection.checkpoint_stream not in (None, stream):
        problems.append(f"{CHECKPOINT_KEY} counts stream {projection.checkpoint_stream!r}, "
                        f"not {stream!r}")
    ahead = sorted(job_id for job_id, state in projection.states.items()
                   if state.last_seq > last_seq)
    if ahead:
        named = ", ".join(ahead[:_MAX_NAMED_JOBS]) + (" ..." if len(ahead) > _MAX_NAMED_JOBS
                                                      else "")
        problems.append(f"{len(ahead)} job state(s) beyond the stream's last sequence "
                        f"{last_seq}: {named}")
    return problems


def trusted_states(projection: Projection, *, first_seq: int) -> dict[str, JobState]:
    """The stored states a rebuild keeps: only those of jobs whose train command aged out of
    the stream (the log cannot rebuild them); every other job is folded again from the log."""
    return {job_id: state for job_id, state in projection.states.items()
            if state.command_seq < first_seq}


async def read_bucket(
    js: JetStreamContext, bucket: str, *, stall_timeout: float = 10.0
) -> dict[str, bytes]:
    """The current value of every key in a KV bucket (deleted keys left out).

    Not nats-py's `watchall()`: its "initial values done" marker comes from consumer info and
    can arrive before any value when the server has already pushed them all (num_pending 0,
    none parsed yet), so an early reader sees an empty bucket. Here the end is the message
    whose own pending count is 0."""
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return {}
    values: dict[str, bytes] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_entry(msg: Msg) -> None:
        key = msg.subject[len(prefix):]
        headers = msg.headers or {}
        if headers.get(_KV_OPERATION) in ("DEL", "PURGE") or _MARKER_REASON in headers:
            values.pop(key, None)
        else:
            values[key] = msg.data
        if reply_fields(msg.reply)[2] == 0 and not done.done():
            done.set_result(None)

    sub = await js.subscribe(f"{prefix}>", stream=stream, cb=on_entry, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    try:
        await asyncio.wait_for(done, timeout=stall_timeout)
    except TimeoutError:
        raise ReplayError(f"reading KV {bucket} stalled after {len(values)} keys") from None
    finally:
        await sub.unsubscribe()
    return values


async def put_many(
    js: JetStreamContext, bucket: str, values: dict[str, bytes], *, timeout: float = 10.0
) -> None:
    """KV puts in one pipelined burst (a KV put is a publish to `$KV.<bucket>.<key>`);
    awaiting each put in turn would cap the projector at ~4k jobs/s. publish_async futures
    never time out on their own (an ack lost in a server crash would hang for ever), hence
    `timeout`; the caller retries, and writing the same value again is harmless."""
    if not values:
        return
    futures = [await js.publish_async(f"$KV.{bucket}.{key}", value, wait_stall=timeout)
               for key, value in values.items()]
    await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout)


class Projector:
    """Keeps KV `<prefix>_jobs` equal to the fold of the log.

        async with Projector(bus) as projector:   # bus from connect() + ensure_jetstream()
            await projector.wait_for(seq)          # until the KV reflects stream seq `seq`
    """

    def __init__(
        self,
        bus: Bus,
        *,
        flush_interval: float = 0.05,
        publish_rejections: bool = True,
        idle_heartbeat: float = 1.0,
    ) -> None:
        self._bus = bus
        self._flush_interval = flush_interval
        self._publish_rejections = publish_rejections
        self._idle_heartbeat = idle_heartbeat
        self._states: dict[str, JobState] = {}
        self._dirty: dict[str, JobState] = {}
        self._rejections: dict[str, JobState] = {}
        self._applied = 0
        self._flushed = 0
        self._wake = asyncio.Event()
        self._flushed_changed = asyncio.Condition()
        self._sub: JetStreamContext.PushSubscription | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._stopping = False
        # A rebuild: KV keys the log may not back (deleted once the replay reaches
        # `_rebuild_until` and they are still not projected), when and why it happened.
        self._orphans: set[str] = set()
        self._rebuild_until = 0
        self._rebuilt_at: float | None = None
        self._rebuild_reason: str | None = None
        self._rewrite_checkpoint = False  # a rebuild replaces the stored one even if idle
        self._hooked = False

    # --- views ---

    @property
    def applied_seq(self) -> int:
        """Last stream sequence folded in memory."""
        return self._applied

    @property
    def flushed_seq(self) -> int:
        """Last stream sequence whose effects are in KV (the stored checkpoint)."""
        return self._flushed

    def state(self, job_id: str) -> JobState | None:
        return self._states.get(job_id)

    @property
    def rebuilt_at(self) -> float | None:
        """When (epoch seconds) this projector last rebuilt the projection from the log
        because the stored position could not be trusted; None if it never had to."""
        return self._rebuilt_at

    @property
    def rebuild_reason(self) -> str | None:
        return self._rebuild_reason

    # --- lifecycle ---

    async def start(self) -> None:
        """Load KV, subscribe at checkpoint + 1, start flushing."""
        if self._bus.jobs is None:
            raise SetupMissing("bus.jobs is not set: call ensure_jetstream/open_jetstream first")
        bucket = self._bus.names.jobs_bucket
        projection = await load_projection(self._bus.js, bucket)
        first_seq, last_seq = await stream_last_seq(self._bus.js, self._bus.names)
        problems = position_problems(projection, stream=self._bus.names.stream,
                                     last_seq=last_seq)
        if problems:
            self._begin_rebuild(projection, problems, first_seq=first_seq, last_seq=last_seq)
        else:
            for key, why in projection.unreadable.items():
                log.warning("KV %s/%s is not a job state (%s); it will be rewritten when its "
                            "job changes", bucket, key, why)
            self._states = projection.states
            self._applied = self._flushed = projection.checkpoint
        if not self._hooked:
            self._bus.on_reconnected(self.check_resumed)
            self._hooked = True
        self._sub = await subscribe_log(
            self._bus.js,
            self._bus.names,
            self._on_message,
            start_seq=self._applied + 1,
            idle_heartbeat=self._idle_heartbeat,
        )
        self._flusher = asyncio.create_task(self._flush_loop(), name="projector-flush")
        log.info("projector started at sequence %d with %d jobs", self._applied + 1,
                 len(self._states))

    def _begin_rebuild(self, projection: Projection, problems: list[str], *, first_seq: int,
                       last_seq: int) -> None:
        reason = "; ".join(problems)
        log.warning("projector: the stored position of KV %s cannot be trusted (%s); "
                    "rebuilding the projection from the log (sequences %d-%d) instead of "
                    "resuming", self._bus.names.jobs_bucket, reason, first_seq, last_seq)
        self._states = trusted_states(projection, first_seq=first_seq)
        self._orphans = (set(projection.states) | set(projection.unreadable)) - {CHECKPOINT_KEY}
        self._rebuild_until = last_seq
        self._applied = self._flushed = 0
        self._dirty.clear()
        self._rejections.clear()
        self._rebuilt_at = time.time()
        self._rebuild_reason = reason
        self._rewrite_checkpoint = True
        self._wake.set()

    async def check_resumed(self) -> None:
        """After a reconnect: a stream now behind what this projector applied (the server lost
        its store, or the stream was recreated) makes the position untrustworthy: restart the
        subscription, which rebuilds from the log."""
        if self._stopping or self._sub is None or self._failure is not None:
            return
        _, last_seq = await stream_last_seq(self._bus.js, self._bus.names)
        if self._applied <= last_seq:
            return
        log.warning("projector: applied sequence %d is beyond the stream's last sequence %d "
                    "after a reconnect; restarting to rebuild", self._applied, last_seq)
        await self._halt()
        self._stopping = False
        self._dirty.clear()
        self._rejections.clear()
        # The stored checkpoint is this projector's own (>= applied > last): start() rebuilds.
        await self.start()

    async def _halt(self) -> None:
        self._stopping = True
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    async def stop(self) -> None:
        """Unsubscribe and write what is pending (best effort if NATS is down)."""
        await self._halt()
        if not self._bus.nc.is_closed:
            try:
                await self._flush()
            except _FLUSH_RETRYABLE as exc:
                log.warning("projector stopped with unflushed changes (%s); the next start "
                            "replays them", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (process entry points). Raises `ReplayError` if the fold
        hit an internal error: the process should exit rather than project a wrong state."""
        await self.start()
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._failed.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await self.stop()
        if self._failure is not None:
            raise ReplayError(f"projector stopped at sequence {self._applied + 1}: "
                              f"{self._failure!r}")

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_for(self, seq: int, *, timeout: float = 10.0) -> None:
        """Wait until the KV reflects every message up to stream sequence `seq`."""

        def reached() -> bool:
            return self._flushed >= seq or self._failure is not None

        async with self._flushed_changed:
            try:
                await asyncio.wait_for(self._flushed_changed.wait_for(reached), timeout)
            except TimeoutError:
                raise ReplayError(
                    f"projector did not reach sequence {seq} within {timeout:g}s "
                    f"(applied {self._applied}, flushed {self._flushed})"
                ) from None
        if self._failure is not None:
            raise ReplayError(f"projector stopped: {self._failure!r}")

    # --- the fold, in the consumer callback ---

    def _on_message(self, message: LogMessage) -> None:
        if message.seq <= self._applied or self._failure is not None:
            return  # redelivered after a consumer reset
        try:
            self._apply(message)
        except Exception as exc:  # process edge: nats-py would swallow it and skip the message
            log.exception("projector stopped at sequence %d", message.seq)
            self._failure = exc
            self._failed.set()
            self._wake.set()
            return
        self._applied = message.seq
        self._wake.set()

    def _apply(self, message: LogMessage) -> None:
        job_id = message.job_id
        if job_id is None:
            reason = message.body.reason if isinstance(message.body, Unreadable) else "no job id"
            if reason == REGISTRY_CHANGE:
                return  # the registry keeps its own KV; nothing of a job to project
            log.warning("ignoring sequence %d on %s: %s", message.seq, message.subject, reason)
            return
        before = self._states.get(job_id)
        after = fold(before, message)
        if after is before or after is None:
            if isinstance(message.body, MalformedCommand):
                log.warning("ignoring sequence %d: malformed start of known job %s: %s",
                            message.seq, job_id, message.body.reason)
            return
        self._states[job_id] = after
        self._dirty[job_id] = after
        if (
            self._publish_rejections
            and before is None
            and isinstance(message.body, MalformedCommand)
        ):
            self._rejections[job_id] = after

    # --- writing KV ---

    @property
    def _kv(self) -> KeyValue:
        if self._bus.jobs is None:
            raise SetupMissing("bus.jobs is not set: call ensure_jetstream/open_jetstream first")
        return self._bus.jobs

    async def _flush_loop(self) -> None:
        backoff = self._flush_interval
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._failure is not None:
                async with self._flushed_changed:
                    self._flushed_changed.notify_all()
                return
            try:
                await self._flush()
                backoff = self._flush_interval
            except BusClosed:
                return
            except _FLUSH_RETRYABLE as exc:
                if self._bus.nc.is_closed:
                    log.warning("projector: NATS connection closed; flushing stopped")
                    return
                log.warning("projector flush failed (%s); retrying", exc)
                self._wake.set()
                backoff = min(backoff * 2, 2.0)
            # Coalesce: let a burst of messages accumulate into one flush.
            await asyncio.sleep(backoff)

    async def _flush(self) -> None:
        seq = self._applied
        if (not self._dirty and not self._rejections and seq == self._flushed
                and not self._rewrite_checkpoint):
            return
        dirty, self._dirty = self._dirty, {}
        try:
            await self._publish_pending_rejections()
            await put_many(
                self._bus.js, self._bus.names.jobs_bucket,
                {job_id: _encoder.encode(state) for job_id, state in dirty.items()},
                timeout=2 * self._bus.config.publish_timeout,
            )
            await self._delete_orphans(seq)
            checkpoint = Checkpoint(seq=seq, stream=self._bus.names.stream, time=time.time())
            await self._kv.put(CHECKPOINT_KEY, _encoder.encode(checkpoint))
        except BaseException:
            for job_id, state in dirty.items():
                self._dirty.setdefault(job_id, state)  # newer changes win
            raise
        self._rewrite_checkpoint = False
        async with self._flushed_changed:
            self._flushed = seq
            self._flushed_changed.notify_all()

    async def _delete_orphans(self, seq: int) -> None:
        """Once a rebuild has replayed the whole log as it was, the KV keys it did not
        project are not backed by the log (forged or garbage): delete them."""
        if not self._orphans or seq < self._rebuild_until:
            return
        for key in sorted(self._orphans - set(self._states)):
            log.warning("projector: deleting KV %s/%s: no job of that id in the log",
                        self._bus.names.jobs_bucket, key)
            await self._kv.delete(key)
        self._orphans = set()

    async def _publish_pending_rejections(self) -> None:
        for job_id, state in list(self._rejections.items()):
            error = state.error
            assert error is not None
            receipt = await publish_rejection(
                self._bus,
                job_id,
                reason=error.reason,
                field=error.field,
                category=error.category,
                command_seq=state.command_seq,
                worker_id=PROJECTOR_WORKER_ID,
                retry_for=2.0,
            )
            if receipt is None:
                log.info("rejection of %s already published (or job claimed)", job_id)
            del self._rejections[job_id]
