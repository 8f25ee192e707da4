"""A sweep's events on the log: publishing them (deduplicated, so a retry or a restarted
coordinator stores each once) and reading them back in order, folded into `SweepState`.

Subjects `<prefix>.sweep.<sweep_id>.<kind>` (libs/events/subjects.py). Stored bytes that are not
a sweep event, or whose id contradicts the subject, are skipped: a sweep reads only its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from libs.events.bus import publish
from libs.events.errors import ReplayError, SweepNotFound
from libs.events.log import reply_fields
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

_STALL: Final = 10.0


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
        out += await _read(bus, subject)
    out.sort(key=lambda m: m.seq)
    return out


async def _read(bus: Bus, subject: str) -> list[SweepMessage]:
    try:
        last = await bus.js.get_last_msg(bus.names.stream, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return []
    until = int(last.seq or 0)
    messages: list[SweepMessage] = []
    seen = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        seq, _, _ = reply_fields(msg.reply)
        if done.done() or seq <= seen:
            return
        seen = seq
        sweep_id = msg.subject.split(".")[2]
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            event = decode_sweep_event(msg.data)
            if (event.sweep_id == sweep_id
                    and msg.subject.rsplit(".", 1)[-1] == sweep_kind(type(event))):
                messages.append(SweepMessage(seq=seq, event=event))
        if seq >= until:
            done.set_result(None)

    sub = await bus.js.subscribe(subject, stream=bus.names.stream, cb=on_msg,
                                 ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(done, timeout=_STALL)
    except TimeoutError:
        raise ReplayError(f"reading {subject} stalled after {len(messages)} events") from None
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return messages


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
