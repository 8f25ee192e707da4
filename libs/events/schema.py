"""Every command and event on the bus as a frozen msgspec Struct: the persisted contract.

Rules (msgspec schema evolution + eventsourcing upcasting):
- Tags (`type` for commands, `kind` for events) and field names are persisted: never rename or
  retype them. New fields get defaults. A real change bumps the class's `v` default and adds
  one upcaster to `_UPCASTERS`; old payloads are upcast on read in `_upcast`, the one place.
- Commands come from users (backend, `nats req`) as plain JSON: the subject says which command
  it is, so the tag is optional on the wire and strict decoding (`forbid_unknown_fields`) names
  the bad field. Events come from our own workers and are stored for ever: lenient decoding
  (unknown fields skipped) so a newer writer never breaks an older reader.
- Times are Unix epoch seconds (float, UTC) everywhere. Losses and accuracies are
  `float | None`: JSON has no NaN (msgspec writes NaN as null), and a diverging run must not
  produce an unreadable event.
- Encoders and decoders are built once and reused (msgspec perf tips). Events are not
  tracked by the cycle collector (`gc=False`): decoded JSON cannot form reference cycles, and
  a replay creates hundreds of thousands of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, TypedDict, TypeVar

import msgspec
from msgspec import Meta, Struct

from libs.events.subjects import ALIAS_PATTERN, JOB_ID_PATTERN
from libs.pipeline.types import Seed, StrategyName, Symbol, Timeframe

# --- shared field types -------------------------------------------------------------------------

JobId = Annotated[str, Meta(pattern=JOB_ID_PATTERN, description="1-128 of [A-Za-z0-9_-]")]
# In stored events the job id is checked against the subject it was stored on (validated once
# per subject), so decoding does not run the regex again: it was ~45% of an event's decode
# time, on the hot path of every replay. The exported JSON Schema still states the pattern.
EventJobId = Annotated[
    str, Meta(description="1-128 of [A-Za-z0-9_-]", extra_json_schema={"pattern": JOB_ID_PATTERN})
]
PoolName = Literal["any", "container", "host"]
IsoDateTime = Annotated[
    str,
    Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$",
        description="ISO 8601 date or date-time",
        examples=["2024-01-01", "2024-06-30T23:59:59Z"],
    ),
]
Name = Annotated[str, Meta(max_length=128)]
Text = Annotated[str, Meta(max_length=4096)]
NonNegInt = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]
Percent = Annotated[float, Meta(ge=0, le=100)]
WorkerKind = Literal["container", "host"]
FailureCategory = Literal["bad_input", "data", "code", "infrastructure"]
RejectCategory = Literal["malformed", "invalid", "too_large", "unknown_strategy", "unsupported"]

# Inline strategy YAML and whole command bodies are capped well below the server's 1 MiB
# payload limit: anything bigger belongs in the object store.
MAX_COMMAND_BYTES: Final = 256 * 1024
# The NATS server's default max_payload: no stored message can be bigger.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
# Nesting limits for untrusted JSON, far below the ~1000 levels where msgspec raises
# RecursionError (a threshold that moves with the caller's stack depth): an explicit limit
# gives every reader the same verdict for the same bytes. Commands and HTTP bodies are a few
# levels deep; events get more room so a replay skips the scan for any event under 514 bytes.
MAX_JSON_DEPTH: Final = 64
MAX_EVENT_DEPTH: Final = 256


# --- commands -----------------------------------------------------------------------------------


# An epochs override: the strategy grammar's own bounds for training.epochs.
Epochs = Annotated[int, Meta(ge=1, le=100_000, description="training epochs (1 to 100000)")]

# Organising runs (experiments, tags, notes): free text for people, so only bounded, and names
# that `jobs --experiment/--tag` filters compare exactly.
EXPERIMENT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$(?!\n)"
TAG_KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$(?!\n)"
MAX_TAGS: Final = 32
ExperimentName = Annotated[str, Meta(pattern=EXPERIMENT_PATTERN,
                                     description="1-128 of [A-Za-z0-9_.:-]")]
TagKey = Annotated[str, Meta(pattern=TAG_KEY_PATTERN, description="1-64 of [A-Za-z0-9_.:-]")]
TagValue = Annotated[str, Meta(max_length=256)]
Tags = Annotated[dict[TagKey, TagValue], Meta(max_length=MAX_TAGS)]
Note = Annotated[str, Meta(max_length=4096)]


class Command(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type",
              omit_defaults=True):
    """Base of user commands. Strict: an unknown field is an error that names it. Fields at
    their default are not written, so a trainer of the previous release (strict too) still
    takes every command that does not use a field it lacks (a rolling upgrade)."""


class TrainCommand(Command, tag="train", kw_only=True, frozen=True):
    """Start a training job. Sent to `<prefix>.cmd.train.<pool>`.

    Give exactly one of `strategy` (a strategy name the trainers know) or `strategy_yaml` (the
    whole strategy file inline). Without `job_id` the job id is the Nats-Msg-Id (minus
    `train:`) or `job-<stream seq>`."""

    symbols: Annotated[tuple[Symbol, ...], Meta(min_length=1, max_length=64)]
    timeframes: Annotated[tuple[Timeframe, ...], Meta(min_length=1, max_length=8)]
    job_id: JobId | None = None
    strategy: StrategyName | None = None
    strategy_yaml: Annotated[str, Meta(min_length=1, max_length=MAX_COMMAND_BYTES)] | None = None
    start: IsoDateTime | None = None
    end: IsoDateTime | None = None
    seed: Seed | None = None  # None: the strategy's own training.seed
    epochs: Epochs | None = None  # None: the strategy's own training.epochs
    requested_by: Name = "anonymous"
    pool: PoolName | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    # The job this one re-runs with changes (`trainbus rerun`, POST /jobs/<id>/rerun).
    derived_from: JobId | None = None
    experiment: ExperimentName | None = None
    tags: Tags = {}
    note: Note | None = None
    v: int = 2


class CancelCommand(Command, tag="cancel", kw_only=True, frozen=True):
    """Cancel a queued or running job. Sent to `<prefix>.cmd.cancel.<job_id>`; the subject
    names the job and an empty payload is a valid cancel."""

    reason: Text | None = None
    requested_by: Name = "anonymous"
    v: int = 1


AnyCommand = TrainCommand | CancelCommand


# --- events -------------------------------------------------------------------------------------


class Event(Struct, frozen=True, kw_only=True, tag_field="kind", gc=False):
    """Base of everything that happened to a job. Published to `<prefix>.evt.<job_id>.<kind>`.

    `attempt` is the delivery number of the train command (`num_delivered`) that produced the
    event; events of a superseded attempt are ignored by the projector. `time` is Unix epoch
    seconds."""

    job_id: EventJobId
    attempt: NonNegInt = 0
    worker_id: Name = ""
    time: float
    v: int = 1


class EventHeader(TypedDict):
    """The fields every event of one writer shares, for `SomeEvent(**header, ...)`."""

    job_id: str
    attempt: int
    worker_id: str
    time: float


class ModelRef(Struct, frozen=True, kw_only=True, gc=False):
    """Where a trained model lives: version in the model storage and the object store copy."""

    strategy: str
    version: str
    local_path: str | None = None
    object_name: str | None = None
    sha256: str | None = None  # of the object (the archive bytes)
    weights_sha256: str | None = None  # of the weights themselves (format-independent)


class AcceptedEvent(Event, tag="accepted", kw_only=True, frozen=True):
    """A worker claimed the job (fenced: first event of its attempt)."""

    worker_kind: WorkerKind
    host: Name = ""
    pool: PoolName = "any"
    device: Name = "cpu"
    capabilities: dict[str, Any] = {}
    seed: int | None = None  # the seed this attempt trains with (the command's or the strategy's)
    # Strategy keys accepted but ignored, each "path: what and why" (libs/pipeline/strategy).
    warnings: list[Text] = []


class RejectedEvent(Event, tag="rejected", kw_only=True, frozen=True):
    """The train command cannot run: malformed, invalid, or unknown to the trainers.

    `command_seq` is the stream sequence of the rejected train command when known; the
    projector applies a rejection only to the job that command created."""

    reason: Text
    field: str | None = None
    category: RejectCategory = "invalid"
    command_seq: int | None = None


class PhaseEvent(Event, tag="phase", kw_only=True, frozen=True):
    """The pipeline entered a named phase (loading, features, training, evaluating, saving).
    In the `walk_forward` phase, one per finished epoch of a fold: which fold of how many, and
    the fold's epoch."""

    phase: Name
    fold: NonNegInt | None = None
    folds: NonNegInt | None = None
    epoch: NonNegInt | None = None
    total_epochs: NonNegInt | None = None


class ProgressEvent(Event, tag="progress", kw_only=True, frozen=True):
    """Within-epoch progress, throttled by time. v2: `percent` is 0-100 and the ETA is
    `eta_seconds` (v1 had a 0-1 `fraction` and `eta`)."""

    epoch: NonNegInt
    total_epochs: NonNegInt
    batch: NonNegInt = 0
    total_batches: NonNegInt = 0
    percent: Percent = 0.0
    train_loss: float | None = None
    train_accuracy: float | None = None
    eta_seconds: Seconds | None = None
    v: int = 2


class EpochEvent(Event, tag="epoch", kw_only=True, frozen=True):
    """One finished epoch (always sent, never throttled)."""

    epoch: NonNegInt
    total_epochs: NonNegInt
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    duration: Seconds = 0.0


class CheckpointEvent(Event, tag="checkpoint", kw_only=True, frozen=True):
    """A resumable checkpoint was stored in the object store."""

    epoch: NonNegInt
    object_name: str


class CancelledEvent(Event, tag="cancelled", kw_only=True, frozen=True):
    """The worker stopped the job because of a cancel command."""

    reason: Text | None = None


class CompletedEvent(Event, tag="completed", kw_only=True, frozen=True):
    """Training finished and the model was saved."""

    model: ModelRef
    test_metrics: dict[str, float | None] = {}
    best_epoch: int | None = None
    # What the researcher must know before trusting the model (a diverged loss, no edge over
    # the baselines): also in the model's metrics.json.
    warnings: list[Text] = []


class FailedEvent(Event, tag="failed", kw_only=True, frozen=True):
    """The job gave up. Terminal: the worker sends it only when it will not retry (bad input,
    a code error, or the last delivery)."""

    reason: Text
    category: FailureCategory
    retryable: bool = False
    # A `code` failure's traceback (libs/events/worker/failure_detail.py): the frames as
    # `file:line function` and the exception's type and message, innermost last; no source
    # lines, no locals, trimmed. Empty for the other categories.
    traceback: Annotated[list[Text], Meta(max_length=64)] = []


# The `worker_id` of every OperatorFailedEvent: no worker is called that (heartbeat keys and
# the fold's claimant check compare ids), and it says at a glance who ended the job.
OPERATOR_WORKER_ID: Final = "operator"


class OperatorFailedEvent(Event, tag="operator_failed", kw_only=True, frozen=True):
    """An operator ended a job that no live worker holds (`trainbus jobs fail`, POST
    `/api/v1/jobs/{id}/fail`): terminal, the job becomes `failed` with error category
    "operator". Not a worker's event: `worker_id` is always "operator" (`OPERATOR_WORKER_ID`)
    and the fold accepts it from no claimant, on a job that is not terminal yet. Its subject
    `<prefix>.evt.<job>.operator_failed` is its own, so server permissions can keep it from the
    trainers. `attempt` is the job's attempt when it was ended; `held_by` the live worker that
    still listed the job when an operator forced it (else None)."""

    reason: Text
    by: Name = "operator"
    forced: bool = False
    held_by: Name | None = None


class ReleasedEvent(Event, tag="released", kw_only=True, frozen=True):
    """The claimant handed the job back without ending it (a drain at shutdown), after its
    last checkpoint and before the `nak`: the fold counts it in `JobState.handed_back` and
    the job is queued again, so the next delivery does not count against the attempts
    (docs/reliability.md, "A drain does not spend an attempt"). `checkpoint` is the object
    the next attempt resumes from (None: it starts over)."""

    reason: Text = "drain"
    checkpoint: str | None = None


class ResumedEvent(Event, tag="resumed", kw_only=True, frozen=True):
    """A new attempt continues from a checkpoint instead of starting over."""

    from_epoch: NonNegInt
    checkpoint: str


class AnnotatedEvent(Event, tag="annotated", kw_only=True, frozen=True):
    """A person organised a job (`trainbus jobs annotate`, POST /api/v1/jobs/<id>/annotations):
    `tags` set (or overwrite) those keys, `untag` removes keys, `note` replaces the note ("" clears
    it; None leaves it), `experiment` moves the job ("" clears it; None leaves it). Not a
    worker's event and no part of the training outcome: the fold applies it at any status,
    finished jobs included, from anyone allowed to publish it (the client role; trainers are
    denied it). `worker_id` is empty, `attempt` 0; `by` says who."""

    tags: Tags = {}
    untag: Annotated[list[TagKey], Meta(max_length=MAX_TAGS)] = []
    note: Note | None = None
    experiment: Annotated[str, Meta(max_length=128)] | None = None
    by: Name = "anonymous"


AnyEvent = (
    AcceptedEvent
    | RejectedEvent
    | PhaseEvent
    | ProgressEvent
    | EpochEvent
    | CheckpointEvent
    | CancelledEvent
    | CompletedEvent
    | FailedEvent
    | ResumedEvent
    | OperatorFailedEvent
    | ReleasedEvent
    | AnnotatedEvent
)
EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    AcceptedEvent,
    RejectedEvent,
    PhaseEvent,
    ProgressEvent,
    EpochEvent,
    CheckpointEvent,
    CancelledEvent,
    CompletedEvent,
    FailedEvent,
    ResumedEvent,
    OperatorFailedEvent,
    ReleasedEvent,
    AnnotatedEvent,
)
COMMAND_TYPES: Final[tuple[type[Command], ...]] = (TrainCommand, CancelCommand)
EVENT_KINDS: Final[dict[str, type[Event]]] = {
    t.__struct_config__.tag: t for t in EVENT_TYPES  # type: ignore[misc]
}


def tag_of(cls: type[Struct]) -> str:
    return str(cls.__struct_config__.tag)


def current_version(cls: type[Struct]) -> int:
    """The `v` a writer of this code stamps on `cls`."""
    (version,) = (f.default for f in msgspec.structs.fields(cls) if f.name == "v")
    return int(version)


_CURRENT_VERSION: Final[dict[type[Struct], int]] = {
    t: current_version(t) for t in (*EVENT_TYPES, *COMMAND_TYPES)
}


# --- model registry events ----------------------------------------------------------------------

AliasName = Annotated[str, Meta(pattern=ALIAS_PATTERN, description="1-32 of [a-z0-9_-], "
                                "starting with a letter; `latest` is reserved")]
ModelVersion = Annotated[str, Meta(pattern=r"^[0-9]+[a-z]_v[1-9][0-9]{0,8}$(?!\n)",
                                   description="<timeframe>_v<N>", examples=["1h_v3"])]


class RegistryEvent(Struct, frozen=True, kw_only=True, tag_field="kind", gc=False):
    """Base of a change to the model registry. Published to `<prefix>.alias.<strategy>.<alias>`
    (one subject per alias: its last message is the alias's state; writers fence on it), so
    the log records who pointed which alias where, and the audit replays it. Not a job event:
    the projector and the job fold ignore these. `time` is Unix epoch seconds."""

    strategy: StrategyName
    alias: AliasName
    by: Name = "anonymous"
    time: float
    reason: Text | None = None
    v: int = 1


class AliasSetEvent(RegistryEvent, tag="alias_set", kw_only=True, frozen=True):
    """`<strategy>@<alias>` now points at `version`; `previous` is the version it pointed at
    before (None for a new alias). `expires_at` (epoch seconds): loading the model through
    this alias is refused after it."""

    version: ModelVersion
    previous: str | None = None
    expires_at: float | None = None
    # The job that trained it: two machines without a shared disk can both make `1h_v1`.
    job_id: JobId | None = None


class AliasRemovedEvent(RegistryEvent, tag="alias_removed", kw_only=True, frozen=True):
    """`<strategy>@<alias>` was removed; `previous` is the version it pointed at."""

    previous: str | None = None


AnyRegistryEvent = AliasSetEvent | AliasRemovedEvent
REGISTRY_EVENT_TYPES: Final[tuple[type[RegistryEvent], ...]] = (AliasSetEvent, AliasRemovedEvent)
_registry_decoder: Final = msgspec.json.Decoder(AnyRegistryEvent)


def decode_registry_event(raw: bytes) -> AnyRegistryEvent:
    """Decode a stored registry event (lenient: unknown fields are skipped). Raises
    msgspec.DecodeError / msgspec.ValidationError when it is not one."""
    return decode_untrusted(_registry_decoder, raw, max_bytes=MAX_MESSAGE_BYTES,
                            max_depth=MAX_EVENT_DEPTH)


# --- upcasting: the one place that knows old versions -----------------------------------------


def _progress_v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """v1 progress: `fraction` in 0..1 and `eta`; v2: `percent` in 0..100 and `eta_seconds`."""
    out = {k: val for k, val in d.items() if k not in ("fraction", "eta")}
    fraction = d.get("fraction")
    if isinstance(fraction, int | float):
        out["percent"] = round(max(0.0, min(1.0, float(fraction))) * 100.0, 6)
    if "eta" in d:
        out["eta_seconds"] = d["eta"]
    out["v"] = 2
    return out


def _train_v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """v1 train commands named one `symbol` and one `timeframe`; v2 takes lists."""
    out = {k: val for k, val in d.items() if k not in ("symbol", "timeframe")}
    if "symbol" in d:
        out["symbols"] = [d["symbol"]]
    if "timeframe" in d:
        out["timeframes"] = [d["timeframe"]]
    out["v"] = 2
    return out


# (tag, version) -> function returning the next version's payload.
_UPCASTERS: Final[dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    ("progress", 1): _progress_v1_to_v2,
    ("train", 1): _train_v1_to_v2,
}


def _upcast(tag: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Bring an old payload to the current version; None when there is nothing to upcast."""
    version = payload.get("v")
    if not isinstance(version, int) or (tag, version) not in _UPCASTERS:
        return None
    while isinstance(version, int) and (tag, version) in _UPCASTERS:
        payload = _UPCASTERS[(tag, version)](payload)
        version = payload.get("v")
    return payload


# --- untrusted bytes: size and depth limits --------------------------------------------------

T = TypeVar("T")
# A JSON string (escapes included): removed before counting brackets, which inside strings
# are text. Unrolled loop form: linear, no backtracking.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR: Final = re.compile(rb"\[\]|\{\}")


class UnsafePayload(msgspec.DecodeError):
    """Bytes refused before decoding. A msgspec.DecodeError, so every caller that already
    handles undecodable input handles these too."""


class PayloadTooLarge(UnsafePayload):
    """The payload is over its size limit."""


class PayloadTooDeep(UnsafePayload):
    """The JSON nests arrays/objects deeper than the limit."""


def nested_deeper_than(raw: bytes, max_depth: int) -> bool:
    """Whether the JSON in `raw` nests arrays/objects more than `max_depth` levels. Unbalanced
    brackets (invalid JSON) are left for the decoder to report."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # not enough brackets to be that deep: the common case, two C scans
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    # Each round (one pass) removes the innermost pairs: depth d is gone after d rounds.
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    return _EMPTY_PAIR.search(brackets) is not None  # a level more: deeper than the limit


def check_untrusted(raw: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse `raw` (PayloadTooLarge / PayloadTooDeep) when it is over either limit."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(raw)} bytes; the limit is {max_bytes}")
    # Depth d needs at least 2d bytes: short payloads (most events) skip the scan.
    if len(raw) > 2 * max_depth and nested_deeper_than(raw, max_depth):
        raise PayloadTooDeep(f"JSON nested deeper than {max_depth} levels")


def decode_untrusted(
    decoder: msgspec.json.Decoder[T], raw: bytes, *, max_bytes: int,
    max_depth: int = MAX_JSON_DEPTH,
) -> T:
    """`decoder.decode(raw)` for bytes from outside: over a limit raises an `UnsafePayload`,
    and so does a RecursionError (never an error callers of msgspec expect), so poison input
    is an ordinary decode error everywhere."""
    check_untrusted(raw, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return decoder.decode(raw)
    except RecursionError:
        raise PayloadTooDeep("JSON nested too deeply to decode") from None


def decode_stored(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    """A KV value or stored message (job state, checkpoint, heartbeat, alias record): anyone
    who could write it could have written poison, so it is decoded as untrusted bytes."""
    return decode_untrusted(decoder, raw, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_EVENT_DEPTH)


# --- encoding and decoding ---------------------------------------------------------------

_encoder: Final = msgspec.json.Encoder()
_event_decoder: Final = msgspec.json.Decoder(AnyEvent)
_train_decoder: Final = msgspec.json.Decoder(TrainCommand)
_cancel_decoder: Final = msgspec.json.Decoder(CancelCommand)
_dict_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def encode(message: Struct) -> bytes:
    """JSON bytes of a command, event or state."""
    return _encoder.encode(message)


def decode_event(raw: bytes) -> AnyEvent:
    """Decode a stored event, upcasting older versions. Raises msgspec.DecodeError /
    msgspec.ValidationError when the payload is not an event of any known version."""
    try:
        event = decode_untrusted(_event_decoder, raw, max_bytes=MAX_MESSAGE_BYTES,
                                 max_depth=MAX_EVENT_DEPTH)
    except msgspec.ValidationError:
        # Maybe an old version whose fields no longer validate: upcast, else re-raise.
        upcast = _upcast_raw(raw, tag_field="kind")
        if upcast is None:
            raise
        return msgspec.convert(upcast, AnyEvent)
    if event.v < _CURRENT_VERSION[type(event)]:
        upcast = _upcast_raw(raw, tag_field="kind")
        if upcast is not None:
            return msgspec.convert(upcast, AnyEvent)
    return event


def decode_train_body(raw: bytes) -> TrainCommand:
    """Strictly decode a train command body (upcasting v1). Raises msgspec errors; callers
    wanting a `CommandRejected` use `libs.events.commands.validate_train_command`."""
    try:
        command = decode_untrusted(_train_decoder, raw, max_bytes=MAX_COMMAND_BYTES)
    except msgspec.ValidationError:
        upcast = _upcast_raw(raw, tag_field="type", tag="train")
        if upcast is None:
            raise
        return msgspec.convert(upcast, TrainCommand)
    if command.v < _CURRENT_VERSION[TrainCommand]:
        upcast = _upcast_raw(raw, tag_field="type", tag="train")
        if upcast is not None:
            return msgspec.convert(upcast, TrainCommand)
    return command


def decode_cancel_body(raw: bytes) -> CancelCommand:
    """Strictly decode a cancel body; empty (or whitespace) is a plain cancel."""
    if not raw.strip():
        return CancelCommand()
    return decode_untrusted(_cancel_decoder, raw, max_bytes=MAX_COMMAND_BYTES)


def _upcast_raw(raw: bytes, *, tag_field: str, tag: str | None = None) -> dict[str, Any] | None:
    try:  # the limits were checked by the first decode; this only catches its RecursionError
        payload = decode_untrusted(_dict_decoder, raw, max_bytes=MAX_MESSAGE_BYTES,
                                   max_depth=MAX_EVENT_DEPTH)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    found = payload.get(tag_field, tag)
    if not isinstance(found, str):
        return None
    return _upcast(found, payload)
