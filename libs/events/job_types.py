"""The application service's request and result types (msgspec Structs: the HTTP API validates
bodies and writes its OpenAPI schema from the same types; the CLI builds the same requests).
Job state itself is `libs.events.fold.JobState`, served as projected."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from libs.events.routing import RequestedPool
from libs.events.schema import (
    MAX_TAGS,
    Epochs,
    ExperimentName,
    IsoDateTime,
    JobId,
    Note,
    TagKey,
    Tags,
)
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
    # With `idempotency_key`: when the key's job ended failed, cancelled or rejected, start the
    # next job of the key's chain (a new job id, `derived_from` the ended one) instead of
    # returning the ended job; a key whose job is queued, running or completed still returns it.
    retry: bool = False
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"
    experiment: ExperimentName | None = None
    tags: Tags = {}
    note: Note | None = None
    derived_from: JobId | None = None  # set by a rerun (libs/events/rerun.py)


# A `--set` value: what a YAML scalar or flow collection can be.
SetValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class RerunRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new job from an old one's command with changes (libs/events/rerun.py). `set` maps
    dotted strategy keys (`training.learning_rate`) to new values: the new job trains an inline
    strategy, the old one's with the changes, checked before anything is submitted. The
    experiment and tags are the old job's unless given; the note is not carried over."""

    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None
    epochs: Epochs | None = None
    set: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=256)], SetValue],
                   Meta(max_length=64)] = {}
    pool: RequestedPool = "auto"
    experiment: ExperimentName | None = None
    tags: Tags = {}
    note: Note | None = None
    idempotency_key: IdempotencyKey | None = None
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"


class AnnotateRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Organise a job after the fact: an `annotated` event in the log (schema.py). `note` ""
    and `experiment` "" clear them; None leaves them as they are."""

    tags: Tags = {}
    untag: Annotated[list[TagKey], Meta(max_length=MAX_TAGS)] = []
    note: Note | None = None
    # An experiment name, or "" to clear it (a name is checked like ExperimentName).
    experiment: Annotated[str, Meta(max_length=128)] | None = None
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"


class AnnotateAccepted(Struct, frozen=True, kw_only=True):
    """202: the annotation is in the log."""

    job_id: str
    seq: int


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
    requested_by: str = "anonymous"
    derived_from: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = {}
    note: str | None = None
    # The headline test metric of a completed job (the first of macro F1, accuracy, RMSE,
    # direction accuracy, MAE it has: libs/events/job_query.py).
    metric: str | None = None
    metric_value: float | None = None


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
