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
    subscribe_log,
)
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
    "decode_state",
    "fold",
    "fold_all",
    "load_projection",
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
    return _state_decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class Projection:
    """What KV holds: job states, entries that are not states, and the checkpoint."""

    states: dict[str, JobState]
    unreadable: dict[str, str]
    checkpoint: int


async def load_projection(js: JetStreamContext, bucket: str) -> Projection:
    """Every job state and the checkpoint from the jobs bucket."""
    states: dict[str, JobState] = {}
    unreadable: dict[str, str] = {}
    checkpoint = 0
    for key, value in (await read_bucket(js, bucket)).items():
        try:
            if key == CHECKPOINT_KEY:
                checkpoint = _checkpoint_decoder.decode(value).seq
            else:
                states[key] = decode_state(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            unreadable[key] = str(exc)
    return Projection(states=states, unreadable=unreadable, checkpoint=checkpoint)


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

    # --- lifecycle ---

    async def start(self) -> None:
        """Load KV, subscribe at checkpoint + 1, start flushing."""
        if self._bus.jobs is None:
            raise SetupMissing("bus.jobs is not set: call ensure_jetstream/open_jetstream first")
        bucket = self._bus.names.jobs_bucket
        projection = await load_projection(self._bus.js, bucket)
        for key, why in projection.unreadable.items():
            log.warning("KV %s/%s is not a job state (%s); it will be rewritten when its job "
                        "changes", bucket, key, why)
        self._states = projection.states
        self._applied = self._flushed = projection.checkpoint
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

    async def stop(self) -> None:
        """Unsubscribe and write what is pending (best effort if NATS is down)."""
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
        if not self._dirty and not self._rejections and seq == self._flushed:
            return
        dirty, self._dirty = self._dirty, {}
        try:
            await self._publish_pending_rejections()
            await put_many(
                self._bus.js, self._bus.names.jobs_bucket,
                {job_id: _encoder.encode(state) for job_id, state in dirty.items()},
                timeout=2 * self._bus.config.publish_timeout,
            )
            checkpoint = Checkpoint(seq=seq, stream=self._bus.names.stream, time=time.time())
            await self._kv.put(CHECKPOINT_KEY, _encoder.encode(checkpoint))
        except BaseException:
            for job_id, state in dirty.items():
                self._dirty.setdefault(job_id, state)  # newer changes win
            raise
        async with self._flushed_changed:
            self._flushed = seq
            self._flushed_changed.notify_all()

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
