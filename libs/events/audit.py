"""Audit: rebuild every job from the log (sequence 1, same fold) and compare with the KV.

`replay` is the projector's read path without the writes; `diff` compares two sets of states
field by field; `audit` puts them together, letting a live projector catch up first;
`timeline` renders one job's history for humans (who asked, which worker, epochs, cancel,
result), marking the messages the fold ignored.

`repair` (`trainbus audit --repair`) writes the replay back: every job whose stored state
differs from the log's is rewritten, KV entries the log does not back are deleted, and a
position that cannot be trusted (libs/events/projector.py `position_problems`) is reset to the
end of the replay. Each write is guarded by the entry's KV revision, so a live projector that
changed an entry meanwhile wins (its write comes from the same fold, and is newer).

The model registry's alias changes (`<prefix>.alias.<strategy>.<alias>`, libs/events/registry.py)
are audited the same way: `audit` also replays them and diffs the result against KV
`<prefix>_aliases` (`audit_aliases`), and `alias_timeline` lists them for humans.

Signatures (libs/events/signing.py, checked as each message is read: log.py): the report counts
the events whose signature verified and those without one, lists each event whose signature is
present but wrong, and, when the operator trusts at least one key (libs/events/trust.py), each
completed job whose claim no trusted key signed (its model is neither listed nor served). None
of these fail the audit: the projection ignored the same messages; they are for a person.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import msgspec
import nats.js.errors

from libs.events.bus import Bus
from libs.events.errors import SetupMissing
from libs.events.fold import JobState, fold, unchanged_is_foreign
from libs.events.log import (
    REGISTRY_CHANGE,
    LogMessage,
    MalformedCommand,
    Unreadable,
    read_log,
    stream_last_seq,
)
from libs.events.projector import (
    Checkpoint,
    Projection,
    decode_projection,
    load_projection,
    position_problems,
    read_bucket,
)
from libs.events.schema import (
    AcceptedEvent,
    AliasRemovedEvent,
    AliasSetEvent,
    AnyEvent,
    AnyRegistryEvent,
    CancelCommand,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    EpochEvent,
    FailedEvent,
    OperatorFailedEvent,
    PhaseEvent,
    ProgressEvent,
    RejectedEvent,
    ReleasedEvent,
    ResumedEvent,
    TrainCommand,
)
from libs.events.subjects import CHECKPOINT_KEY
from libs.events.trust import read_trust, untrusted_reason

if TYPE_CHECKING:
    from libs.events.registry import AliasRecord

_ROUNDS: Final = 3


@dataclass(frozen=True, slots=True)
class Difference:
    job_id: str
    kind: str  # "missing in KV", "not in log", "unreadable", "field", "behind"
    detail: str
    field: str | None = None
    rebuilt: object = None
    stored: object = None


@dataclass(slots=True)
class AuditReport:
    replayed_to: int
    checkpoint: int
    jobs: int
    differences: list[Difference] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)
    # Per job, the sequences of messages on its subjects that its claimant did not write: the
    # fold ignored them (a forgery, or a stale worker's late write), so the projection is
    # still right and the audit can be OK; they are reported, for a person to look at.
    foreign: dict[str, list[int]] = field(default_factory=dict)
    # (seq, subject, why) of each stored message nothing can read (poison, an unknown kind):
    # skipped by every fold, listed here so nothing is dropped silently.
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    # Events whose signature verified, events with none, (seq, subject) of each whose
    # signature did not verify, and (job, why) of each completed job no trusted key vouches
    # for (only when trust is configured: `trusted_keys` > 0).
    signed: int = 0
    unsigned: int = 0
    bad_signatures: list[tuple[int, str]] = field(default_factory=list)
    trusted_keys: int = 0
    untrusted: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


class Replay:
    """Incremental fold of the log from sequence 1 into states (the audit's projection)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._events_prefix = f"{bus.names.prefix}.evt."
        self.states: dict[str, JobState] = {}
        self.last_seq = 0
        self.foreign: dict[str, list[int]] = {}
        self.skipped: list[tuple[int, str, str]] = []
        self.signed = 0
        self.unsigned = 0
        self.bad_signatures: list[tuple[int, str]] = []

    def apply(self, message: LogMessage) -> None:
        body, job_id = message.body, message.job_id
        if message.signer is not None:
            self.signed += 1
        elif message.bad_signature:
            self.bad_signatures.append((message.seq, message.subject))
        elif job_id is not None and message.subject.startswith(self._events_prefix):
            self.unsigned += 1
        if type(body) is Unreadable and body.reason != REGISTRY_CHANGE:
            self.skipped.append((message.seq, message.subject, body.reason))
        if job_id is not None:
            # fold_judged, inlined: this runs once per message of every audit.
            state = self.states.get(job_id)
            new = fold(state, message)
            if new is not state and new is not None:
                self.states[job_id] = new
            elif unchanged_is_foreign(state, message):
                self.foreign.setdefault(job_id, []).append(message.seq)
        self.last_seq = message.seq

    async def advance(self, until_seq: int | None = None) -> int:
        """Read and fold everything after `last_seq` up to `until_seq` (default: the end)."""
        self.last_seq = await read_log(
            self._bus.js, self._bus.names, self.apply,
            start_seq=self.last_seq + 1, until_seq=until_seq,
        )
        return self.last_seq


async def replay(bus: Bus, *, until_seq: int | None = None) -> dict[str, JobState]:
    """Every job's state rebuilt from sequence 1 through `until_seq` (default: the end)."""
    rebuilt = Replay(bus)
    await rebuilt.advance(until_seq)
    return rebuilt.states


_encoder: Final = msgspec.json.Encoder()


def diff(
    rebuilt: Mapping[str, JobState],
    stored: Mapping[str, JobState],
    *,
    first_seq: int = 1,
) -> tuple[list[Difference], list[str]]:
    """Differences between rebuilt and stored states, and the stored jobs that cannot be
    verified because their train command aged out of the stream (before `first_seq`)."""
    differences: list[Difference] = []
    unverifiable: list[str] = []
    for job_id in sorted(set(rebuilt) | set(stored)):
        mine, theirs = rebuilt.get(job_id), stored.get(job_id)
        if theirs is None:
            differences.append(Difference(job_id, "missing in KV", "the log has this job, "
                                          "the KV does not"))
        elif mine is None:
            if theirs.command_seq < first_seq:
                unverifiable.append(job_id)
            else:
                differences.append(Difference(job_id, "not in log", "the KV has a job the "
                                              "log never created"))
        elif mine != theirs:
            mine_d, theirs_d = msgspec.to_builtins(mine), msgspec.to_builtins(theirs)
            for name in mine.__struct_fields__:
                if mine_d.get(name) != theirs_d.get(name):
                    differences.append(Difference(
                        job_id, "field", f"{name}: log says {mine_d.get(name)!r}, "
                        f"KV says {theirs_d.get(name)!r}", field=name,
                        rebuilt=mine_d.get(name), stored=theirs_d.get(name),
                    ))
    return differences, unverifiable


async def audit(
    bus: Bus, *, job_id: str | None = None, catch_up_timeout: float = 10.0
) -> AuditReport:
    """Replay the log, wait (up to `catch_up_timeout`) for the projection to reach the same
    sequence, then diff. Jobs changed while we compared are re-read (a few rounds)."""
    if bus.jobs is None:
        raise SetupMissing("bus.jobs is not set: call open_jetstream first")
    rebuilt = Replay(bus)
    first_seq, _ = await stream_last_seq(bus.js, bus.names)
    await rebuilt.advance()
    for _ in range(_ROUNDS):
        projection = await _projection_at(bus, rebuilt.last_seq, catch_up_timeout)
        newest = max((s.last_seq for s in projection.states.values()), default=0)
        if newest <= rebuilt.last_seq and projection.checkpoint <= rebuilt.last_seq:
            break
        await rebuilt.advance()  # the log moved on while we read the KV
    mine, theirs = rebuilt.states, projection.states
    if job_id is not None:
        mine = {k: v for k, v in mine.items() if k == job_id}
        theirs = {k: v for k, v in theirs.items() if k == job_id}
    differences, unverifiable = diff(mine, theirs, first_seq=first_seq)
    for key, why in projection.unreadable.items():
        if job_id is None or key == job_id:
            differences.append(Difference(key, "unreadable", f"KV entry is not a job state: "
                                          f"{why}"))
    if job_id is None and bus.aliases is not None:
        alias_differences, alias_unverifiable = await audit_aliases(bus, first_seq=first_seq)
        differences += alias_differences
        unverifiable += alias_unverifiable
    trust = await read_trust(bus)
    untrusted = [(k, reason) for k, state in sorted(mine.items()) if state.status == "completed"
                 and (reason := untrusted_reason(state, trust)) is not None]
    if projection.checkpoint < rebuilt.last_seq:
        differences.append(Difference(
            "*", "behind", f"the projection's checkpoint is {projection.checkpoint}, the log "
            f"ends at {rebuilt.last_seq} (is the projector running?)",
        ))
    return AuditReport(
        replayed_to=rebuilt.last_seq,
        checkpoint=projection.checkpoint,
        jobs=len(mine),
        differences=differences,
        unverifiable=unverifiable,
        foreign={k: v for k, v in rebuilt.foreign.items() if job_id in (None, k)},
        skipped=[s for s in rebuilt.skipped
                 if job_id is None or bus.names.parse(s[1]).job_id == job_id],
        signed=rebuilt.signed,
        unsigned=rebuilt.unsigned,
        bad_signatures=[b for b in rebuilt.bad_signatures
                        if job_id is None or bus.names.parse(b[1]).job_id == job_id],
        trusted_keys=len(trust.keys),
        untrusted=untrusted,
    )


# --- repair ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One KV write of a repair: `action` is "rewritten", "created", "deleted" or
    "checkpoint"; `differences` what the stored entry got wrong (empty for a deletion of
    garbage or the checkpoint)."""

    key: str
    action: str
    detail: str
    differences: tuple[Difference, ...] = ()


@dataclass(slots=True)
class RepairReport:
    replayed_to: int
    jobs: int
    changes: list[Change] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed meanwhile (a live projector)
    unverifiable: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


async def repair(bus: Bus) -> RepairReport:
    """Rebuild the projection from the log and write back what differs (see the module doc).

    The KV is read before the log, so every genuine state is at or below the replay's end: a
    stored state that differs is wrong, not merely newer."""
    if bus.jobs is None:
        raise SetupMissing("bus.jobs is not set: call open_jetstream first")
    raw = await read_bucket(bus.js, bus.names.jobs_bucket)
    projection = decode_projection(raw)
    first_seq, _ = await stream_last_seq(bus.js, bus.names)
    rebuilt = Replay(bus)
    await rebuilt.advance()
    differences, unverifiable = diff(rebuilt.states, projection.states, first_seq=first_seq)
    by_job: dict[str, list[Difference]] = {}
    for difference in differences:
        by_job.setdefault(difference.job_id, []).append(difference)
    report = RepairReport(replayed_to=rebuilt.last_seq, jobs=len(rebuilt.states),
                          unverifiable=unverifiable)
    for key in sorted(set(by_job) | (set(projection.unreadable) - {CHECKPOINT_KEY})):
        state = rebuilt.states.get(key)
        found = tuple(by_job.get(key, ()))
        if state is None:
            change = Change(key, "deleted", "no job of that id in the log"
                            if key not in projection.unreadable
                            else f"not a job state ({projection.unreadable[key]})", found)
            written = await write_if_unchanged(bus, key, raw.get(key), None)
        else:
            action = "rewritten" if key in raw else "created"
            change = Change(key, action, f"to the log's state at sequence {state.last_seq}",
                            found)
            written = await write_if_unchanged(bus, key, raw.get(key), _encoder.encode(state))
        (report.changes.append(change) if written else report.skipped.append(key))
    problems = position_problems(projection, stream=bus.names.stream,
                                 last_seq=rebuilt.last_seq)
    if problems:
        checkpoint = Checkpoint(seq=rebuilt.last_seq, stream=bus.names.stream, time=time.time())
        if await write_if_unchanged(bus, CHECKPOINT_KEY, raw.get(CHECKPOINT_KEY),
                          _encoder.encode(checkpoint)):
            report.changes.append(Change(
                CHECKPOINT_KEY, "checkpoint", f"{'; '.join(problems)}: set to sequence "
                f"{rebuilt.last_seq} (restart a running projector: it may still be blinded)"))
        else:
            report.skipped.append(CHECKPOINT_KEY)
    return report


async def write_if_unchanged(
    bus: Bus, key: str, seen: bytes | None, value: bytes | None
) -> bool:
    """Put `value` (None: delete) under `key` only if the entry still holds `seen` (None: no
    entry), at the revision it holds now. False when someone changed it in between."""
    assert bus.jobs is not None
    try:
        entry = await bus.jobs.get(key)
    except nats.js.errors.KeyNotFoundError:  # also a deleted key
        entry = None
    current = entry.value if entry is not None else None
    if current != seen:
        return False
    try:
        if value is None:
            assert entry is not None
            await bus.jobs.delete(key, last=entry.revision)
        elif entry is None:
            await bus.jobs.create(key, value)
        else:
            await bus.jobs.update(key, value, last=entry.revision)
    except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
        return False
    return True


async def audit_aliases(
    bus: Bus, *, first_seq: int = 1, rounds: int = _ROUNDS
) -> tuple[list[Difference], list[str]]:
    """The aliases the log's alias events leave against KV `<prefix>_aliases`: differences
    (`Difference.job_id` is `<strategy>@<alias>`, kind `alias ...`), and the KV aliases whose
    last change aged out of the stream (unverifiable). A writer publishes first and then
    updates the KV, so a difference is re-read a few times before it is reported."""
    # The registry reads the model catalog (the storage layout): imported when used, so the
    # audit of jobs stays as light as the rest of libs.events.
    from libs.events.registry import list_aliases, read_alias_events, replay_aliases

    differences: list[Difference] = []
    unverifiable: list[str] = []
    for attempt in range(rounds):
        rebuilt = replay_aliases(await read_alias_events(bus))
        stored = {(r.strategy, r.alias): r for r in await list_aliases(bus)}
        differences, unverifiable = _diff_aliases(rebuilt, stored, first_seq)
        if not differences:
            break
        if attempt + 1 < rounds:
            await asyncio.sleep(0.2)
    return differences, unverifiable


def _diff_aliases(
    rebuilt: Mapping[tuple[str, str], AliasRecord],
    stored: Mapping[tuple[str, str], AliasRecord],
    first_seq: int,
) -> tuple[list[Difference], list[str]]:
    differences: list[Difference] = []
    unverifiable: list[str] = []
    for key in sorted(set(rebuilt) | set(stored)):
        mine, theirs = rebuilt.get(key), stored.get(key)
        name = f"{key[0]}@{key[1]}"
        if theirs is None:
            assert mine is not None
            differences.append(Difference(name, "alias missing in KV",
                                          f"the log points it at {mine.version}, the KV has "
                                          "no such alias"))
        elif mine is None:
            if theirs.seq < first_seq:
                unverifiable.append(name)
            else:
                differences.append(Difference(name, "alias not in log",
                                              f"the KV points it at {theirs.version}, the log "
                                              "removed it or never set it"))
        elif mine != theirs:
            mine_d, theirs_d = msgspec.to_builtins(mine), msgspec.to_builtins(theirs)
            for field_name in mine.__struct_fields__:
                if mine_d.get(field_name) != theirs_d.get(field_name):
                    differences.append(Difference(
                        name, "alias field", f"{field_name}: log says "
                        f"{mine_d.get(field_name)!r}, KV says {theirs_d.get(field_name)!r}",
                        field=field_name, rebuilt=mine_d.get(field_name),
                        stored=theirs_d.get(field_name),
                    ))
    return differences, unverifiable


async def alias_timeline(bus: Bus, strategy: str | None = None) -> list[TimelineEntry]:
    """Every alias change in the log (of one strategy), one entry each, in log order."""
    from libs.events.registry import read_alias_events

    return [TimelineEntry(seq=c.seq, time=c.time, text=describe_alias(c.event), applied=True,
                          status=None)
            for c in await read_alias_events(bus, strategy)]


def describe_alias(event: AnyRegistryEvent) -> str:
    """One line for one alias change."""
    ref = f"{event.strategy}@{event.alias}"
    why = f": {event.reason}" if event.reason else ""
    if isinstance(event, AliasSetEvent):
        was = f" (was {event.previous})" if event.previous else " (new)"
        until = ""
        if event.expires_at is not None:
            until = ", expires " + datetime.fromtimestamp(event.expires_at, UTC).isoformat(
                timespec="seconds").replace("+00:00", "Z")
        return f"{ref} -> {event.version}{was}{until}, by {event.by}{why}"
    assert isinstance(event, AliasRemovedEvent)
    return f"{ref} removed (was {event.previous or '?'}), by {event.by}{why}"


async def _projection_at(bus: Bus, seq: int, timeout: float) -> Projection:
    assert bus.jobs is not None
    deadline = time.monotonic() + timeout
    while True:
        projection = await load_projection(bus.js, bus.names.jobs_bucket)
        if projection.checkpoint >= seq or time.monotonic() >= deadline:
            return projection
        await asyncio.sleep(0.1)


# --- timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    seq: int
    time: float
    text: str
    applied: bool
    status: str | None


async def timeline(bus: Bus, job_id: str) -> list[TimelineEntry]:
    """One job's messages in log order, each with what it did to the state."""
    entries: list[TimelineEntry] = []
    state: JobState | None = None

    def collect(message: LogMessage) -> None:
        nonlocal state
        if message.job_id != job_id:
            return
        new = fold(state, message)
        applied = new is not state
        state = new
        entries.append(TimelineEntry(
            seq=message.seq, time=message.time, text=describe(message), applied=applied,
            status=new.status if new is not None else None,
        ))

    await read_log(bus.js, bus.names, collect)
    return entries


def format_timeline(entries: list[TimelineEntry]) -> list[str]:
    """Readable lines; consecutive progress updates are folded into one line."""
    lines: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        run = 1
        while (entry.text.startswith("progress") and i + run < len(entries)
               and entries[i + run].text.startswith("progress")):
            run += 1
        last = entries[i + run - 1]
        stamp = datetime.fromtimestamp(last.time, UTC).isoformat(timespec="milliseconds")
        text = last.text if run == 1 else f"{last.text} ({run} updates)"
        mark = f"-> {last.status}" if last.applied else "(ignored)"
        lines.append(f"{stamp.replace('+00:00', 'Z')}  #{last.seq:<7} {text}  {mark}")
        i += run
    return lines


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def describe(message: LogMessage) -> str:
    """One line for one message."""
    body = message.body
    if isinstance(body, TrainCommand):
        what = f"strategy {body.strategy}" if body.strategy else "inline strategy"
        return (f"train requested by {body.requested_by} on pool {body.pool}: {what}, "
                f"symbols {','.join(body.symbols)}, timeframes {','.join(body.timeframes)}, "
                f"seed {body.seed if body.seed is not None else 'of the strategy'}")
    if isinstance(body, MalformedCommand):
        return f"malformed train command ({body.category}, field {body.field}): {body.reason}"
    if isinstance(body, CancelCommand):
        reason = f": {body.reason}" if body.reason else ""
        return f"cancel requested by {body.requested_by}{reason}"
    if isinstance(body, Unreadable):
        return f"unreadable: {body.reason}"
    return _describe_event(body)


def _describe_event(body: AnyEvent) -> str:
    who = f"[attempt {body.attempt}, {body.worker_id or '?'}]"
    if isinstance(body, AcceptedEvent):
        return (f"accepted by {body.worker_id} ({body.worker_kind} on {body.host or '?'}, "
                f"device {body.device}, pool {body.pool}"
                f"{f', seed {body.seed}' if body.seed is not None else ''}) {who}")
    if isinstance(body, RejectedEvent):
        return f"rejected ({body.category}, field {body.field}): {body.reason} {who}"
    if isinstance(body, PhaseEvent):
        return f"phase {body.phase} {who}"
    if isinstance(body, ProgressEvent):
        eta = f", eta {body.eta_seconds:.0f}s" if body.eta_seconds is not None else ""
        return (f"progress {body.percent:.1f}% (epoch {body.epoch}/{body.total_epochs}, batch "
                f"{body.batch}/{body.total_batches}{eta}) {who}")
    if isinstance(body, EpochEvent):
        return (f"epoch {body.epoch}/{body.total_epochs}: train loss {_num(body.train_loss)} "
                f"acc {_num(body.train_accuracy)}, val loss {_num(body.val_loss)} "
                f"acc {_num(body.val_accuracy)} ({body.duration:.1f}s) {who}")
    if isinstance(body, CheckpointEvent):
        return f"checkpoint after epoch {body.epoch}: {body.object_name} {who}"
    if isinstance(body, ResumedEvent):
        return f"resumed from epoch {body.from_epoch} ({body.checkpoint}) {who}"
    if isinstance(body, ReleasedEvent):
        return (f"released ({body.reason}), checkpoint {body.checkpoint or 'none'}: queued "
                f"again, no attempt spent {who}")
    if isinstance(body, CancelledEvent):
        return f"cancelled{': ' + body.reason if body.reason else ''} {who}"
    if isinstance(body, CompletedEvent):
        metrics = ", ".join(f"{k} {_num(v)}" for k, v in sorted(body.test_metrics.items()))
        return (f"completed: model {body.model.strategy} {body.model.version}"
                f"{' (' + body.model.object_name + ')' if body.model.object_name else ''}, "
                f"best epoch {body.best_epoch}, test {metrics or '-'} {who}")
    if isinstance(body, FailedEvent):
        retry = ", retryable" if body.retryable else ""
        return f"failed ({body.category}{retry}): {body.reason} {who}"
    if isinstance(body, OperatorFailedEvent):
        forced = f", forced while {body.held_by} held it" if body.forced else ""
        return f"failed by operator {body.by}{forced}: {body.reason} {who}"
    return type(body).__name__
