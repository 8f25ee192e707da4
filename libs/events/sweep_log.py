"""A sweep's events on the log: publishing them (deduplicated, so a retry or a restarted
coordinator stores each once) and reading them back in order, folded into `SweepState`.

Subjects `<prefix>.sweep.<sweep_id>.<kind>` (libs/events/subjects.py). Stored bytes that are not
a sweep event, or whose id contradicts the subject, are skipped: a sweep reads only its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from libs.events.bus import publish
from libs.events.errors import SweepNotFound
from libs.events.follow import read_stored
from libs.events.schema import encode
from libs.events.subjects import SWEEP_ID_PREFIX, is_valid_job_id
from libs.events.sweep_fold import SweepMessage, SweepState, fold_sweep, fold_sweeps
from libs.events.sweep_schema import (
    AnySweepEvent,
    TrialAsked,
    TrialTold,
    decode_sweep_event,
    sweep_kind,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from libs.events.bus import Bus


def check_sweep_id(sweep_id: str) -> str:
    if not is_valid_job_id(sweep_id) or len(sweep_id) > 64:
        raise SweepNotFound(f"no sweep {sweep_id[:80]!r}: not a valid sweep id",
                            field="sweep_id")
    return sweep_id


def sweep_msg_id(event: AnySweepEvent) -> str:
    """One stored copy per fact: `sweep:<id>:<kind>[:<n>]`."""
    kind = sweep_kind(type(event))
    if isinstance(event, TrialAsked | TrialTold):
        return f"{SWEEP_ID_PREFIX}{event.sweep_id}:{kind}:{event.n}"
    return f"{SWEEP_ID_PREFIX}{event.sweep_id}:{kind}"


async def publish_sweep_event(bus: Bus, event: AnySweepEvent) -> int:
    """Store one sweep event; returns its stream sequence (the first copy's on a retry)."""
    subject = bus.names.sweep_subject(event.sweep_id, sweep_kind(type(event)))
    receipt = await publish(bus, subject, encode(event), msg_id=sweep_msg_id(event))
    return receipt.seq


async def read_sweep_messages(bus: Bus, sweep_id: str | None = None, *,
                              kinds: tuple[str, ...] = ()) -> list[SweepMessage]:
    """Every stored event of one sweep (all sweeps; only `kinds` when given), in order."""
    names = bus.names
    if sweep_id is None:
        subjects = [f"{names.prefix}.sweep.*.{kind}" for kind in kinds] or [names.sweep_events()]
    else:
        subjects = [names.sweep_events(check_sweep_id(sweep_id))]
    out: list[SweepMessage] = []
    for subject in subjects:
        out += await read_stored(bus, subject, _sweep_message)
    out.sort(key=lambda m: m.seq)
    return out


def _sweep_message(msg: Msg, seq: int, _time: float) -> SweepMessage | None:
    """The sweep event stored at `seq`, or None when it is not one, or not of its subject's
    sweep and kind."""
    try:
        event = decode_sweep_event(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    tokens = msg.subject.split(".")  # <prefix>.sweep.<sweep_id>.<kind>
    if tokens[2:] != [event.sweep_id, sweep_kind(type(event))]:
        return None
    return SweepMessage(seq=seq, event=event)


async def read_sweep(bus: Bus, sweep_id: str) -> SweepState:
    """The sweep's state folded from its events. Raises SweepNotFound."""
    state: SweepState | None = None
    for message in await read_sweep_messages(bus, sweep_id):
        state = fold_sweep(state, message)
    if state is None:
        raise SweepNotFound(f"no sweep {sweep_id!r}", field="sweep_id")
    return state


async def read_sweeps(bus: Bus) -> list[SweepState]:
    """Every sweep, newest first."""
    states = fold_sweeps(await read_sweep_messages(bus))
    return sorted(states.values(), key=lambda s: s.started_seq, reverse=True)
