"""Job state as a pure function of the log: `fold(state, message) -> state`.

The fold never does I/O, never reads a clock and never raises on log content, so the projector,
the audit and any test get the same state from the same messages. Rules, checked in order:

1. idempotent by sequence: a message at or below `state.last_seq` changes nothing;
2. a terminal job (completed, failed, cancelled, rejected) never changes again, except for an
   `annotated` event (tags, note, experiment: how people organise runs, never the outcome);
3. a second train command for a known job id changes nothing (a job starts once, for ever);
4. only the claimant writes a job: an event counts only when its attempt AND worker are those
   of the `accepted` that claimed the job (the current attempt); only `accepted` opens a new
   attempt, and only `rejected` (of a job nobody claimed) and an operator's `operator_failed`
   end one without a claim (`annotated` is nobody's attempt: who may send it is the NATS
   roles' business, libs/events/roles.py). Anything
   else on a job's subjects (a stale worker, a forger, garbage) changes nothing and is
   *foreign* (`is_foreign`, `foreign_events`: what the audit reports). When the claim is
   signed (`JobState.signer`, verified in log.py), the attempt's events must carry that same
   verified signer too: the worker id and attempt alone can be copied, the key cannot;
5. the state machine: queued -> running -> cancelling -> completed | failed | cancelled, and
   queued -> rejected | cancelled (a cancel command; a cancel counts only after the job's train
   command: one for an id not yet in the log changes nothing, ever); the claimant's `released`
   (a drain) turns running back to queued (cancelling stays) with no worker, and counts in
   `handed_back`; a job claimed before is never `rejected`.

A message that changes nothing returns the very same object (`fold(s, m) is s`).
States are plain immutable data (no reference cycles), so they skip the cycle collector
(`gc=False`), which otherwise rescans every live state on each collection during a replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

from msgspec import Struct
from msgspec.structs import replace

from libs.events.log import LogMessage, MalformedCommand, Unreadable
from libs.events.schema import (
    OPERATOR_WORKER_ID,
    AcceptedEvent,
    AnnotatedEvent,
    CancelCommand,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    EpochEvent,
    Event,
    FailedEvent,
    ModelRef,
    OperatorFailedEvent,
    PhaseEvent,
    ProgressEvent,
    RejectedEvent,
    ReleasedEvent,
    ResumedEvent,
    TrainCommand,
)

Status = Literal["queued", "running", "cancelling", "completed", "failed", "cancelled", "rejected"]
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled", "rejected"})
ACTIVE: Final[frozenset[str]] = frozenset({"running", "cancelling"})


class EpochMetrics(Struct, frozen=True, kw_only=True, gc=False):
    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    duration: float = 0.0


class JobError(Struct, frozen=True, kw_only=True, gc=False):
    reason: str
    category: str
    field: str | None = None
    retryable: bool = False
    # A `code` failure's frames and exception (FailedEvent.traceback), innermost last.
    traceback: tuple[str, ...] = ()


class JobState(Struct, frozen=True, kw_only=True, gc=False):
    """One job as projected from the log; stored as JSON in KV `<prefix>_jobs` under its id.

    `last_seq` is the stream sequence of the last message that changed it; `command_seq` the
    sequence of the train command that created it."""

    job_id: str
    status: Status
    command_seq: int
    last_seq: int
    pool: str | None = None
    strategy: str | None = None
    inline_strategy: bool = False
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    # The command's seed (None: the strategy's own), then the one the worker resolved at claim.
    seed: int | None = None
    epochs: int | None = None  # the command's epochs override (None: the strategy's own)
    requested_by: str = "anonymous"
    derived_from: str | None = None  # the job this one re-runs (TrainCommand.derived_from)
    # How people organise runs: from the command, then changed by `annotated` events.
    experiment: str | None = None
    tags: dict[str, str] = {}
    note: str | None = None
    attempt: int = 0
    # Deliveries the claimant handed back (`released`, a drain): they spent no attempt, so
    # the attempts spent are `attempt - handed_back` (worker/attempt.py). A released job is
    # `queued` again (`cancelling` stays), its worker cleared until the next claim.
    handed_back: int = 0
    worker: str | None = None
    # The verified signer of the claiming `accepted` (libs/events/signing.py; None: unsigned).
    # When set, the attempt's events count only with that same verified signer.
    signer: str | None = None
    # The stream sequence of that `accepted`: when the current attempt was claimed (trust.py
    # judges a model by when its job was trained, not submitted).
    claim_seq: int | None = None
    worker_kind: str | None = None
    host: str | None = None
    device: str | None = None
    phase: str | None = None
    fold: int | None = None  # the walk-forward fold being trained (1-based) of `folds`
    folds: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    percent: float | None = None
    eta_seconds: float | None = None
    latest: EpochMetrics | None = None
    best: EpochMetrics | None = None
    history: tuple[EpochMetrics, ...] = ()
    checkpoint: str | None = None
    resumed_from_epoch: int | None = None
    model: ModelRef | None = None
    test_metrics: dict[str, float | None] = {}
    best_epoch: int | None = None
    warnings: tuple[str, ...] = ()
    error: JobError | None = None
    cancel_reason: str | None = None
    cancel_requested_by: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0


def fold(state: JobState | None, message: LogMessage) -> JobState | None:
    """Apply one log message to one job's state (None = job unknown so far)."""
    if state is not None:
        if message.seq <= state.last_seq:
            return state
        if state.status in TERMINAL and type(message.body) is not AnnotatedEvent:
            return state
        if message.job_id != state.job_id:
            raise ValueError(f"message for {message.job_id!r} folded into {state.job_id!r}")
    body = message.body
    kind = type(body)  # exact types: a dict lookup instead of an isinstance chain (hot path)
    if kind is TrainCommand:
        return _created(message, body) if state is None else state  # type: ignore[arg-type]
    if kind is MalformedCommand:
        if state is None:
            return _rejected_command(message, body)  # type: ignore[arg-type]
        return state
    if state is None:
        # Cancels and events of a job never started in this log: nothing to project.
        return None
    if kind is CancelCommand:
        return _cancel_requested(state, message, body)  # type: ignore[arg-type]
    handler = _EVENT_HANDLERS.get(kind)
    if handler is None:
        return state  # Unreadable
    if state.signer is not None and message.signer != state.signer and kind not in _ANY_SIGNER:
        # A signed claim: only its key writes the attempt (a forger with the claimant's worker
        # id and attempt but not its key is foreign). An unsigned claim keeps the old rule.
        return state
    return handler(state, message, body)


def fold_all(messages: list[LogMessage]) -> dict[str, JobState]:
    """Fold a whole log (in order) into states by job id."""
    states: dict[str, JobState] = {}
    for message in messages:
        if message.job_id is None:
            continue
        new = fold(states.get(message.job_id), message)
        if new is not None:
            states[message.job_id] = new
    return states


# --- who writes a job: one rule for the projector, the audit and the worker ------------------


def is_finished(state: JobState | None) -> bool:
    """Whether the job is finished, for the projector and the worker alike (attempt.py acks a
    delivery of a finished job without running it). Only a terminal event of the claimant (or
    a `rejected` of an unclaimed job, a cancel while queued, an operator's `operator_failed`)
    makes a job terminal, so a
    forged `failed` of another attempt or worker does not finish it."""
    return state is not None and state.status in TERMINAL


def claimable_by(state: JobState | None, attempt: int) -> bool:
    """Whether an `accepted` of `attempt` would claim the job now."""
    return state is not None and state.status not in TERMINAL and attempt > state.attempt


def command_state(job_id: str, command_seq: int, command: TrainCommand) -> JobState:
    """The job as the worker holding the train command at `command_seq` starts from: that
    command, ready to fold the job's events in stream order, those stored before the command
    too (a second start of a job that already ran: `last_seq` 0). Cancels are not folded into
    it: the worker reads those itself, and only those after its command (attempt.py)."""
    message = LogMessage(seq=command_seq, subject="", time=0.0, job_id=job_id, body=command)
    return replace(_created(message, command), last_seq=0)


def counts(state: JobState, event: Event, *, signer: str | None = None) -> bool:
    """Whether `event`, stored next, would change the job (the claimant's event, a new claim,
    a rejection of an unclaimed job): the writer's test after a refused fenced publish
    (relay.py), the same rule the projector folds by. `signer`: the writer's public key (the
    verified signer its stored event will carry; None for an unsigned writer)."""
    probe = LogMessage(seq=state.last_seq + 1, subject="", time=event.time,
                       job_id=state.job_id, body=event, signer=signer)  # type: ignore[arg-type]
    return fold(state, probe) is not state


def fold_judged(state: JobState | None, message: LogMessage) -> tuple[JobState | None, bool]:
    """`fold(state, message)` and whether the message is *foreign*: an event (or unreadable
    bytes) on a job's event subjects that the claimant did not write, so it changed nothing
    (a forged or stale event, garbage, an event of a job that is not in the log). A replayed
    message (seq at or below the state's) is not judged again."""
    new = fold(state, message)
    return new, new is state and unchanged_is_foreign(state, message)


def unchanged_is_foreign(state: JobState | None, message: LogMessage) -> bool:
    """Whether `message`, which changed nothing when folded into `state`, is foreign (see
    `fold_judged`; the replay's hot path asks only about messages that changed nothing)."""
    body = message.body
    if message.job_id is None or not isinstance(body, Event | Unreadable):
        return False
    if state is None:
        return True
    if message.seq <= state.last_seq:
        return False
    if (type(body) is RejectedEvent and state.status == "rejected"
            and body.command_seq in (None, state.command_seq)):
        return False  # a worker's rejection of a command the log already rejected
    # Not a worker's record of a cancel while queued (attempt.py): never claimed, or handed
    # back (`released` clears the worker).
    return not (type(body) is CancelledEvent and state.status == "cancelled"
                and state.worker is None)


def is_foreign(state: JobState | None, message: LogMessage) -> bool:
    """Whether `message`, folded into `state`, is foreign (see `fold_judged`)."""
    return fold_judged(state, message)[1]


def foreign_events(messages: Iterable[LogMessage]) -> dict[str, list[int]]:
    """The stream sequences of the foreign messages of each job in a log (in order), for the
    audit: a healthy log has none."""
    states: dict[str, JobState] = {}
    foreign: dict[str, list[int]] = {}
    for message in messages:
        job_id = message.job_id
        if job_id is None:
            continue
        new, judged_foreign = fold_judged(states.get(job_id), message)
        if judged_foreign:
            foreign.setdefault(job_id, []).append(message.seq)
        if new is not None:
            states[job_id] = new
    return foreign


# --- commands ---------------------------------------------------------------------------------


def _created(message: LogMessage, command: TrainCommand) -> JobState:
    assert message.job_id is not None
    return JobState(
        job_id=message.job_id,
        status="queued",
        command_seq=message.seq,
        last_seq=message.seq,
        pool=command.pool,
        strategy=command.strategy,
        inline_strategy=command.strategy_yaml is not None,
        symbols=command.symbols,
        timeframes=command.timeframes,
        start=command.start,
        end=command.end,
        seed=command.seed,
        epochs=command.epochs,
        requested_by=command.requested_by,
        derived_from=command.derived_from,
        experiment=command.experiment,
        tags=dict(command.tags),
        note=command.note,
        created_at=message.time,
        updated_at=message.time,
    )


def _rejected_command(message: LogMessage, bad: MalformedCommand) -> JobState:
    assert message.job_id is not None
    return JobState(
        job_id=message.job_id,
        status="rejected",
        command_seq=message.seq,
        last_seq=message.seq,
        error=JobError(reason=bad.reason, category=bad.category, field=bad.field),
        created_at=message.time,
        finished_at=message.time,
        updated_at=message.time,
    )


def _cancel_requested(state: JobState, message: LogMessage, cancel: CancelCommand) -> JobState:
    if state.status == "cancelling":
        return state  # already asked; the first request's reason stands
    common = {
        "cancel_reason": cancel.reason,
        "cancel_requested_by": cancel.requested_by,
        "last_seq": message.seq,
        "updated_at": message.time,
    }
    if state.status == "queued":
        # Nobody runs it: cancelled now. A worker that pulls it later sees the cancel first.
        return replace(state, status="cancelled", finished_at=message.time, **common)
    return replace(state, status="cancelling", **common)


# --- events -----------------------------------------------------------------------------------


def _current(state: JobState, event: Event) -> bool:
    """Whether an event comes from the claimant: the attempt and the worker of the `accepted`
    that owns the job. Events of a superseded attempt (a stale worker), of an attempt that
    never claimed it, or of anyone else using the right attempt number do not."""
    return (event.attempt == state.attempt and event.worker_id == state.worker
            and state.status in ACTIVE)


def _on_progress(state: JobState, message: LogMessage, event: ProgressEvent) -> JobState:
    # _current(), inlined: progress is most of the log.
    if (event.attempt != state.attempt or event.worker_id != state.worker
            or state.status not in ACTIVE):
        return state
    return replace(
        state,
        epoch=event.epoch,
        total_epochs=event.total_epochs,
        percent=event.percent,
        eta_seconds=event.eta_seconds,
        last_seq=message.seq,
        updated_at=message.time,
    )


def _on_phase(state: JobState, message: LogMessage, event: PhaseEvent) -> JobState:
    if not _current(state, event):
        return state
    if event.fold is None:
        return replace(state, phase=event.phase, last_seq=message.seq, updated_at=message.time)
    return replace(state, phase=event.phase, fold=event.fold, folds=event.folds,
                   last_seq=message.seq, updated_at=message.time)


def _on_checkpoint(state: JobState, message: LogMessage, event: CheckpointEvent) -> JobState:
    if not _current(state, event):
        return state
    return replace(state, checkpoint=event.object_name, last_seq=message.seq,
                   updated_at=message.time)


def _on_resumed(state: JobState, message: LogMessage, event: ResumedEvent) -> JobState:
    if not _current(state, event):
        return state
    return replace(state, resumed_from_epoch=event.from_epoch, checkpoint=event.checkpoint,
                   last_seq=message.seq, updated_at=message.time)


def _on_completed(state: JobState, message: LogMessage, event: CompletedEvent) -> JobState:
    if not _current(state, event):
        return state
    return _completed(state, message, event)


def _on_failed(state: JobState, message: LogMessage, event: FailedEvent) -> JobState:
    # Only the claimant: a worker giving up on a job it never ran claims it first (attempt.py).
    if _current(state, event):
        return _failed(state, message, event)
    return state


def _on_cancelled(state: JobState, message: LogMessage, event: CancelledEvent) -> JobState:
    if _current(state, event):
        return _finished(state, message, "cancelled",
                         cancel_reason=state.cancel_reason or event.reason)
    return state


def _on_released(state: JobState, message: LogMessage, event: ReleasedEvent) -> JobState:
    # Claimant only, and once per attempt: the worker is cleared, so a second `released` of
    # the same attempt (or anything else it sends after) is no longer the claimant's.
    if not _current(state, event):
        return state
    return replace(state, status="queued" if state.status == "running" else state.status,
                   handed_back=state.handed_back + 1, worker=None, phase=None, percent=None,
                   eta_seconds=None, last_seq=message.seq, updated_at=message.time)


def _accepted(state: JobState, message: LogMessage, event: AcceptedEvent) -> JobState:
    if event.attempt <= state.attempt:
        return state  # a duplicate or a stale claim
    return replace(
        state,
        status="running" if state.status == "queued" else state.status,
        attempt=event.attempt,
        worker=event.worker_id,
        signer=message.signer,
        claim_seq=message.seq,
        worker_kind=event.worker_kind,
        host=event.host,
        device=event.device,
        seed=event.seed if event.seed is not None else state.seed,
        warnings=tuple(event.warnings),
        phase=None,
        percent=None,
        eta_seconds=None,
        started_at=state.started_at if state.started_at is not None else message.time,
        last_seq=message.seq,
        updated_at=message.time,
    )


def _operator_failed(state: JobState, message: LogMessage, event: OperatorFailedEvent
                     ) -> JobState:
    # The one event taken from no claimant: an operator ends a job nobody else will (schema.py),
    # and only with the operator's id (a worker posing as one changes nothing).
    if event.worker_id != OPERATOR_WORKER_ID:
        return state
    return _finished(state, message, "failed",
                     error=JobError(reason=event.reason, category="operator"))


def _annotated(state: JobState, message: LogMessage, event: AnnotatedEvent) -> JobState:
    # Any status, terminal too (rule 2), and no claimant check (rule 4): organising a run is
    # not training it. Keys set by `tags` win over the same keys in `untag`.
    tags = {k: v for k, v in state.tags.items() if k not in event.untag}
    tags.update(event.tags)
    changes: dict[str, Any] = {"tags": tags}
    if event.note is not None:
        changes["note"] = event.note or None
    if event.experiment is not None:
        changes["experiment"] = event.experiment or None
    return replace(state, last_seq=message.seq, updated_at=message.time, **changes)


def _rejected_event(state: JobState, message: LogMessage, event: RejectedEvent) -> JobState:
    if state.status != "queued" or state.attempt != 0:
        return state  # claimed before (a handed-back job is queued again): never rejected
    if event.command_seq is not None and event.command_seq != state.command_seq:
        return state  # rejects another (ignored) start of this job id
    return _finished(
        state,
        message,
        "rejected",
        error=JobError(reason=event.reason, category=event.category, field=event.field),
    )


def _on_epoch(state: JobState, message: LogMessage, event: EpochEvent) -> JobState:
    if (event.attempt != state.attempt or event.worker_id != state.worker
            or state.status not in ACTIVE):  # _current(), inlined
        return state
    metrics = EpochMetrics(
        epoch=event.epoch,
        train_loss=event.train_loss,
        train_accuracy=event.train_accuracy,
        val_loss=event.val_loss,
        val_accuracy=event.val_accuracy,
        learning_rate=event.learning_rate,
        duration=event.duration,
    )
    history = state.history
    if not history or history[-1].epoch < event.epoch:
        # The common case, the next epoch: append, and only the new one can become best.
        history = (*history, metrics)
        best = _better(state.best, metrics)
    else:
        # A resumed attempt re-running epoch n: history is keyed by epoch, so n is replaced
        # and what came after it is dropped.
        history = (*(m for m in history if m.epoch < event.epoch), metrics)
        best = None
        for m in history:
            best = _better(best, m)
    return replace(
        state,
        epoch=event.epoch,
        total_epochs=event.total_epochs,
        latest=metrics,
        best=best,
        history=history,
        last_seq=message.seq,
        updated_at=message.time,
    )


def _better(best: EpochMetrics | None, candidate: EpochMetrics) -> EpochMetrics | None:
    """The better of two epochs: lowest validation loss, else lowest training loss (an epoch
    with a validation loss beats one without); the earlier one wins ties."""
    if candidate.val_loss is not None:
        if best is None or best.val_loss is None or candidate.val_loss < best.val_loss:
            return candidate
        return best
    if best is not None and best.val_loss is not None:
        return best
    if candidate.train_loss is not None and (
        best is None or best.train_loss is None or candidate.train_loss < best.train_loss
    ):
        return candidate
    return best


def _completed(state: JobState, message: LogMessage, event: CompletedEvent) -> JobState:
    best = state.best
    if event.best_epoch is not None:
        best = next((m for m in state.history if m.epoch == event.best_epoch), best)
    return _finished(
        state,
        message,
        "completed",
        model=event.model,
        test_metrics=dict(event.test_metrics),
        best_epoch=event.best_epoch,
        # The accepted event's (the strategy's) first, then the run's.
        warnings=tuple(dict.fromkeys((*state.warnings, *event.warnings))),
        best=best,
        percent=100.0,
        eta_seconds=0.0,
    )


def _failed(state: JobState, message: LogMessage, event: FailedEvent) -> JobState:
    return _finished(
        state,
        message,
        "failed",
        error=JobError(reason=event.reason, category=event.category, retryable=event.retryable,
                       traceback=tuple(event.traceback)),
    )


def _finished(state: JobState, message: LogMessage, status: Status, **changes: object) -> JobState:
    return replace(
        state,
        status=status,
        finished_at=message.time,
        last_seq=message.seq,
        updated_at=message.time,
        **changes,
    )


# Events not written by the claim's signer: a new claim (judged by its attempt), an operator's
# end, a rejection of an unclaimed job, a person's annotation.
_ANY_SIGNER: Final = frozenset({AcceptedEvent, OperatorFailedEvent, RejectedEvent,
                                AnnotatedEvent})

_EVENT_HANDLERS: Final[dict[type, Callable[[JobState, LogMessage, Any], JobState]]] = {
    AcceptedEvent: _accepted,
    RejectedEvent: _rejected_event,
    PhaseEvent: _on_phase,
    ProgressEvent: _on_progress,
    EpochEvent: _on_epoch,
    CheckpointEvent: _on_checkpoint,
    ResumedEvent: _on_resumed,
    CompletedEvent: _on_completed,
    FailedEvent: _on_failed,
    CancelledEvent: _on_cancelled,
    OperatorFailedEvent: _operator_failed,
    ReleasedEvent: _on_released,
    AnnotatedEvent: _annotated,
}
