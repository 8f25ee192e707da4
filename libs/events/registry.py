"""The model registry: aliases over the catalog's models, resolving references, deleting and
pruning under one retention rule, the leaderboard and the comparison, for both edges.

Aliases name a version of a strategy (`rsi_macd_zigzag@champion` -> `1h_v3`). Any name of
1-32 of `[a-z0-9_-]` starting with a letter is one; `latest` is reserved and always means the
strategy's newest version (computed, never stored). Every change is an event on the log, on
its alias's own subject `<prefix>.alias.<strategy>.<alias>` (`alias_set`, `alias_removed`;
libs/events/schema.py), and the alias itself lives in KV `<prefix>_aliases` under
`<strategy>.<alias>`:

- writing: the change is published fenced on its alias's subject (the expected last sequence
  is the one read just before), so two writers of one alias are serialised by the server and
  the log's last message on the subject is the alias's state; then the KV entry is brought to
  that last message (compare-and-set on the entry's revision, retried), so a slower writer
  never puts an older change over a newer one;
- reading (`get_alias`, `list_aliases`, `resolve`) uses the KV; the audit
  (libs/events/audit.py) replays the log's alias events and diffs them against it.

References (`resolve`): `strategy/1h_v3`, `strategy/<job_id>`, `strategy/latest`,
`strategy@latest`, `strategy@<alias>` (an alias needs NATS; the rest work from the local
models directory alone). An alias may expire (`expires_at`): loading through it is refused
after that (`check_not_expired`; `resolve` checks by default).

Retention: a version an alias points to is never deleted (demote it first), nor a model a job
in the projection names as its model (a completed job's `model`: the job history keeps
pointing at it). Deleting removes the local version directory (the `<tf>_latest` pointer
follows) and the model's object-store copy together. `prune` keeps the newest N versions per
strategy and timeframe plus everything protected, and also removes model objects no completed
job names (a finished job's leftover attempts).

Trust (libs/events/trust.py): when the operator's trusted-workers bucket holds a key, a model a
job made is listed, resolved (so downloaded, served by the predictor, promoted) only when that
job's claim was signed by a trusted key; `resolve_ref` raises ModelUntrusted otherwise, naming
why, and `latest` is the newest of the trusted ones. Deleting is never refused for it (a
forgery must be removable). Models only on this machine's disk (no job: `trainbus pipeline
run`) are outside it: no event vouches for them and none is needed, nobody published them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, NamedTuple

import msgspec
import nats.errors
import nats.js.errors
from msgspec import Meta, Struct
from nats.js.api import DeliverPolicy

from libs.events.bus import publish
from libs.events.catalog import (
    Comparison,
    ModelCatalog,
    ModelDetail,
    ModelInfo,
    SortOrder,
    compare_models,
    sort_models,
    version_number,
)
from libs.events.errors import (
    AliasNotFound,
    BusUnavailable,
    FencedOut,
    InvalidRequest,
    ModelAmbiguous,
    ModelExpired,
    ModelInUse,
    ModelNotFound,
    ModelUntrusted,
    PublishError,
    ReplayError,
    SetupMissing,
)
from libs.events.follow import read_job_state, state_folded_from_log
from libs.events.log import reply_fields
from libs.events.models import MODELS_PREFIX, delete_object
from libs.events.projector import load_projection, read_bucket
from libs.events.schema import (
    AliasRemovedEvent,
    AliasSetEvent,
    AnyRegistryEvent,
    decode_registry_event,
    decode_stored,
    encode,
)
from libs.events.subjects import (
    LATEST_ALIAS,
    alias_msg_id,
    is_valid_job_id,
    validate_alias,
    validate_strategy,
)
from libs.events.trust import Trust, read_trust, untrusted_reason

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.kv import KeyValue

    from libs.events.bus import Bus
    from libs.events.fold import JobState

__all__ = [
    "AliasChange", "AliasRecord", "AliasRequest", "Deletion", "Kept", "PrunePlan", "ResolvedModel",
    "check_not_expired", "check_trusted", "compare", "delete_model", "get_alias", "list_aliases",
    "list_models", "model_detail", "parse_duration", "partition_trusted", "prune",
    "read_alias_events", "remove_alias", "replay_aliases", "resolve", "resolve_ref", "set_alias",
    "split_ref", "sync_alias",
]

_WRITE_ROUNDS: Final = 8
_TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "rejected"})


class AliasRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Point an alias at a version (PUT /api/v1/models/<strategy>/aliases/<alias>): `version`
    is `<tf>_v<N>`, `latest` or the id of the job that trained it; `expires_after` seconds
    (null: never)."""

    version: Annotated[str, Meta(min_length=1, max_length=140)]
    expires_after: Annotated[float, Meta(gt=0)] | None = None
    reason: Annotated[str, Meta(max_length=4096)] | None = None
    requested_by: Annotated[str, Meta(min_length=1, max_length=128)] = "api"


class AliasRecord(Struct, frozen=True, kw_only=True):
    """KV `<prefix>_aliases` / `<strategy>.<alias>`: where the alias points. Times are Unix
    epoch seconds; `seq` is the stream sequence of the `alias_set` event it reflects."""

    strategy: str
    alias: str
    version: str
    set_by: str
    set_at: float
    expires_at: float | None = None
    reason: str | None = None
    seq: int = 0
    job_id: str | None = None  # the job that trained the version (None: set before it was kept)

    @property
    def ref(self) -> str:
        return f"{self.strategy}@{self.alias}"

    def expired(self, now: float | None = None) -> bool:
        moment = time.time() if now is None else now
        return self.expires_at is not None and moment >= self.expires_at


_record_decoder: Final = msgspec.json.Decoder(AliasRecord)


def _key(strategy: str, alias: str) -> str:
    return f"{strategy}.{alias}"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00",
                                                                                     "Z")


# --- durations ----------------------------------------------------------------------------------

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds of `30d`, `12h`, `90m`, `45s`, `2w` or a plain number of seconds (> 0)."""
    match = _DURATION.match(text.lower())
    if match is None or float(match[1]) <= 0:
        raise InvalidRequest(
            f"expires_after {text[:40]!r}: use a positive number of seconds or a duration "
            "like 30d, 12h, 90m, 2w", field="expires_after",
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _check_expires_after(expires_after: float | None) -> float | None:
    if expires_after is None:
        return None
    if not math.isfinite(expires_after) or expires_after <= 0:
        raise InvalidRequest("expires_after must be a positive number of seconds (or null)",
                             field="expires_after")
    return float(expires_after)


# --- expiry -------------------------------------------------------------------------------------


def check_not_expired(record: AliasRecord, *, now: float | None = None) -> None:
    """Raise ModelExpired when loading through `record` must be refused (it expired)."""
    if record.expired(now):
        assert record.expires_at is not None
        raise ModelExpired(
            f"model {record.ref} ({record.version}) expired at {_iso(record.expires_at)}: "
            "promote a fresh one", field="alias",
        )


# --- reading aliases ----------------------------------------------------------------------------


def _kv(bus: Bus) -> KeyValue:
    if bus.aliases is None:
        raise SetupMissing(
            f"KV bucket {bus.names.aliases_bucket} does not exist (a setup from before the "
            "model registry): start the backend once, it creates it"
        )
    return bus.aliases


async def _kv_entry(kv: KeyValue, key: str) -> tuple[AliasRecord | None, int]:
    """(record, revision) of a key; revision 0 when it never existed, the delete marker's
    revision when it was removed."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError as exc:
        marker = getattr(exc, "entry", None)
        return None, int(getattr(marker, "revision", 0) or 0)
    try:
        return decode_stored(_record_decoder, entry.value or b""), int(entry.revision or 0)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, int(entry.revision or 0)


async def get_alias(bus: Bus, strategy: str, alias: str) -> AliasRecord:
    """Where `<strategy>@<alias>` points. Raises AliasNotFound."""
    validate_strategy(strategy)
    validate_alias(alias)
    if bus.aliases is None:
        raise AliasNotFound(f"no alias {strategy}@{alias}", field="alias")
    record, _ = await _kv_entry(bus.aliases, _key(strategy, alias))
    if record is None:
        raise AliasNotFound(f"no alias {strategy}@{alias}", field="alias")
    return record


async def list_aliases(bus: Bus, strategy: str | None = None) -> list[AliasRecord]:
    """Every stored alias (of one strategy), by strategy then alias name."""
    if strategy is not None:
        validate_strategy(strategy)
    if bus.aliases is None:
        return []
    records = []
    for raw in (await read_bucket(bus.js, bus.names.aliases_bucket)).values():
        try:
            record = decode_stored(_record_decoder, raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if strategy is None or record.strategy == strategy:
            records.append(record)
    return sorted(records, key=lambda r: (r.strategy, r.alias))


def _aliases_by_model(records: Sequence[AliasRecord]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for record in records:
        out.setdefault((record.strategy, record.version), []).append(record.alias)
    return out


# --- writing aliases ----------------------------------------------------------------------------


async def _last_alias_event(bus: Bus, subject: str) -> tuple[int, AnyRegistryEvent | None]:
    """(stream seq, event) of the last message on an alias's subject; (0, None) when the log
    has none (never set, or aged out of the stream)."""
    try:
        last = await bus.js.get_last_msg(bus.names.stream, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return 0, None
    seq = int(last.seq or 0)
    try:
        return seq, decode_registry_event(last.data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return seq, None


def _record_of(event: AliasSetEvent, seq: int) -> AliasRecord:
    return AliasRecord(strategy=event.strategy, alias=event.alias, version=event.version,
                       set_by=event.by, set_at=event.time, expires_at=event.expires_at,
                       reason=event.reason, seq=seq, job_id=event.job_id)


async def sync_alias(bus: Bus, strategy: str, alias: str) -> AliasRecord | None:
    """Bring KV `<strategy>.<alias>` to the log's last change of the alias and return it.
    Compare-and-set on the entry's revision: whoever runs this last leaves the newest change.
    When the log has nothing for the alias (it aged out of the stream), the KV is kept."""
    kv = _kv(bus)
    key, subject = _key(strategy, alias), bus.names.alias_subject(strategy, alias)
    for _ in range(_WRITE_ROUNDS):
        current, revision = await _kv_entry(kv, key)
        seq, event = await _last_alias_event(bus, subject)  # read after the KV: never older
        if event is None or (current is not None and current.seq > seq):
            return current
        try:
            if isinstance(event, AliasSetEvent):
                record = _record_of(event, seq)
                if current != record:  # behind the log, or written by hand
                    await kv.update(key, encode(record), last=revision)
                return record
            if current is not None:
                await kv.delete(key, last=revision)
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):  # delete(last=) reports it as a plain APIError
                continue
            raise
    raise PublishError(f"alias {strategy}@{alias}: KV {bus.names.aliases_bucket} kept changing "
                       "under this writer; try again")


async def _publish_change(bus: Bus, strategy: str, alias: str,
                          make: type[AliasSetEvent] | type[AliasRemovedEvent], *,
                          expires_after: float | None = None,
                          **fields: object) -> tuple[AnyRegistryEvent, int, AliasRecord | None]:
    """Publish one change fenced on the alias's subject; returns (event, seq, the record the
    change replaced). Raises AliasNotFound when removing an alias that is not set."""
    subject = bus.names.alias_subject(strategy, alias)
    nonce = secrets.token_hex(6)
    for _ in range(_WRITE_ROUNDS):
        last_seq, last = await _last_alias_event(bus, subject)
        before = (_record_of(last, last_seq) if isinstance(last, AliasSetEvent)
                  else None if last is not None
                  else (await _kv_entry(_kv(bus), _key(strategy, alias)))[0])
        if make is AliasRemovedEvent and before is None:
            raise AliasNotFound(f"no alias {strategy}@{alias}", field="alias")
        now = time.time()
        if expires_after is not None:
            fields["expires_at"] = now + expires_after
        event = make(strategy=strategy, alias=alias, time=now,
                     previous=before.version if before else None, **fields)  # type: ignore[arg-type]
        try:
            receipt = await publish(bus, subject, encode(event),
                                    msg_id=alias_msg_id(strategy, alias, last_seq, nonce),
                                    expected_last_subject_seq=last_seq)
        except FencedOut:
            continue  # someone changed the alias since we read it: read again
        return event, receipt.seq, before
    raise PublishError(f"alias {strategy}@{alias} kept changing under this writer; try again")


async def set_alias(
    bus: Bus,
    strategy: str,
    alias: str,
    version: str,
    *,
    by: str,
    expires_after: float | None,
    reason: str | None,
    models_dir: Path | None = None,
) -> AliasRecord:
    """Point `<strategy>@<alias>` at `version` (`<tf>_v<N>`, `latest`, or the id of the job
    that trained it), recorded on the log and in KV. Raises InvalidAlias (bad name, `latest`),
    ModelNotFound (no such model on disk, in the object store or among completed jobs)."""
    validate_strategy(strategy)
    validate_alias(alias)
    seconds = _check_expires_after(expires_after)
    _kv(bus)
    catalog = ModelCatalog(bus, models_dir)
    keys = _Keys(bus)
    info = (await _latest(bus, catalog, strategy, keys) if version == LATEST_ALIAS
            else await catalog.find(strategy, version))
    await check_trusted(bus, info, keys)
    await _check_readable(bus, info)
    event, seq, _ = await _publish_change(
        bus, strategy, alias, AliasSetEvent, expires_after=seconds, version=info.version,
        job_id=info.job_id, by=by, reason=reason,
    )
    await sync_alias(bus, strategy, alias)
    assert isinstance(event, AliasSetEvent)
    return _record_of(event, seq)


async def remove_alias(bus: Bus, strategy: str, alias: str, *, by: str,
                       reason: str | None = None) -> AliasRecord:
    """Remove `<strategy>@<alias>` (recorded on the log); returns what it pointed at.
    Raises AliasNotFound."""
    validate_strategy(strategy)
    validate_alias(alias)
    _kv(bus)
    _, _, before = await _publish_change(bus, strategy, alias, AliasRemovedEvent, by=by,
                                         reason=reason)
    await sync_alias(bus, strategy, alias)
    assert before is not None
    return before


async def _check_readable(bus: Bus | None, info: ModelInfo) -> None:
    """A model with no local copy must still be in the object store."""
    if info.local or bus is None:
        return
    if not info.object_name or not await _object_exists(bus, info.object_name):
        raise ModelNotFound(f"model {info.name} is neither on disk here nor in the object "
                            "store", field="version")


async def _object_exists(bus: Bus, name: str) -> bool:
    try:
        store = await bus.js.object_store(bus.names.models_bucket)
        info = await store.get_info(name)
    except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
        return False
    return not info.deleted


# --- resolving references -----------------------------------------------------------------------


class ResolvedModel(NamedTuple):
    """What a reference names: the model, and the alias it went through (None for a version,
    a job id or `latest`)."""

    strategy: str
    version: str
    model: ModelInfo
    alias: AliasRecord | None


def split_ref(ref: str) -> tuple[str, str, bool]:
    """(strategy, version-or-alias, is_alias) of `strategy/<version>` or `strategy@<alias>`."""
    text = ref.strip()
    at, slash = text.find("@"), text.find("/")
    if at > 0 and (slash < 0 or at < slash):
        strategy, name, is_alias = text[:at], text[at + 1:], True
    elif slash > 0:
        strategy, name, is_alias = text[:slash], text[slash + 1:], False
    else:
        raise InvalidRequest(
            f"model {ref[:80]!r}: use strategy/<tf>_v<N>, strategy/latest or strategy@alias",
            field="model",
        )
    validate_strategy(strategy)
    if is_alias:
        validate_alias(name, allow_latest=True)
    elif not name or "/" in name:
        raise InvalidRequest(f"model {ref[:80]!r}: no version after '/'", field="model")
    return strategy, name, is_alias


async def resolve_ref(bus: Bus | None, ref: str, models_dir: Path | None = None, *,
                      check_expiry: bool = True, check_trust: bool = True) -> ResolvedModel:
    """The model a reference names (see the module docstring). Raises InvalidRequest (bad
    reference), InvalidAlias, AliasNotFound, ModelNotFound, ModelExpired (an expired alias,
    unless `check_expiry` is off), BusUnavailable (an alias without NATS), ModelUntrusted (trust
    is configured and no trusted key signed the model's job; unless `check_trust` is off)."""
    keys = _Keys(bus)  # read once, when first needed: the lookup and the check see the same
    resolved = await _resolve_ref(bus, ref, models_dir, keys, check_expiry=check_expiry)
    if check_trust:
        await check_trusted(bus, resolved.model, keys)
    return resolved


async def _resolve_ref(bus: Bus | None, ref: str, models_dir: Path | None, keys: _Keys, *,
                       check_expiry: bool) -> ResolvedModel:
    strategy, name, is_alias = split_ref(ref)
    catalog = ModelCatalog(bus, models_dir)
    if name == LATEST_ALIAS:
        info = await _latest(bus, catalog, strategy, keys)
        return ResolvedModel(strategy, info.version, info, None)
    if not is_alias:
        info = await _find(bus, catalog, strategy, name, keys)
        return ResolvedModel(strategy, info.version, info, None)
    if bus is None:
        raise BusUnavailable(f"{ref}: resolving an alias needs NATS")
    record = await get_alias(bus, strategy, name)
    if check_expiry:
        check_not_expired(record)
    try:
        info = await _find(bus, catalog, strategy, record.job_id or record.version, keys)
    except ModelNotFound:
        raise ModelNotFound(f"{ref} points at {record.version}, which is gone",
                            field="version") from None
    return ResolvedModel(strategy, info.version, info, record)


async def _find(bus: Bus | None, catalog: ModelCatalog, strategy: str, version: str,
                keys: _Keys) -> ModelInfo:
    """`catalog.find`, except that while trust is enforced an ambiguous version is looked up
    among the trusted models only: an untrusted job that made the same `<tf>_v<N>` must not
    make the real one ambiguous. An untrusted model named alone is still found (and refused,
    403, by the caller's trust check)."""
    try:
        return await catalog.find(strategy, version)
    except ModelAmbiguous as ambiguous:
        trust = await keys()
        if not trust.enforced:
            raise
        try:
            return await _TrustedCatalog(bus, catalog.models_dir, trust).find(strategy, version)
        except ModelNotFound:  # none of them trusted: still ambiguous
            raise ambiguous from None


async def resolve(bus: Bus | None, ref: str, models_dir: Path | None = None, *,
                  check_expiry: bool = True) -> tuple[str, str]:
    """(strategy, version) of `strategy/1h_v3`, `strategy/<job_id>`, `strategy/latest`,
    `strategy@latest` or `strategy@alias`; an expired alias raises ModelExpired (pass
    `check_expiry=False` to only look)."""
    resolved = await resolve_ref(bus, ref, models_dir, check_expiry=check_expiry)
    return resolved.strategy, resolved.version


# --- trust: only models a trusted key vouches for -----------------------------------------------


async def _trusted(bus: Bus | None) -> Trust:
    return await read_trust(bus) if bus is not None else Trust()


class _Keys:
    """The trusted keys for one resolve: read at most once, and only when something asks."""

    def __init__(self, bus: Bus | None) -> None:
        self._bus = bus
        self._trust: Trust | None = None

    async def __call__(self) -> Trust:
        if self._trust is None:
            self._trust = await _trusted(self._bus)
        return self._trust


async def _job_states(bus: Bus) -> dict[str, JobState]:
    return (await load_projection(bus.js, bus.names.jobs_bucket)).states


async def _job_state(bus: Bus, job_id: str, states: dict[str, JobState] | None = None
                     ) -> JobState | None:
    """The job as projected, else as its own log folds (a job the projector has not written
    yet: the catalog finds such models too)."""
    if states is not None:
        state = states.get(job_id)
    else:  # one job: one KV get, not the whole projection (every remote predict asks)
        state = await read_job_state(bus, job_id) if is_valid_job_id(job_id) else None
    if state is not None or not is_valid_job_id(job_id):
        return state
    return await state_folded_from_log(bus, job_id)


async def check_trusted(bus: Bus | None, info: ModelInfo, keys: _Keys | None = None) -> None:
    """Raise ModelUntrusted when trust is configured (the keys of `keys`, else read now) and
    the job that made `info` was not claimed under a trusted key (a model only on this disk,
    with no job, is not checked)."""
    if info.job_id is None or bus is None:
        return
    trust = await (keys or _Keys(bus))()
    if not trust.enforced:
        return
    why = untrusted_reason(await _job_state(bus, info.job_id), trust)
    if why is not None:
        raise ModelUntrusted(f"model {info.name}: {why}", field="model")


class _TrustedCatalog(ModelCatalog):
    """The catalog as if only the models a trusted key vouches for existed: what `latest`
    means while trust is configured (a forged newer version must not hide the real one)."""

    def __init__(self, bus: Bus | None, models_dir: Path | None, trust: Trust) -> None:
        super().__init__(bus, models_dir)
        self.trust = trust

    async def models(self, *, strategy: str | None = None) -> list[ModelInfo]:
        models = await super().models(strategy=strategy)
        return (await partition_trusted(self.bus, models, self.trust))[0]


async def _latest(bus: Bus | None, catalog: ModelCatalog, strategy: str, keys: _Keys
                  ) -> ModelInfo:
    trust = await keys()
    if not trust.enforced:
        return await catalog.latest(strategy)
    return await _TrustedCatalog(bus, catalog.models_dir, trust).latest(strategy)


async def partition_trusted(bus: Bus | None, models: Sequence[ModelInfo],
                            trust: Trust | None = None
                            ) -> tuple[list[ModelInfo], list[tuple[ModelInfo, str]]]:
    """(the models that may be listed, the others with why not). All of them when trust
    (`trust`, else read now) is not configured."""
    if trust is None:
        trust = await _trusted(bus)
    if not trust.enforced or bus is None:
        return list(models), []
    states = await _job_states(bus)
    kept: list[ModelInfo] = []
    refused: list[tuple[ModelInfo, str]] = []
    for info in models:
        why = (None if info.job_id is None else
               untrusted_reason(await _job_state(bus, info.job_id, states), trust))
        if why is None:
            kept.append(info)
        else:
            refused.append((info, why))
    return kept, refused


# --- the catalog with aliases: list, detail, compare --------------------------------------------


async def _records(bus: Bus | None, strategy: str | None = None) -> list[AliasRecord]:
    return await list_aliases(bus, strategy) if bus is not None else []


def _with_aliases(info: ModelInfo, by_model: dict[tuple[str, str], list[str]]) -> ModelInfo:
    names = by_model.get((info.strategy, info.version))
    return msgspec.structs.replace(info, aliases=sorted(names)) if names else info


async def list_models(bus: Bus | None, models_dir: Path | None = None, *,
                      strategy: str | None = None, sort: str | None = None,
                      order: SortOrder = "desc",
                      refused: list[tuple[ModelInfo, str]] | None = None) -> list[ModelInfo]:
    """The catalog's models (newest first, or by a headline metric), each with its aliases.
    Without a bus: the local models only, no aliases. With trust configured, only the models
    a trusted key vouches for; the others are appended to `refused` with why, when given."""
    if sort is not None:
        sort_models([], sort, order)  # refuse a bad key before reading anything
    models, hidden = await partition_trusted(
        bus, await ModelCatalog(bus, models_dir).models(strategy=strategy))
    if refused is not None:
        refused.extend(hidden)
    by_model = _aliases_by_model(await _records(bus, strategy))
    models = [_with_aliases(m, by_model) for m in models]
    return sort_models(models, sort, order) if sort is not None else models


async def model_detail(bus: Bus | None, ref: str, models_dir: Path | None = None
                       ) -> ModelDetail:
    """One model (any reference; an expired alias still shows) with its metadata, metrics and
    aliases."""
    resolved = await resolve_ref(bus, ref, models_dir, check_expiry=False)
    return await _detail(bus, ModelCatalog(bus, models_dir), resolved.model)


async def _detail(bus: Bus | None, catalog: ModelCatalog, info: ModelInfo) -> ModelDetail:
    detail = await catalog.get(info.strategy, info.job_id or info.version)
    by_model = _aliases_by_model(await _records(bus, info.strategy))
    return msgspec.structs.replace(detail, model=_with_aliases(detail.model, by_model))


async def compare(bus: Bus | None, refs: Sequence[str], models_dir: Path | None = None
                  ) -> Comparison:
    """The models side by side (see catalog.compare_models), best value per row marked."""
    if len(refs) < 2:
        raise InvalidRequest("compare needs at least two models", field="models")
    if len(refs) > 12:
        raise InvalidRequest("compare takes at most 12 models", field="models")
    catalog = ModelCatalog(bus, models_dir)
    details = []
    for ref in refs:
        resolved = await resolve_ref(bus, ref, models_dir, check_expiry=False)
        details.append(await _detail(bus, catalog, resolved.model))
    return compare_models(list(refs), details)


# --- deleting and pruning -----------------------------------------------------------------------


class Deletion(Struct, frozen=True, kw_only=True):
    """One model that goes (or went): its local directory and/or object-store object."""

    model: str
    local_path: str | None = None
    object_name: str | None = None
    job_id: str | None = None


class Kept(Struct, frozen=True, kw_only=True):
    model: str
    reason: str


class PrunePlan(Struct, frozen=True, kw_only=True):
    """What `prune` deletes (or would, with `dry_run`) and what it keeps beyond the newest N,
    with why; `orphans` are model objects no completed job names."""

    keep: int
    dry_run: bool
    delete: list[Deletion] = []
    kept: list[Kept] = []
    orphans: list[str] = []


class _Protection(NamedTuple):
    aliases: dict[tuple[str, str], list[str]]
    projection: dict[str, JobState]


async def _protection(bus: Bus | None, strategy: str | None) -> _Protection:
    if bus is None:
        raise BusUnavailable("deleting models needs NATS: the aliases and the jobs that name "
                             "a model decide what may go")
    records = await list_aliases(bus, strategy)
    projection = await load_projection(bus.js, bus.names.jobs_bucket) if bus.jobs else None
    return _Protection(_aliases_by_model(records), projection.states if projection else {})


def _why_kept(info: ModelInfo, protection: _Protection) -> str | None:
    aliases = protection.aliases.get((info.strategy, info.version))
    if aliases:
        return f"alias {', '.join(f'{info.strategy}@{a}' for a in sorted(aliases))}"
    if info.job_id is not None:
        return f"the model of job {info.job_id}"
    return None


def _deletion(info: ModelInfo) -> Deletion:
    return Deletion(model=info.name, local_path=info.local_path if info.local else None,
                    object_name=info.object_name, job_id=info.job_id)


async def _apply(bus: Bus, catalog: ModelCatalog, info: ModelInfo) -> None:
    """Object first: when the object store refuses, the local copy stays (both stay in step)."""
    if info.object_name:
        await delete_object(bus, info.object_name)
    await catalog.remove_local(info)


async def delete_model(bus: Bus | None, ref: str, models_dir: Path | None = None, *,
                       dry_run: bool = False) -> Deletion:
    """Delete one model (its local directory and its object-store copy). Raises ModelInUse
    (an alias points at it, or a job names it), ModelNotFound."""
    protection = await _protection(bus, None)
    assert bus is not None
    resolved = await resolve_ref(bus, ref, models_dir, check_expiry=False, check_trust=False)
    why = _why_kept(resolved.model, protection)
    if why is not None:
        hint = ("demote it first (trainbus models demote)" if why.startswith("alias")
                else "the job's history names it")
        raise ModelInUse(f"model {resolved.model.name} is kept: {why}; {hint}", field="model")
    if not dry_run:
        await _apply(bus, ModelCatalog(bus, models_dir), resolved.model)
    return _deletion(resolved.model)


async def prune(bus: Bus | None, models_dir: Path | None = None, *, keep: int,
                strategy: str | None = None, dry_run: bool = False) -> PrunePlan:
    """Keep the newest `keep` versions of each strategy and timeframe, and every protected
    one (aliased, a job's model); delete the rest from disk and the object store, and the
    model objects no completed job names (of finished jobs only)."""
    if keep < 1:
        raise InvalidRequest("keep must be at least 1", field="keep")
    if strategy is not None:
        validate_strategy(strategy)
    protection = await _protection(bus, strategy)
    assert bus is not None
    catalog = ModelCatalog(bus, models_dir)
    models = await catalog.models(strategy=strategy)
    groups: dict[tuple[str, str | None], list[ModelInfo]] = {}
    for info in models:
        groups.setdefault((info.strategy, info.timeframe), []).append(info)
    doomed: list[ModelInfo] = []
    kept: list[Kept] = []
    for infos in groups.values():
        newest = sorted({version_number(i.version) for i in infos}, reverse=True)[:keep]
        for info in sorted(infos, key=lambda i: -version_number(i.version)):
            if version_number(info.version) in newest:
                continue
            why = _why_kept(info, protection)
            if why is not None:
                kept.append(Kept(model=info.name, reason=why))
            else:
                doomed.append(info)
    orphans = await _orphan_objects(bus, protection.projection, strategy)
    if not dry_run:
        for info in doomed:
            await _apply(bus, catalog, info)
        for name in orphans:
            await delete_object(bus, name)
    return PrunePlan(keep=keep, dry_run=dry_run, delete=[_deletion(i) for i in doomed],
                     kept=kept, orphans=orphans)


_MODEL_OBJECT: Final = re.compile(
    rf"^{MODELS_PREFIX}/(?P<strategy>[^/]+)/(?P<job>[^/]+)\.a(?P<attempt>[0-9]+)\.tar\.gz$"
)


async def _orphan_objects(bus: Bus, states: dict[str, JobState], strategy: str | None
                          ) -> list[str]:
    """Model objects that no completed job names, of jobs the projection has as finished
    (a running job's upload is never touched, nor an object of a job it does not know)."""
    named = {s.model.object_name for s in states.values() if s.model and s.model.object_name}
    orphans = []
    for name in await _object_names(bus):
        match = _MODEL_OBJECT.match(name)
        if match is None or name in named or (strategy and match["strategy"] != strategy):
            continue
        state = states.get(match["job"]) if is_valid_job_id(match["job"]) else None
        if state is not None and state.status in _TERMINAL:
            orphans.append(name)
    return sorted(orphans)


async def _object_names(bus: Bus, *, stall_timeout: float = 10.0) -> list[str]:
    """Names of the live objects in the models bucket, from the last meta message of each
    (nats-py's `list()` watcher can end before the first entry arrives)."""
    bucket = bus.names.models_bucket
    stream, meta = f"OBJ_{bucket}", f"$O.{bucket}.M.>"
    try:
        info = await bus.js.stream_info(stream, subjects_filter=meta)
    except nats.js.errors.NotFoundError:
        return []
    if not info.state.subjects:
        return []
    names: dict[str, bool] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_meta(msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
            names[str(body["name"])] = not body.get("deleted", False)
        except (ValueError, KeyError, TypeError):
            with contextlib.suppress(ValueError):
                names[base64.urlsafe_b64decode(msg.subject.rsplit(".", 1)[-1]).decode()] = True
        if reply_fields(msg.reply)[2] == 0 and not done.done():
            done.set_result(None)

    sub = await bus.js.subscribe(meta, stream=stream, cb=on_meta, ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    try:
        await asyncio.wait_for(done, timeout=stall_timeout)
    except TimeoutError:
        raise ReplayError(f"reading the object names of {bucket} stalled") from None
    finally:
        await sub.unsubscribe()
    return sorted(name for name, live in names.items() if live)


# --- the log's alias events ---------------------------------------------------------------------


class AliasChange(NamedTuple):
    """One alias event as stored: its stream sequence and time (epoch seconds)."""

    seq: int
    time: float
    event: AnyRegistryEvent


async def read_alias_events(bus: Bus, strategy: str | None = None, *,
                            stall_timeout: float = 10.0) -> list[AliasChange]:
    """Every alias change in the log (of one strategy), in log order. Unreadable payloads
    are skipped (the audit reports them by their subjects' last sequence)."""
    subject = bus.names.alias_events(strategy)
    try:
        info = await bus.js.stream_info(bus.names.stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return []
    if not info.state.subjects:
        return []
    changes: list[AliasChange] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_event(msg: Msg) -> None:
        seq, stamp, pending = reply_fields(msg.reply)
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            changes.append(AliasChange(seq, stamp, decode_registry_event(msg.data)))
        if pending == 0 and not done.done():
            done.set_result(None)

    sub = await bus.js.subscribe(subject, stream=bus.names.stream, cb=on_event,
                                 ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(done, timeout=stall_timeout)
    except TimeoutError:
        raise ReplayError(f"reading the alias events stalled after {len(changes)}") from None
    except nats.errors.Error as exc:
        raise ReplayError(f"reading the alias events failed: {exc}") from None
    finally:
        await sub.unsubscribe()
    return sorted(changes, key=lambda c: c.seq)


def replay_aliases(changes: Sequence[AliasChange]) -> dict[tuple[str, str], AliasRecord]:
    """The aliases the log's changes leave, by (strategy, alias): the audit's fold."""
    out: dict[tuple[str, str], AliasRecord] = {}
    for change in changes:
        event = change.event
        if isinstance(event, AliasSetEvent):
            out[(event.strategy, event.alias)] = _record_of(event, change.seq)
        else:
            out.pop((event.strategy, event.alias), None)
    return out
