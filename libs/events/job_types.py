"""The application service's request and result types (msgspec Structs: the HTTP API validates
bodies and writes its OpenAPI schema from the same types; the CLI builds the same requests).
Job state itself is `libs.events.fold.JobState`, served as projected."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from libs.events.routing import RequestedPool
from libs.events.schema import Epochs, IsoDateTime
from libs.pipeline.types import Seed, StrategyName, Symbol, Timeframe

IdempotencyKey = Annotated[
    str,
    Meta(min_length=1, max_length=128, description="same key, same job (retries are safe)"),
]


class TrainingRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a training job. Give exactly one of `strategy` (a strategy name the trainers know)
    or `strategy_yaml` (the whole strategy inline). `symbols`/`timeframes` default to the
    strategy's own when the backend can read it (inline YAML, or its strategies dir)."""

    strategy: StrategyName | None = None
    strategy_yaml: Annotated[str, Meta(min_length=1, max_length=256 * 1024)] | None = None
    symbols: Annotated[list[Symbol], Meta(min_length=1, max_length=64)] | None = None
    timeframes: Annotated[list[Timeframe], Meta(min_length=1, max_length=8)] | None = None
    start: IsoDateTime | None = None
    end: IsoDateTime | None = None
    seed: Seed | None = None  # None: the strategy's own training.seed
    epochs: Epochs | None = None  # None: the strategy's own training.epochs
    pool: RequestedPool = "auto"
    idempotency_key: IdempotencyKey | None = None
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"


class JobLinks(Struct, frozen=True, kw_only=True):
    state: str
    events: str
    stream: Annotated[str, Meta(description="the events URL with Accept: text/event-stream")]
    cancel: str


class TrainingAccepted(Struct, frozen=True, kw_only=True):
    """202: the command is in the log; the job runs when a trainer of `pool` takes it."""

    job_id: str
    pool: str
    routing: Annotated[str, Meta(description="why this pool was chosen")]
    status: str
    seq: Annotated[int, Meta(description="stream sequence of the train command")]
    duplicate: Annotated[bool, Meta(description="the idempotency key named an existing job")]
    links: JobLinks


class JobSummary(Struct, frozen=True, kw_only=True):
    job_id: str
    status: str
    strategy: str | None
    inline_strategy: bool
    pool: str | None
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    worker: str | None
    worker_kind: str | None
    device: str | None
    phase: str | None
    epoch: int | None
    total_epochs: int | None
    percent: float | None
    created_at: float
    finished_at: float | None
    error: str | None


class JobPage(Struct, frozen=True, kw_only=True):
    """Newest first. `next_offset` is None on the last page."""

    items: list[JobSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class LogEntry(Struct, frozen=True, kw_only=True):
    """One message of a job's log: `type` command or event, `kind` train/cancel or the event
    kind, `body` as stored (decoded)."""

    seq: int
    time: float
    subject: str
    type: Literal["command", "event", "unreadable"]
    kind: str
    body: dict[str, Any]


class JobLog(Struct, frozen=True, kw_only=True):
    job_id: str
    status: str
    entries: list[LogEntry]


class CancelRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=4096)] | None = None
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"


class CancelAccepted(Struct, frozen=True, kw_only=True):
    """202: the cancel is in the log; the job ends `cancelled` (at once when still queued)."""

    job_id: str
    status: str
    seq: int
    duplicate: bool
