"""Server-sent events for one job: what `GET /api/v1/jobs/{id}/events` streams when the client
sends `Accept: text/event-stream`.

Frames (each `data:` is one JSON document):

    event: state     id: <last_seq>  JobState: the job's state when the stream starts
    event: <kind>    id: <seq>       {"entry": LogEntry, "state": JobState}: each message of the
                                     job's log after that state, in log order: its events
                                     (accepted, phase, progress, epoch, checkpoint, resumed,
                                     released, completed, failed, cancelled, rejected;
                                     `unreadable` for one that cannot be decoded) and its
                                     cancel commands (`cancel`)
    event: end       id: <last_seq>  JobState: the terminal state; the server then closes
    event: shutdown                  JobState: the backend is stopping (the client may reconnect)
    event: error                     text: NATS failed; the stream ends
    : keep-alive                     a comment while the job is quiet (proxies drop idle streams)

`entry` is the message exactly as the JSON log (`GET .../events` without the header) lists it:
`seq`, `time`, `subject`, `type` (event or command), `kind` (the frame's name) and `body` as
stored. `state` is the whole `JobState` after that message (history included), folded by the
projector's own pure fold (`libs.events.follow.next_update`): a client replaces its copy with
it and never folds events itself. A message that changes nothing (an event of a superseded
attempt, a duplicate claim) is still sent, for the log, with the state as it was, so `state`
is fenced exactly like the projection: the `last_seq` inside it can be lower than the frame's
`id`. A client that reconnects gets a `state` frame again; entries between the frames it saw
and that state are in the JSON log.

Updates come from `libs.events.follow.follow_job` (one ordered consumer on the job's events and
cancels), read by a pump task into a queue, so this generator can send keep-alives and notice
a shutdown without cancelling the follower mid-read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import msgspec
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from msgspec import Struct

from libs.events.fold import TERMINAL, JobState
from libs.events.follow import JobUpdate, follow_job
from libs.events.job_types import LogEntry
from libs.events.jobs import log_entry

if TYPE_CHECKING:
    from libs.events.bus import Bus

_encoder: Final = msgspec.json.Encoder()
_DONE: Final = object()


class LiveFrame(Struct, frozen=True, kw_only=True):
    """The data of one live frame: a message of the job's log and the job's state after it."""

    entry: LogEntry
    state: JobState


def job_event_stream(
    bus: Bus, state: JobState, *, stopping: asyncio.Event, keepalive: float = 15.0
) -> ServerSentEvent:
    return ServerSentEvent(_frames(bus, state, stopping=stopping, keepalive=keepalive))


def state_frame(event: str, state: JobState) -> ServerSentEventMessage:
    """A `state`, `end` or `shutdown` frame: the job's state on its own."""
    return ServerSentEventMessage(
        event=event, id=None if event == "shutdown" else state.last_seq,
        data=_encoder.encode(state).decode(),
    )


def update_frames(update: JobUpdate) -> list[ServerSentEventMessage]:
    """The frames one update of `follow_job` becomes: a live frame for its message (none when
    the state was read from KV), then `end` when the state is terminal."""
    frames = []
    if update.message is not None:
        entry = log_entry(update.message)
        frames.append(ServerSentEventMessage(
            event=entry.kind, id=entry.seq,
            data=_encoder.encode(LiveFrame(entry=entry, state=update.state)).decode(),
        ))
    if update.terminal:
        frames.append(state_frame("end", update.state))
    return frames


async def _frames(
    bus: Bus, state: JobState, *, stopping: asyncio.Event, keepalive: float
) -> AsyncIterator[ServerSentEventMessage]:
    yield state_frame("state", state)
    if state.status in TERMINAL:
        yield state_frame("end", state)
        return
    queue: asyncio.Queue[JobUpdate | Exception | object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(
                follow_job(bus, state, every_message=True)
            ) as updates:
                async for update in updates:
                    queue.put_nowait(update)
        except Exception as exc:  # edge of the stream: report it to the client, then close
            queue.put_nowait(exc)
            return
        queue.put_nowait(_DONE)

    task = asyncio.create_task(pump(), name=f"sse-{state.job_id}")
    quiet = 0.0
    tick = min(1.0, keepalive)
    last = state
    try:
        while not stopping.is_set():
            try:
                item = await asyncio.wait_for(queue.get(), timeout=tick)
            except TimeoutError:
                quiet += tick
                if quiet >= keepalive:
                    quiet = 0.0
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            quiet = 0.0
            if item is _DONE:
                return
            if isinstance(item, Exception):
                # The follower failed (NATS gone for good?): say so instead of hanging up mute.
                yield ServerSentEventMessage(event="error", data=str(item) or type(item).__name__)
                return
            assert isinstance(item, JobUpdate)
            last = item.state
            for frame in update_frames(item):
                yield frame
            if item.terminal:
                return
        # The server is shutting down: tell the client where the job stood (it may reconnect).
        yield state_frame("shutdown", last)
    finally:
        # Not awaited: this generator may itself be cancelled (client gone); the task's own
        # cleanup (leaving the follower, unsubscribing) runs on the loop regardless.
        task.cancel()
