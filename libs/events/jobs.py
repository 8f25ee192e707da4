"""The application service: job operations behind both edges, the HTTP API and the CLI
(submit, list, read, log, cancel). Its requests and results are libs/events/job_types.py, its
refusals the `ServiceError` family in libs/events/errors.py; neither edge adds any rule.

Everything here talks to NATS only: the state comes from the projection (KV), commands go to
the log. Nothing waits for training: a submit returns once the command is stored (and, when the
projector runs in this process, once it is projected, so a GET right after finds the job).
What a strategy file says (its symbols and timeframes, when a request leaves them out) comes
through `StrategyDefaultsLookup`, which the edges implement with the strategy config.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import msgspec

from libs.events.bus import publish_cancel, publish_command, publish_event
from libs.events.commands import validate_train_body
from libs.events.errors import (
    CommandRejected,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    ReplayError,
)
from libs.events.fold import TERMINAL, JobState
from libs.events.follow import read_job_log, read_job_state, state_from_log
from libs.events.job_query import JobQuery, headline_metric
from libs.events.job_types import (
    AnnotateAccepted,
    AnnotateRequest,
    CancelAccepted,
    CancelRequest,
    JobLinks,
    JobLog,
    JobPage,
    JobSummary,
    LogEntry,
    TrainingAccepted,
    TrainingRequest,
)
from libs.events.log import LogMessage, MalformedCommand, Unreadable
from libs.events.projector import load_projection
from libs.events.routing import RoutingMode, resolve_pool
from libs.events.schema import (
    EXPERIMENT_PATTERN,
    AnnotatedEvent,
    CancelCommand,
    Command,
    Event,
    TrainCommand,
    encode,
)
from libs.events.subjects import new_job_id, validate_job_id
from libs.pipeline.types import Timeframe

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.projector import Projector

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
IDEMPOTENT_PREFIX: Final = "req-"
# A key's job that ended like this may be retried under the same key (TrainingRequest.retry).
RETRYABLE: Final = frozenset({"failed", "cancelled", "rejected"})
MAX_RETRIES: Final = 1000


def idempotent_job_id(key: str, retry: int = 0) -> str:
    """The job id an idempotency key stands for: a digest, so any key (spaces, dots, long
    UUIDs) maps to a valid id, and the same key always to the same job. `retry` n > 0: the
    n-th retry of the key's chain, the digest of `<key>\x00retry<n>` (a key with a NUL in it
    would share that chain: not one a person types)."""
    text = key if retry == 0 else f"{key}\x00retry{retry}"
    return IDEMPOTENT_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:24]


def job_links(job_id: str) -> JobLinks:
    base = f"{API_PREFIX}/jobs/{job_id}"
    return JobLinks(state=base, events=f"{base}/events", stream=f"{base}/events",
                    cancel=f"{base}/cancel")


def check_job_id(job_id: str) -> str:
    """A job id from a URL or argument: anything that cannot be a job id is simply unknown."""
    try:
        return validate_job_id(job_id, allow_reserved=True)
    except CommandRejected:
        raise JobNotFound(f"no job {job_id[:140]!r}: not a valid job id") from None


@dataclass(frozen=True, slots=True)
class StrategyDefaults:
    """What a strategy file selects, for a request that leaves symbols or timeframes out."""

    symbols: list[str]
    timeframes: list[str]


# Called in a thread (it reads and validates a strategy file). Returns None when the strategy is
# not known here (the trainers may know it); raises InvalidRequest when it does not validate.
StrategyDefaultsLookup = Callable[[TrainingRequest], StrategyDefaults | None]


class JobService:
    """Operations on jobs for one connected bus (one per request in the API, one per CLI
    command)."""

    def __init__(
        self,
        bus: Bus,
        *,
        routing: RoutingMode = "auto",
        strategy_defaults: StrategyDefaultsLookup | None = None,
        projector: Projector | None = None,
        projection_wait: float = 2.0,
    ) -> None:
        self.bus = bus
        self.routing = routing
        self.strategy_defaults = strategy_defaults
        self.projector = projector
        self.projection_wait = projection_wait

    # --- submit -----------------------------------------------------------------------------

    async def submit(self, request: TrainingRequest) -> TrainingAccepted:
        """Store a train command. Raises InvalidRequest (naming the field) before publishing
        anything when the command could not run."""
        if (request.strategy is None) == (request.strategy_yaml is None):
            raise InvalidRequest(
                "give exactly one of 'strategy' (a strategy name) or 'strategy_yaml' "
                "(the strategy inline)", field="strategy",
            )
        symbols: list[str] | None = request.symbols
        timeframes: list[str] | None = list(request.timeframes or ()) or None
        if symbols is None or timeframes is None or request.strategy_yaml is not None:
            defaults = await self._strategy_defaults(request)
            if defaults is not None:
                symbols = symbols or defaults.symbols
                timeframes = timeframes or defaults.timeframes
        if not symbols:
            raise InvalidRequest(
                f"strategy {request.strategy!r} is not among the strategies known here: "
                "give symbols and timeframes",
                field="symbols",
            )
        if not timeframes:
            raise InvalidRequest("give timeframes", field="timeframes")

        derived_from = request.derived_from
        if request.idempotency_key is not None:
            job_id, existing, n = await self._keyed_job(request.idempotency_key, request.retry)
            if existing is not None and not (request.retry and existing.status in RETRYABLE):
                return self._accepted(existing, routing="idempotency key: existing job",
                                      duplicate=True)
            if existing is not None:  # the chain's newest job ended: the next one retries it
                derived_from = derived_from or existing.job_id
                job_id = idempotent_job_id(request.idempotency_key, n + 1)
        else:
            job_id = new_job_id()

        route = await resolve_pool(self.bus, request.pool, self.routing)
        command = TrainCommand(
            job_id=job_id,
            strategy=request.strategy,
            strategy_yaml=request.strategy_yaml,
            symbols=tuple(symbols),
            # A strategy's own timeframes are Timeframes; validate_train_body below checks all.
            timeframes=cast("tuple[Timeframe, ...]", tuple(timeframes)),
            start=request.start,
            end=request.end,
            seed=request.seed,
            epochs=request.epochs,
            requested_by=request.requested_by,
            idempotency_key=request.idempotency_key,
            derived_from=derived_from,
            experiment=request.experiment,
            tags=dict(request.tags),
            note=request.note,
        )
        # The same verdict the projector and the workers reach on these bytes, before they
        # are stored: a bad request is a 422 here, never a rejected job later.
        try:
            validate_train_body(encode(command), pool=route.pool)
        except CommandRejected as exc:
            raise InvalidRequest(exc.reason, field=exc.field) from None
        receipt = await publish_command(self.bus, command, pool=route.pool)
        pool, reason = route.pool, route.reason
        if receipt.duplicate:
            # A retry inside the dedupe window: the stored command may have gone elsewhere.
            raw = await self.bus.js.get_msg(self.bus.names.stream, receipt.seq)
            info = self.bus.names.parse(raw.subject or "")
            pool, reason = info.pool or pool, "idempotency key: existing job"
        await self._await_projection(receipt.seq)
        return TrainingAccepted(
            job_id=receipt.job_id, pool=pool, routing=reason, status="queued",
            seq=receipt.seq, duplicate=receipt.duplicate, links=job_links(receipt.job_id),
        )

    async def _keyed_job(self, key: str, retry: bool) -> tuple[str, JobState | None, int]:
        """The newest job of a key's chain: its id, state (None: not started yet) and retry
        number. Without `retry` only the key's first job counts: the key names it for ever."""
        job_id, n = idempotent_job_id(key), 0
        state = await read_job_state(self.bus, job_id)
        while retry and state is not None and state.status in RETRYABLE and n < MAX_RETRIES:
            following_id = idempotent_job_id(key, n + 1)
            following = await read_job_state(self.bus, following_id)
            if following is None:
                break
            job_id, state, n = following_id, following, n + 1
        return job_id, state, n

    def _accepted(self, state: JobState, *, routing: str, duplicate: bool) -> TrainingAccepted:
        return TrainingAccepted(
            job_id=state.job_id, pool=state.pool or "any", routing=routing,
            status=state.status, seq=state.command_seq, duplicate=duplicate,
            links=job_links(state.job_id),
        )

    async def _await_projection(self, seq: int) -> None:
        if self.projector is None:
            return
        try:
            await self.projector.wait_for(seq, timeout=self.projection_wait)
        except ReplayError as exc:  # lagging is not failing: the command is stored
            log.info("job submitted at seq %d, not projected yet: %s", seq, exc)

    async def _strategy_defaults(self, request: TrainingRequest) -> StrategyDefaults | None:
        """Symbols and timeframes from the strategy itself (inline YAML, or a file in the
        strategies dir). Inline YAML is fully validated here so its errors name the YAML path.
        None when the strategy is not known here (the trainers may still know it)."""
        if self.strategy_defaults is None:
            return None
        return await asyncio.to_thread(self.strategy_defaults, request)

    # --- read -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobState:
        """The projected state; for a job whose command is stored but not projected yet (the
        projector lags, or runs elsewhere) the state its train command creates."""
        job_id = check_job_id(job_id)
        state = await read_job_state(self.bus, job_id) or await state_from_log(self.bus, job_id)
        if state is None:
            raise JobNotFound(f"no job {job_id!r}")
        return state

    async def list(
        self, *, limit: int = 50, offset: int = 0, query: JobQuery | None = None,
    ) -> JobPage:
        """Jobs newest first (by creation, then command sequence) that match `query`. Reads
        the whole projection: fine for thousands of jobs; an index belongs to a later issue."""
        assert self.bus.jobs is not None
        query = query or JobQuery()
        projection = await load_projection(self.bus.js, self.bus.names.jobs_bucket)
        states = [s for s in projection.states.values() if query.matches(s)]
        states.sort(key=lambda s: (s.created_at, s.command_seq), reverse=True)
        page = states[offset: offset + limit]
        next_offset = offset + limit if offset + limit < len(states) else None
        return JobPage(items=[summary(s) for s in page], total=len(states), limit=limit,
                       offset=offset, next_offset=next_offset)

    async def log(self, job_id: str, *, after: int = 0) -> JobLog:
        state = await self.get(job_id)
        messages = await read_job_log(self.bus, state.job_id, command_seq=state.command_seq)
        return JobLog(
            job_id=state.job_id,
            status=state.status,
            entries=[log_entry(m) for m in messages if m.seq > after],
        )

    # --- annotate ---------------------------------------------------------------------------

    async def annotate(self, job_id: str, request: AnnotateRequest) -> AnnotateAccepted:
        """Store an `annotated` event (tags, untag, note, experiment) for a job at any status."""
        state = await self.get(job_id)
        if not (request.tags or request.untag or request.note is not None
                or request.experiment is not None):
            raise InvalidRequest("nothing to change: give tags, untag, note or experiment",
                                 field="tags")
        if request.experiment and not re.fullmatch(EXPERIMENT_PATTERN, request.experiment):
            raise InvalidRequest(f"experiment {request.experiment[:140]!r}: use 1-128 of "
                                 "[A-Za-z0-9_.:-], starting with a letter or digit",
                                 field="experiment")
        event = AnnotatedEvent(
            job_id=state.job_id, attempt=0, worker_id="", time=time.time(),
            tags=dict(request.tags), untag=list(request.untag), note=request.note,
            experiment=request.experiment, by=request.requested_by,
        )
        # Unfenced: an annotation changes no outcome, and a running job's writer reads past
        # it when its next fenced publish is refused (relay.py `JobWriter`).
        receipt = await publish_event(self.bus, event, n=f"annotated-{secrets.token_hex(6)}")
        await self._await_projection(receipt.seq)
        return AnnotateAccepted(job_id=state.job_id, seq=receipt.seq)

    # --- cancel -----------------------------------------------------------------------------

    async def cancel(self, job_id: str, request: CancelRequest | None = None) -> CancelAccepted:
        state = await self.get(job_id)
        if state.status in TERMINAL:
            raise JobAlreadyFinished(f"job {state.job_id} is already {state.status}")
        command = CancelCommand(
            reason=request.reason if request else None,
            requested_by=request.requested_by if request else "api",
        )
        receipt = await publish_cancel(self.bus, state.job_id, command)
        await self._await_projection(receipt.seq)
        status = "cancelled" if state.status == "queued" else "cancelling"
        return CancelAccepted(job_id=state.job_id, status=status, seq=receipt.seq,
                              duplicate=receipt.duplicate)


def summary(state: JobState) -> JobSummary:
    headline = headline_metric(state.test_metrics)
    return JobSummary(
        job_id=state.job_id,
        status=state.status,
        strategy=state.strategy,
        inline_strategy=state.inline_strategy,
        pool=state.pool,
        symbols=state.symbols,
        timeframes=state.timeframes,
        worker=state.worker,
        worker_kind=state.worker_kind,
        device=state.device,
        phase=state.phase,
        epoch=state.epoch,
        total_epochs=state.total_epochs,
        percent=state.percent,
        created_at=state.created_at,
        finished_at=state.finished_at,
        error=state.error.reason if state.error else None,
        requested_by=state.requested_by,
        derived_from=state.derived_from,
        experiment=state.experiment,
        tags=dict(state.tags),
        note=state.note,
        metric=headline[0] if headline else None,
        metric_value=headline[1] if headline else None,
    )


def log_entry(message: LogMessage) -> LogEntry:
    body = message.body
    kind: str
    entry_type: Literal["command", "event", "unreadable"]
    if isinstance(body, Event | Command):
        kind = str(body.__struct_config__.tag)
        entry_type = "event" if isinstance(body, Event) else "command"
    elif isinstance(body, MalformedCommand):
        kind, entry_type = "train", "command"
    else:
        assert isinstance(body, Unreadable)
        kind, entry_type = "unreadable", "unreadable"
    data: dict[str, Any] = msgspec.to_builtins(body)
    return LogEntry(seq=message.seq, time=message.time, subject=message.subject,
                    type=entry_type, kind=kind, body=data)
