"""One delivery of one train command, from the pull to ack / nak / term.

The steps, in order (docs/architecture.md, "The log": fencing, leases, cancel):

1. decode and validate the command; a bad one is `rejected`, terminated;
2. a job already finished in the log (a redelivery after completion, a second start of a known
   id) is acked without running; "finished" is the fold's rule (fold.py `is_finished`): only
   the claimant's terminal event counts, so a forged `failed` never makes a worker drop a job;
3. subscribe to `<prefix>.cmd.cancel.<job>` *then* look for a cancel in the log after the train
   command (one sent before it was for no job yet, and cancels nothing): a job cancelled while
   queued ends without running;
4. the runner's cheap check (strategy parses, data exists): a failure is `rejected` (or, for a
   redelivery whose inputs changed since, claimed and `failed(bad_input)`), terminated;
5. claim: `accepted`, fenced on the job's last event sequence; a redelivery (attempt > 1)
   then announces `resumed` and continues from the last checkpoint the log names;
6. run the runner in a worker thread; its reports reach the log through the relay and one
   publisher task; the lease is kept by the runtime's tick (`in_progress`);
7. finish: `completed` (model put to the object store first, fenced by a `publish` phase),
   `cancelled`, `failed(category)`, or for a drain a checkpoint, `released` and a `nak` so
   that another worker resumes. Only infrastructure failures are retried, and never past the
   last allowed delivery.

Attempts are deliveries (`num_delivered`, what fencing orders by), but a drain spends none: the
fold counts the claimants' `released` events (`JobState.handed_back`), and the limits are on
the *spent* deliveries, `attempt - handed_back` (`spent`): the last allowed one (`max_deliver`)
and the give-up after it. The consumer delivers `max_handbacks` times more (setup.py); once
those are used up, a drain is a plain `nak` again and spends its delivery.

Whenever the writer gives up a fenced publish (`FencedOut`: after reading what was stored, a
later claim owns the job or it is finished; relay.py `JobWriter`) this attempt stops at once and
publishes, acks and stores nothing more. Foreign messages on the job's subjects do not do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import nats.errors
import nats.js.errors

from libs.events.bus import Bus, publish_event, publish_rejection
from libs.events.commands import read_cancel_command, validate_train_command
from libs.events.errors import (
    CommandRejected,
    FencedOut,
    ObjectNotFound,
    ObjectStoreError,
    PublishError,
)
from libs.events.fold import (
    JobState,
    claimable_by,
    command_state,
    counts,
    fold,
    is_finished,
)
from libs.events.log import LogMessage
from libs.events.models import delete_quietly, get_bytes, model_object_name, put_bytes
from libs.events.schema import (
    AcceptedEvent,
    AnyEvent,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    EventHeader,
    FailedEvent,
    ModelRef,
    PhaseEvent,
    PoolName,
    RejectedEvent,
    ReleasedEvent,
    ResumedEvent,
    TrainCommand,
    WorkerKind,
)
from libs.events.subjects import derive_job_id
from libs.events.worker.failure_detail import redact, traceback_lines
from libs.events.worker.job_log import JobLogSink
from libs.events.worker.port import (
    FailureCategoryName,
    JobCancelled,
    JobFailed,
    JobPlan,
    JobResult,
    JobRunner,
    RunnerInfo,
)
from libs.events.worker.relay import (
    CLOSE,
    CheckpointBlob,
    EventRelay,
    JobStop,
    JobWriter,
    RelayItem,
    pump,
    stored_after,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

# The event kinds that decide who owns a job and whether it is finished (progress, phases and
# epochs never do), plus the checkpoints a redelivery resumes from: what `_job_view` reads.
VIEW_KINDS: Final = ("accepted", "rejected", "checkpoint", "completed", "failed", "cancelled",
              "operator_failed", "released")
MSG_ID: Final = "Nats-Msg-Id"
DRAIN_REASON: Final = "drain"
_INFRA_ERRORS: Final = (nats.errors.Error, PublishError, ObjectStoreError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSettings:
    """What an attempt needs from the worker (a slice of WorkerSettings)."""

    worker_id: str
    kind: WorkerKind
    host: str
    pool: PoolName
    max_deliver: int  # attempts that may run (spent deliveries)
    progress_interval: float
    max_handbacks: int = 0  # drains that spend no attempt (the consumer has room for them)
    claim_retries: int = 3
    infra_retry_delay: float = 1.0


class JobAttempt:
    """One delivery of a train command. `run()` never raises (except cancellation)."""

    def __init__(
        self,
        bus: Bus,
        msg: Msg,
        runner: JobRunner,
        info: RunnerInfo,
        settings: AttemptSettings,
        *,
        on_event: Callable[[AnyEvent], None] = lambda _event: None,
    ) -> None:
        self.bus = bus
        self.msg = msg
        self.runner = runner
        self.info = info
        self.settings = settings
        self.on_event = on_event
        meta = msg.metadata
        self.seq = int(meta.sequence.stream)
        self.attempt = int(meta.num_delivered)
        self.job_id: str | None = None
        self.command: TrainCommand | None = None
        self.stop = JobStop()
        self.last_lease = time.monotonic()
        self.settled = False  # acked, nak'ed or terminated (or deliberately left alone)
        self._cancel_sub: Subscription | None = None
        self._writer: JobWriter | None = None
        self._checkpoints: list[str] = []  # this attempt's checkpoint objects, newest last
        self._resumed_from: str | None = None
        self._checkpoint: CheckpointEvent | None = None  # the claimants' last, per the fold
        self._view: list[LogMessage] = []  # what `_job_view` folded, in stream order
        self._handed_back = 0  # the job's hand-backs before this delivery, per the fold
        self._log_sink: JobLogSink | None = None  # the job's log lines (job_log.py)

    @property
    def label(self) -> str:
        return f"{self.job_id or f'seq {self.seq}'} (attempt {self.attempt})"

    @property
    def spent(self) -> int:
        """The attempts spent with this delivery: deliveries minus the hand-backs before it."""
        return self.attempt - self._handed_back

    @property
    def last_delivery(self) -> bool:
        return self.spent >= self.settings.max_deliver

    # --- runtime hooks -------------------------------------------------------------------------

    def request_stop(self, cause: str, reason: str | None = None) -> None:
        """Trip the cancel signal (drain at shutdown, or a cancel command)."""
        if self.stop.trip(cause, reason):  # type: ignore[arg-type]
            log.info("job %s: stopping (%s%s)", self.label, cause, f": {reason}" if reason else "")

    async def keep_lease(self) -> None:
        """`in_progress()` on the delivery (called by the runtime's tick)."""
        if self.settled:
            return
        self.last_lease = time.monotonic()
        try:
            await self.msg.in_progress()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("job %s: lease not renewed (%s)", self.label, exc)

    async def recheck_cancel(self) -> None:
        """After a reconnect: a cancel sent while we were away was lost on the core
        subscription, but it is in the log."""
        if self.job_id is None or self.stop.is_cancelled():
            return
        reason = await self._logged_cancel()
        if reason is not None:
            self.request_stop("cancel", reason)

    # --- the attempt ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except FencedOut:
            self._fenced()
        except asyncio.CancelledError:
            self.request_stop(DRAIN_REASON, "worker forced to stop")
            raise
        except _INFRA_ERRORS as exc:  # NATS trouble around the job: another delivery retries
            log.warning("job %s: %s: %s", self.label, type(exc).__name__, exc)
            await self._fail("infrastructure", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the job edge: a bug here must not stop the worker
            log.exception("job %s: unexpected error in the worker runtime", self.label)
            await self._fail("code", f"worker error: {type(exc).__name__}: {exc}")
        finally:
            await self._unsubscribe()
            if self._log_sink is not None:
                await self._log_sink.close()

    async def _run(self) -> None:
        command = await self._decode()
        if command is None:
            return
        state = await self._job_view(command)
        if is_finished(state) or (self.attempt == 1 and state.attempt > 0):
            why = "already finished" if is_finished(state) else "a second start of a known job"
            log.info("job %s: %s (%s, attempt %d); acked without running", self.label, why,
                     state.status, state.attempt)
            await self._settle("ack")
            return
        if self.spent > self.settings.max_deliver:
            # The give-up delivery: every allowed attempt started and none reported an end.
            await self._fail("infrastructure", f"no result after {self.settings.max_deliver} "
                             "attempts: the last one stopped without reporting (worker died?)")
            return
        await self._watch_cancel()
        reason = await self._logged_cancel()
        if reason is not None or self.stop.cause == "cancel":
            await self._cancelled_before_start(command, state, reason or self.stop.reason)
            return
        # From here on this task's (and its threads') log records are the job's lines.
        assert self.job_id is not None
        self._log_sink = JobLogSink(self.bus, job_id=self.job_id, attempt=self.attempt,
                                    worker_id=self.settings.worker_id)
        self._log_sink.attach()
        plan = await self._check(command)
        if isinstance(plan, CommandRejected):
            await self._refuse(command, state, plan)
            return
        writer = await self._claim(command, plan)
        if writer is None:
            return
        resume = await self._resume_point(writer) if self.attempt > 1 else None
        await self._execute(command, writer, resume)

    # --- 1. decode ------------------------------------------------------------------------------

    async def _decode(self) -> TrainCommand | None:
        msg_id = (self.msg.headers or {}).get(MSG_ID)
        try:
            command = validate_train_command(self.msg.data, self.msg.subject, names=self.bus.names)
        except CommandRejected as rejected:
            self.job_id = derive_job_id(rejected.job_id, msg_id, self.seq)
            await self._reject(rejected)
            return None
        self.job_id = derive_job_id(command.job_id, msg_id, self.seq)
        self.command = command
        return command

    async def _reject(self, rejected: CommandRejected) -> None:
        assert self.job_id is not None
        log.warning("job %s: rejected: %s", self.label, rejected.reason)
        receipt = await publish_rejection(
            self.bus, self.job_id, reason=rejected.reason[:4000], field=rejected.field,
            category=rejected.category, command_seq=self.seq, worker_id=self.settings.worker_id,
        )
        stored = receipt is not None
        if not stored and self.command is not None:
            stored = await self._reject_past_foreign(rejected) is not None
        if not stored:
            log.info("job %s: rejection already in the log (or the job was claimed)", self.label)
        await self._settle("term")

    async def _reject_past_foreign(self, rejected: CommandRejected) -> int | None:
        """`publish_rejection` is fenced on "the job has no event yet", so garbage stored on
        the job's subjects first would leave a valid-looking command queued for ever. Write
        the rejection through a writer that reads past foreign messages instead; it still
        refuses once anyone claimed, rejected or ended the job (None then)."""
        assert self.job_id is not None and self.command is not None
        last_seq = await self._last_job_seq()
        state = await self._job_view(self.command, last_seq)
        event = RejectedEvent(
            job_id=self.job_id, attempt=0, worker_id=self.settings.worker_id, time=time.time(),
            reason=rejected.reason[:4000], field=rejected.field,
            category=rejected.category,  # type: ignore[arg-type]
            command_seq=self.seq,
        )
        if not counts(state, event):
            return None
        writer = JobWriter(self.bus, job_id=self.job_id, attempt=0, last_seq=last_seq,
                           state=state)
        try:
            return await writer.publish(event)
        except FencedOut:
            return None

    # --- 2. the log's view of the job -----------------------------------------------------------

    async def _last_job_seq(self) -> int:
        """The sequence of the job's last event (anyone's), 0 when it has none."""
        assert self.job_id is not None
        try:
            raw = await self.bus.js.get_last_msg(
                self.bus.names.stream, self.bus.names.job_events(self.job_id), direct=True
            )
        except nats.js.errors.NotFoundError:
            return 0
        return int(raw.seq or 0)

    async def _job_view(self, command: TrainCommand, last_seq: int | None = None) -> JobState:
        """The job as the fold sees it: this command, then the job's claims, checkpoints and
        ends in stream order (everything else cannot change who owns it or whether it is
        finished, and is not read). Remembers the last checkpoint a claimant announced.
        `last_seq`: the job's last event sequence when the caller just read it."""
        assert self.job_id is not None
        if last_seq is None:
            last_seq = await self._last_job_seq()
        # A new job (the usual delivery) has nothing on its subjects: no consumer to read them
        # (the writer's fence on sequence 0 refuses a claim if anything is stored meanwhile).
        per_kind = [] if last_seq == 0 else await asyncio.gather(*(
            _collect(stored_after(self.bus, self.bus.names.event_subject(self.job_id, kind), 0))
            for kind in VIEW_KINDS))
        state = command_state(self.job_id, self.seq, command)
        self._checkpoint = None
        self._view = sorted((m for ms in per_kind for m in ms), key=lambda m: m.seq)
        for message in self._view:
            new = fold(state, message)
            assert new is not None  # a known job never folds back to unknown
            if new is not state and isinstance(message.body, CheckpointEvent):
                self._checkpoint = message.body  # a forged one changes nothing: not taken
            state = new
        self._handed_back = state.handed_back
        return state

    async def _logged_cancel(self) -> str | None:
        """The reason of a cancel command for this job stored after its train command, None
        when there is none (an empty reason reads as "cancelled"). A cancel stored before the
        command was for a job that did not exist yet (ids are predictable): it cancels nothing,
        as in the fold."""
        assert self.job_id is not None
        try:
            raw = await self.bus.js.get_last_msg(
                self.bus.names.stream, self.bus.names.cancel_subject(self.job_id), direct=True
            )
        except nats.js.errors.NotFoundError:
            return None
        if int(raw.seq or 0) <= self.seq:
            return None  # the last cancel precedes the command, so every one does
        return read_cancel_command(raw.data or b"").reason or "cancelled"

    # --- 3. cancel ------------------------------------------------------------------------------

    async def _watch_cancel(self) -> None:
        assert self.job_id is not None

        async def on_cancel(msg: Msg) -> None:
            self.request_stop("cancel", read_cancel_command(msg.data).reason or "cancelled")

        self._cancel_sub = await self.bus.nc.subscribe(
            self.bus.names.cancel_subject(self.job_id), cb=on_cancel
        )

    async def _unsubscribe(self) -> None:
        if self._cancel_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._cancel_sub.unsubscribe()
            self._cancel_sub = None

    async def _cancelled_before_start(
        self, command: TrainCommand, state: JobState, reason: str | None
    ) -> None:
        if state.attempt == 0 or await self._cancelled_while_handed_back(command, state):
            # Never claimed, or handed back: the fold cancelled it at the cancel command (which
            # follows the train command). The `cancelled` event only records that a worker saw
            # it (it changes nothing, fold.py), so a foreign message that fences it out costs
            # nothing.
            event = CancelledEvent(**self._base(), reason=reason)
            with contextlib.suppress(FencedOut):
                await publish_event(self.bus, event, n=0,
                                    expected_last_subject_seq=await self._last_job_seq())
                self.on_event(event)
            log.info("job %s: cancelled while queued; acked without running", self.label)
            await self._settle("ack")
            return
        # A previous attempt ran it: claim it to end it (only the claimant writes a job).
        writer = await self._claim(command)
        if writer is None:
            return
        await self._publish(writer, CancelledEvent(**self._base(), reason=reason))
        log.info("job %s: cancelled before it started", self.label)
        await self._settle("ack")
        await self._cleanup_checkpoints()

    async def _cancelled_while_handed_back(self, command: TrainCommand, state: JobState) -> bool:
        """Whether the fold cancelled the job at a cancel command while it was handed back
        (queued again, nobody holding it), so no claim may end it: the view with the cancels
        after the train command folded in, by the fold's own rule. A cancel that came while
        it ran left it `cancelling`, and the next claimant ends it."""
        if state.worker is not None:
            return False
        assert self.job_id is not None
        cancels = await _collect(stored_after(
            self.bus, self.bus.names.cancel_subject(self.job_id), self.seq))
        full = command_state(self.job_id, self.seq, command)
        for message in sorted([*self._view, *cancels], key=lambda m: m.seq):
            new = fold(full, message)
            assert new is not None  # a known job never folds back to unknown
            full = new
        return full.status == "cancelled" and full.worker is None

    # --- 4. the runner's check ------------------------------------------------------------------

    async def _check(self, command: TrainCommand) -> JobPlan | CommandRejected:
        try:
            return await asyncio.to_thread(self.runner.check, command)
        except CommandRejected as rejected:
            return rejected

    async def _refuse(
        self, command: TrainCommand, state: JobState, rejected: CommandRejected
    ) -> None:
        """A command that cannot run: `rejected` while nobody claimed the job; for a
        redelivery (inputs changed since the first attempt) `failed(bad_input)` instead."""
        if state.attempt == 0:
            await self._reject(rejected)
            return
        writer = await self._claim(command)
        if writer is not None:
            await self._failed(writer, "bad_input", rejected.reason)

    # --- 5. claim and resume --------------------------------------------------------------------

    async def _claim(self, command: TrainCommand, plan: JobPlan | None = None) -> JobWriter | None:
        """Claim the job with `accepted` (`plan` is None when claiming only to end it)."""
        assert self.job_id is not None
        accepted = AcceptedEvent(
            **self._base(), worker_kind=self.settings.kind,
            host=self.settings.host, pool=command.pool or self.settings.pool,
            device=self.info.device, capabilities=dict(self.info.capabilities),
            seed=plan.seed if plan is not None else command.seed,
            warnings=[w[:4096] for w in plan.warnings] if plan is not None else [],
        )
        for _ in range(self.settings.claim_retries):
            # The fence first, then the view: whatever is stored after the fence, the writer
            # reads and judges before its claim can be stored.
            last_seq = await self._last_job_seq()
            state = await self._job_view(command, last_seq)
            if is_finished(state):
                log.info("job %s: finished meanwhile (%s); acked", self.label, state.status)
                await self._settle("ack")
                return None
            if not claimable_by(state, self.attempt):
                raise FencedOut(self.bus.names.job_events(self.job_id), last_seq,
                                f"attempt {state.attempt} of {state.worker} holds the job")
            writer = JobWriter(self.bus, job_id=self.job_id, attempt=self.attempt,
                               last_seq=last_seq, state=state)
            try:
                await self._publish(writer, accepted)
            except FencedOut:
                continue  # a real claim or end got in between: read again
            log.info("job %s: accepted on %s (%s)", self.label, self.settings.worker_id,
                     self.info.device)
            self._writer = writer
            return writer
        log.warning("job %s: could not claim it (the job's events keep moving); released",
                    self.label)
        await self._settle("nak", delay=self.settings.infra_retry_delay)
        return None

    async def _resume_point(self, writer: JobWriter) -> bytes | None:
        """The last checkpoint a claimant announced (read with the claim: a forged checkpoint
        event is never followed), announced with `resumed`; None = start over."""
        event = self._checkpoint
        if event is None:
            return None
        try:
            data = await get_bytes(self.bus, event.object_name)
        except ObjectNotFound:
            log.warning("job %s: checkpoint %s is gone; starting over", self.label,
                        event.object_name)
            return None
        await self._publish(writer, ResumedEvent(**self._base(), from_epoch=event.epoch,
                                                 checkpoint=event.object_name))
        log.info("job %s: resuming from %s (epoch %d)", self.label, event.object_name, event.epoch)
        self._resumed_from = event.object_name
        return data

    # --- 6. run ---------------------------------------------------------------------------------

    async def _execute(
        self, command: TrainCommand, writer: JobWriter, resume: bytes | None
    ) -> None:
        assert self.job_id is not None
        queue: asyncio.Queue[RelayItem] = asyncio.Queue()
        relay = EventRelay(
            asyncio.get_running_loop(), queue, job_id=self.job_id, attempt=self.attempt,
            worker_id=self.settings.worker_id, progress_interval=self.settings.progress_interval,
        )
        publisher = asyncio.create_task(
            pump(queue, writer, worker_id=self.settings.worker_id, on_event=self.on_event,
                 checkpoints=self._checkpoints),
            name=f"events-{self.job_id}",
        )
        training = asyncio.create_task(
            asyncio.to_thread(self.runner.run, command, relay, self.stop, resume),
            name=f"train-{self.job_id}",
        )
        outcome: JobResult | BaseException
        try:
            await asyncio.wait({training, publisher}, return_when=asyncio.FIRST_COMPLETED)
            if publisher.done() and publisher.exception() is not None:
                self._publisher_failed(publisher.exception())
            # the runner stops within one batch once the signal is tripped
            outcome = await _result_or_error(training)
            relay.flush()
            queue.put_nowait(CLOSE)
            if not publisher.done():
                await asyncio.wait({publisher})
            if publisher.exception() is not None:
                self._publisher_failed(publisher.exception())
        except asyncio.CancelledError:
            publisher.cancel()
            raise
        if self.stop.cause == "fenced":
            raise FencedOut(self.bus.names.job_events(self.job_id), writer.last_seq,
                            self.stop.reason or "fenced out")
        await self._finish(command, writer, outcome)

    def _publisher_failed(self, exc: BaseException | None) -> None:
        if isinstance(exc, FencedOut):
            self.stop.trip("fenced", str(exc))
        elif exc is not None:
            self.stop.trip("infrastructure", f"{type(exc).__name__}: {exc}")

    # --- 7. finish ------------------------------------------------------------------------------

    async def _finish(
        self, command: TrainCommand, writer: JobWriter, outcome: JobResult | BaseException
    ) -> None:
        if isinstance(outcome, JobResult):
            if self.stop.cause == "cancel":  # cancelled after the last batch: no model
                await self._cancelled(writer, self.stop.reason)
            elif self.stop.cause == "infrastructure":
                await self._infrastructure(writer, self.stop.reason or "lost the event log")
            else:
                await self._completed(writer, outcome)
        elif isinstance(outcome, JobCancelled):
            if self.stop.cause == "cancel":
                await self._cancelled(writer, self.stop.reason)
            elif self.stop.cause == "infrastructure":
                await self._infrastructure(writer, self.stop.reason or "lost the event log")
            elif self.stop.cause == "drain":
                await self._drained(writer, outcome)
            else:
                await self._failed(writer, "code", "the runner stopped without being cancelled")
        elif isinstance(outcome, JobFailed):
            if outcome.category == "infrastructure":
                await self._infrastructure(writer, outcome.reason)
            else:
                # A runner's own `code` verdict keeps the error it wraps (`raise ... from`).
                detail = (traceback_lines(outcome.__cause__)
                          if outcome.category == "code" and outcome.__cause__ is not None
                          else [])
                await self._failed(writer, outcome.category, outcome.reason, traceback=detail)
        elif isinstance(outcome, _INFRA_ERRORS):
            log.error("job %s: infrastructure error in the runner", self.label, exc_info=outcome)
            await self._infrastructure(writer, f"{type(outcome).__name__}: {outcome}")
        else:
            log.error("job %s: the runner raised", self.label, exc_info=outcome)
            await self._failed(writer, "code", redact(f"{type(outcome).__name__}: {outcome}"),
                               traceback=traceback_lines(outcome))

    async def _completed(self, writer: JobWriter, result: JobResult) -> None:
        assert self.job_id is not None
        # Fence before the put: a zombie learns it lost the job before it stores anything.
        await self._publish(writer, PhaseEvent(**self._base(), phase="publish"))
        name = model_object_name(result.strategy, self.job_id, self.attempt)
        try:
            stored = await put_bytes(self.bus, name, result.archive,
                                     description=f"model of job {self.job_id}")
        except ObjectStoreError as exc:
            await self._infrastructure(writer, f"model upload failed: {exc}")
            return
        event = CompletedEvent(
            **self._base(),
            model=ModelRef(
                strategy=result.strategy, version=f"{result.timeframe}_v{result.version}",
                local_path=result.local_path, object_name=name, sha256=stored.sha256,
                weights_sha256=result.weights_sha256,
            ),
            test_metrics=dict(result.test_metrics), best_epoch=result.best_epoch,
            warnings=[w[:4096] for w in result.warnings],
        )
        try:
            await self._publish(writer, event)
        except FencedOut:
            await delete_quietly(self.bus, name)  # never leave a zombie's model behind
            raise
        log.info("job %s: completed -> %s", self.label, name)
        await self._settle("ack")
        await self._cleanup_checkpoints()

    async def _cancelled(self, writer: JobWriter, reason: str | None) -> None:
        await self._publish(writer, CancelledEvent(**self._base(), reason=reason))
        log.info("job %s: cancelled", self.label)
        await self._settle("ack")
        await self._cleanup_checkpoints()

    async def _drained(self, writer: JobWriter, cancelled: JobCancelled) -> None:
        """Shutdown: hand the job back with its latest state in the object store."""
        if cancelled.checkpoint is not None:
            queue: asyncio.Queue[RelayItem] = asyncio.Queue()
            queue.put_nowait(CheckpointBlob(cancelled.epoch, cancelled.batch, cancelled.checkpoint))
            queue.put_nowait(CLOSE)
            await pump(queue, writer, worker_id=self.settings.worker_id, on_event=self.on_event,
                       checkpoints=self._checkpoints)
        # What the next attempt resumes from: this attempt's last, else the one it resumed from.
        checkpoint = self._checkpoints[-1] if self._checkpoints else self._resumed_from
        if self._handed_back < self.settings.max_handbacks:
            # Recorded before the nak: the next delivery reads it and spends no attempt.
            await self._publish(writer, ReleasedEvent(**self._base(), reason=DRAIN_REASON,
                                                      checkpoint=checkpoint))
            log.info("job %s: released for another worker (checkpoint %s; hand-back %d of "
                     "%d)", self.label, checkpoint or "none", self._handed_back + 1,
                     self.settings.max_handbacks)
            await self._settle("nak")
            return
        room = (f"its {self.settings.max_handbacks} hand-back(s) that spend no attempt "
                "(TRAINBUS_MAX_HANDBACKS) are used up")
        if self.last_delivery:
            await self._failed(writer, "infrastructure",
                               "the worker shut down during the last allowed delivery "
                               f"({self.settings.max_deliver} attempt(s)), and {room}")
            return
        log.warning("job %s: %s: this drain spends attempt %d of %d (checkpoint %s)",
                    self.label, room, self.spent, self.settings.max_deliver,
                    checkpoint or "none")
        await self._settle("nak")

    async def _infrastructure(self, writer: JobWriter | None, reason: str) -> None:
        if self.last_delivery:
            await self._failed(writer, "infrastructure", reason)
            return
        log.warning("job %s: infrastructure failure, will be retried: %s", self.label, reason)
        await self._settle("nak", delay=self.settings.infra_retry_delay)

    async def _failed(
        self, writer: JobWriter | None, category: FailureCategoryName, reason: str,
        *, traceback: list[str] | None = None,
    ) -> None:
        if writer is not None:
            # Stored for ever and read by every role: credentials masked, whatever raised.
            await self._publish(writer, FailedEvent(
                **self._base(), reason=redact(reason)[:4000], category=category,
                retryable=False, traceback=[line[:4096] for line in traceback or ()][:64],
            ))
        log.warning("job %s: failed (%s): %s", self.label, category, reason)
        await self._settle("term")
        await self._cleanup_checkpoints()

    async def _fail(self, category: FailureCategoryName, reason: str) -> None:
        """Failure outside the normal path (NATS trouble, a bug in the runtime): best effort.
        Before the claim, a final `failed` needs a claim first (the fold takes no other)."""
        if self.settled:
            return
        try:
            writer = self._writer
            final = category != "infrastructure" or self.last_delivery
            if writer is None and final and self.command is not None:
                writer = await self._claim(self.command)  # only a claimant ends a job
                if writer is None:
                    return
            if category == "infrastructure":
                await self._infrastructure(writer, reason)
            else:
                await self._failed(writer, category, reason)
        except FencedOut:
            self._fenced()
        except (PublishError, nats.errors.Error, TimeoutError) as exc:
            log.error("job %s: could not report the failure (%s)", self.label, exc)
            await self._settle("nak", delay=self.settings.infra_retry_delay)

    def _fenced(self) -> None:
        self.stop.trip("fenced")
        self.settled = True  # not ours any more: no ack, no nak, no term
        log.warning("fenced out: job %s now owned by another worker", self.job_id)

    async def _cleanup_checkpoints(self) -> None:
        for name in [*self._checkpoints, *([self._resumed_from] if self._resumed_from else [])]:
            await delete_quietly(self.bus, name)
        self._checkpoints.clear()

    # --- helpers --------------------------------------------------------------------------------

    def _base(self) -> EventHeader:
        assert self.job_id is not None
        return {"job_id": self.job_id, "attempt": self.attempt,
                "worker_id": self.settings.worker_id, "time": time.time()}

    async def _publish(self, writer: JobWriter, event: AnyEvent) -> None:
        await writer.publish(event)
        self.on_event(event)

    async def _settle(self, how: str, *, delay: float | None = None) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            if how == "ack":
                await self.msg.ack_sync(timeout=5.0)
            elif how == "nak":
                await self.msg.nak(delay=delay)
            else:
                await self.msg.term()
        except (nats.errors.Error, TimeoutError) as exc:
            # A lost ack means a redelivery, which finds the job finished and acks it.
            log.warning("job %s: %s not confirmed (%s)", self.label, how, exc)


async def _result_or_error(task: asyncio.Task[JobResult]) -> JobResult | BaseException:
    try:
        return await task
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to _finish, which sorts it into an outcome
        return exc


async def _collect(messages: AsyncIterator[LogMessage]) -> list[LogMessage]:
    return [message async for message in messages]
