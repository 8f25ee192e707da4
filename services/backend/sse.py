"""Server-sent events for one job: what `GET /api/v1/jobs/{id}/events` streams when the client
sends `Accept: text/event-stream`.

Frames (each `data:` is one JSON document):

    event: state      id: <seq>   the job's projected state when the stream starts
    event: <kind>     id: <seq>   each event of the job as stored (accepted, phase, progress,
                                  epoch, checkpoint, resumed, completed, failed, cancelled,
                                  rejected), in log order
    event: end        id: <seq>   the terminal state; the server then closes the stream
    : keep-alive                  a comment while the job is quiet (proxies drop idle streams)

Updates come from `libs.events.follow.follow_job` (an ordered consumer on the job's events,
folded like the projector does), read by a pump task into a queue, so this generator can send
keep-alives and notice a shutdown without cancelling the follower mid-read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import msgspec
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from libs.events.fold import TERMINAL, JobState
from libs.events.follow import JobUpdate, follow_job

if TYPE_CHECKING:
    from libs.events.bus import Bus

_encoder: Final = msgspec.json.Encoder()
_DONE: Final = object()


def job_event_stream(
    bus: Bus, state: JobState, *, stopping: asyncio.Event, keepalive: float = 15.0
) -> ServerSentEvent:
    return ServerSentEvent(_frames(bus, state, stopping=stopping, keepalive=keepalive))


async def _frames(
    bus: Bus, state: JobState, *, stopping: asyncio.Event, keepalive: float
) -> AsyncIterator[ServerSentEventMessage]:
    yield _state_frame("state", state)
    if state.status in TERMINAL:
        yield _state_frame("end", state)
        return
    queue: asyncio.Queue[JobUpdate | Exception | object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(follow_job(bus, state)) as updates:
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
            if item.message is not None:
                body = item.message.body
                yield ServerSentEventMessage(
                    event=str(body.__struct_config__.tag),
                    id=item.message.seq,
                    data=_encoder.encode(body).decode(),
                )
            if item.terminal:
                yield _state_frame("end", item.state)
                return
        # The server is shutting down: tell the client where the job stood (it may reconnect).
        yield ServerSentEventMessage(event="shutdown", data=_encoder.encode(last).decode())
    finally:
        # Not awaited: this generator may itself be cancelled (client gone); the task's own
        # cleanup (leaving the follower, unsubscribing) runs on the loop regardless.
        task.cancel()


def _state_frame(event: str, state: JobState) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        event=event, id=state.last_seq, data=_encoder.encode(state).decode()
    )
