"""One job's history and live updates, for readers (HTTP API, CLI): never writes anything.

- `read_job_state`: the projected state in KV (None when unknown).
- `state_from_command`: the state a train command creates, straight from the log (so a client
  that just published can follow its job before the projector has caught up).
- `state_from_log`: the same for a job known only by its id: its train command looked up among
  the log's latest messages (HTTP readers of a job the projector has not reached yet).
- `read_job_log`: the job's train command, cancels and events, in stream order. Each subject is
  read by its own ordered consumer with a single filter (multi-filter consumers are ~30x slower
  on a real server), and the pieces are merged by sequence.
- `follow_job`: live updates from a known state on: an ordered consumer on
  `<prefix>.evt.<job>.>` starting right after the state's `last_seq`, each event folded with the
  same pure `fold` as the projector (`next_update`), ending when the job is terminal. A job that
  ends without an event of its own (cancelled while queued: the cancel command does it) is
  noticed by reading KV whenever no event arrived for `poll_interval` seconds.
  With `every_message=True` (the HTTP stream, which shows the log beside the state) it follows
  the job's cancel commands too, so its states are the projection's (`cancelling`, who asked),
  and yields every message, also one that changes nothing. That consumer has two filters: slow
  for reading a long history, but a live tail is a few messages a second, and one consumer
  delivers the two subjects in stream order, which the fold needs (two consumers could not be
  merged live without knowing what the other one still holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from libs.events.errors import ReplayError, SetupMissing
from libs.events.fold import TERMINAL, JobState, fold, fold_all
from libs.events.log import LogMessage, message_from_msg, reply_fields, to_log_message
from libs.events.projector import decode_state

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from libs.events.bus import Bus

__all__ = [
    "JobUpdate",
    "follow_job",
    "next_update",
    "read_job_log",
    "read_job_state",
    "read_stored",
    "read_subject",
    "state_from_command",
    "state_from_log",
]

# How far back `state_from_log` looks: it is for a command published moments ago, which is among
# the stream's latest messages; the bound keeps a lookup of an unknown id cheap.
RECENT_MESSAGES: Final = 10_000
_RESERVED_JOB_ID: Final = re.compile(r"job-([0-9]+)")

# Errors of a read during an outage: the caller retries later (nats-py reconnects for ever).
TRANSIENT: Final = (nats.errors.Error, nats.js.errors.Error, TimeoutError)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """The job's state after `message` (None: the state was read from KV)."""

    state: JobState
    message: LogMessage | None

    @property
    def terminal(self) -> bool:
        return self.state.status in TERMINAL


def next_update(state: JobState, message: LogMessage) -> JobUpdate:
    """The update one message of the job's log makes: the state after it, by the projector's
    fold (the very same state object when the message changes nothing, e.g. an event of a
    superseded attempt)."""
    new = fold(state, message)
    return JobUpdate(state if new is None else new, message)


async def read_job_state(bus: Bus, job_id: str) -> JobState | None:
    """The projected state of `job_id`, or None when KV has no such job."""
    if bus.jobs is None:
        raise SetupMissing("bus.jobs is not set: call ensure_jetstream/open_jetstream first")
    try:
        entry = await bus.jobs.get(job_id)
    except nats.js.errors.KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    try:
        return decode_state(entry.value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def state_from_command(bus: Bus, seq: int) -> JobState | None:
    """The state the train command stored at `seq` creates (queued, or rejected when
    malformed); None when that message is not a train command."""
    raw = await bus.js.get_msg(bus.names.stream, seq)
    stamp = raw.time.timestamp() if raw.time is not None else 0.0
    message = to_log_message(
        bus.names, seq, raw.subject or "", raw.data or b"", raw.headers, stamp
    )
    if message.job_id is None:
        return None
    return fold(None, message)


async def state_from_log(
    bus: Bus, job_id: str, *, within: int = RECENT_MESSAGES
) -> JobState | None:
    """The state of a job the projection does not show yet, from its train command in the log
    (queued, or rejected when malformed); None when no train command among the log's last
    `within` messages created `job_id`."""
    if (reserved := _RESERVED_JOB_ID.fullmatch(job_id)) is not None:
        # `job-<seq>` names its command's sequence: no search needed.
        try:
            state = await state_from_command(bus, int(reserved[1]))
        except nats.js.errors.NotFoundError:
            return None
        return state if state is not None and state.job_id == job_id else None
    info = await bus.js.stream_info(bus.names.stream)
    start = max(1, int(info.state.last_seq) - within + 1)
    for message in await read_subject(bus, bus.names.train_commands, start_seq=start):
        if message.job_id == job_id:
            return fold(None, message)
    return None


async def read_subject(
    bus: Bus, subject: str, *, start_seq: int = 1, stall_timeout: float = 10.0
) -> list[LogMessage]:
    """Every stored message on `subject` (one filter, wildcards allowed) from `start_seq` up to
    the last one stored now, in order."""
    names = bus.names

    def log_message(msg: Msg, seq: int, stamp: float) -> LogMessage:
        return to_log_message(names, seq, msg.subject, msg.data, msg.headers, stamp)

    return await read_stored(bus, subject, log_message, start_seq=start_seq,
                             stall_timeout=stall_timeout)


async def read_stored(
    bus: Bus,
    subject: str,
    convert: Callable[[Msg, int, float], _T | None],
    *,
    start_seq: int = 1,
    stall_timeout: float = 10.0,
) -> list[_T]:
    """Every stored message on `subject` (one filter, wildcards allowed) from `start_seq` up to
    the last one stored now, in order, each as `convert(msg, seq, time)` makes it (None: left
    out). Raises `ReplayError` when the read has not ended `stall_timeout` seconds after it
    began."""
    try:
        last = await bus.js.get_last_msg(bus.names.stream, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return []
    until = int(last.seq or 0)
    if until < start_seq:
        return []
    items: list[_T] = []
    seen = start_seq - 1
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_message(msg: Msg) -> None:
        nonlocal seen
        seq, stamp, _ = reply_fields(msg.reply)
        if done.done() or seq <= seen:
            return  # past the end, or a redelivery after an ordered-consumer reset
        seen = seq
        item = convert(msg, seq, stamp)
        if item is not None:
            items.append(item)
        if seq >= until:
            done.set_result(None)

    sub = await bus.js.subscribe(
        subject,
        stream=bus.names.stream,
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq)
        ),
    )
    try:
        await asyncio.wait_for(done, timeout=stall_timeout)
    except TimeoutError:
        raise ReplayError(
            f"reading {subject} stalled at sequence {seen} (last stored seq {until})"
        ) from None
    finally:
        with contextlib.suppress(*TRANSIENT):
            await sub.unsubscribe()
    return items


async def read_job_log(bus: Bus, job_id: str, *, command_seq: int | None) -> list[LogMessage]:
    """The job's train command (at `command_seq`, when known), its cancels and its events, in
    stream order."""
    names = bus.names
    messages: list[LogMessage] = []
    if command_seq:
        raw = await bus.js.get_msg(names.stream, command_seq)
        stamp = raw.time.timestamp() if raw.time is not None else 0.0
        messages.append(
            to_log_message(names, command_seq, raw.subject or "", raw.data or b"", raw.headers,
                           stamp)
        )
    events, cancels = await asyncio.gather(
        read_subject(bus, names.job_events(job_id)),
        read_subject(bus, names.cancel_subject(job_id)),
    )
    messages.extend(events)
    messages.extend(cancels)
    messages.sort(key=lambda m: m.seq)
    return messages


async def follow_job(
    bus: Bus, state: JobState, *, poll_interval: float = 1.0, every_message: bool = False
) -> AsyncGenerator[JobUpdate, None]:
    """Updates of the job from `state` on, until (and including) a terminal state.

    Yields one `JobUpdate` per event that changes the state (events of superseded attempts
    change nothing and are skipped, as in the projection). With `every_message`, the job's
    cancel commands are folded as well and every message is yielded, changed or not (see the
    module docstring). Close the iterator (`aclose`, or leave an `async for`) to stop early:
    the subscription is removed."""
    if state.status in TERMINAL:
        yield JobUpdate(state, None)
        return
    names = bus.names
    queue: asyncio.Queue[LogMessage] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        queue.put_nowait(message_from_msg(names, msg))

    events = names.job_events(state.job_id)
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=state.last_seq + 1
    )
    if every_message:
        config.filter_subjects = [events, names.cancel_subject(state.job_id)]
    sub = await bus.js.subscribe(
        events,
        stream=names.stream,
        cb=on_message,
        ordered_consumer=True,
        # Lets nats-py notice a restarted server (ephemeral consumer gone) and recreate it.
        idle_heartbeat=1.0,
        config=config,
    )
    try:
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=poll_interval)
            except TimeoutError:
                stored = await _stored_if_newer(bus, state)
                if stored is not None and stored.status in TERMINAL:
                    yield JobUpdate(stored, None)
                    return
                continue
            update = next_update(state, message)
            if update.state is state and not every_message:
                continue
            state = update.state
            yield update
            if update.terminal:
                return
    finally:
        with contextlib.suppress(*TRANSIENT):
            await sub.unsubscribe()


async def _stored_if_newer(bus: Bus, state: JobState) -> JobState | None:
    try:
        stored = await read_job_state(bus, state.job_id)
    except TRANSIENT:
        return None  # an outage: keep waiting, the subscription resumes after reconnect
    if stored is None or stored.last_seq < state.last_seq:
        return None
    return stored


async def state_folded_from_log(bus: Bus, job_id: str) -> JobState | None:
    """The job as its own log folds, for a job the projection has not written yet (None: its
    train command is not among the recent messages)."""
    queued = await state_from_log(bus, job_id)
    if queued is None:
        return None
    log = await read_job_log(bus, job_id, command_seq=queued.command_seq)
    return fold_all(log).get(job_id, queued)
