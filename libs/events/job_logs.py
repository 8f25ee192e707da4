"""A job's trainer log lines: the stored form and the readers (`trainbus logs`, GET
/api/v1/jobs/<id>/logs, the dashboard).

The trainer publishes them (libs/events/worker/job_log.py) on `<prefix>.log.<job>`, captured by
the logs stream (setup.py: bounded per job and in total, so the oldest lines of a long job can
be gone). A line is JSON: when, the level, the logger, the message, the attempt and worker;
`end` marks the last line of an attempt (the publisher closed), which is how a follower knows
the lines of a finished job are all in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Final

import msgspec
import nats.errors
import nats.js.errors
from msgspec import Struct

from libs.events.fold import TERMINAL
from libs.events.follow import read_job_state
from libs.events.schema import MAX_EVENT_DEPTH, decode_untrusted
from libs.events.setup import LOG_MAX_LINE

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from libs.events.bus import Bus

# After the job is finished, how long a follower waits for an attempt's end line that is not
# coming (a worker killed mid-job never sends one).
END_GRACE: Final = 3.0


class LogLine(Struct, frozen=True, kw_only=True, gc=False):
    time: float
    level: str
    logger: str
    message: str
    attempt: int = 0
    worker_id: str = ""
    end: bool = False
    seq: int = 0  # the logs stream's sequence (set on read, not stored)


_decoder: Final = msgspec.json.Decoder(LogLine)


def decode_line(data: bytes, seq: int) -> LogLine | None:
    """A stored line (None: not one; anyone with the trainer role could have written it)."""
    try:
        line = decode_untrusted(_decoder, data, max_bytes=LOG_MAX_LINE + 1024,
                                max_depth=MAX_EVENT_DEPTH)
    except msgspec.DecodeError:
        return None
    return msgspec.structs.replace(line, seq=seq)


def format_line(line: LogLine) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line.time))
    return f"{stamp}Z {line.level:<7} {line.logger}: {line.message}"


async def _count(bus: Bus, job_id: str) -> int:
    """How many lines of the job the logs stream holds now (0: none, or no logs stream)."""
    subject = bus.names.log_subject(job_id)
    try:
        info = await bus.js.stream_info(bus.names.logs_stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return 0
    return int((info.state.subjects or {}).get(subject, 0))


async def read_lines(bus: Bus, job_id: str, *, after: int = 0, limit: int = 5000
                     ) -> list[LogLine]:
    """The job's stored lines after logs-stream sequence `after`, oldest first."""
    lines: list[LogLine] = []
    async with contextlib.aclosing(_lines(bus, job_id, after=after, follow=False)) as found:
        async for line in found:
            lines.append(line)
            if len(lines) >= limit:
                break
    return lines


async def follow_lines(bus: Bus, job_id: str, *, after: int = 0,
                       poll: float = 1.0) -> AsyncGenerator[LogLine, None]:
    """The job's lines, stored ones first, then live, until the job is finished and its last
    attempt's `end` line was read (or END_GRACE passed without one)."""
    async with contextlib.aclosing(_lines(bus, job_id, after=after, follow=True,
                                          poll=poll)) as found:
        async for line in found:
            yield line


async def _lines(bus: Bus, job_id: str, *, after: int, follow: bool,
                 poll: float = 1.0) -> AsyncGenerator[LogLine, None]:
    subject = bus.names.log_subject(job_id)
    stored = await _count(bus, job_id)
    if not follow and stored == 0:
        return
    queue: asyncio.Queue[LogLine | None] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        meta = msg.metadata
        line = decode_line(msg.data, int(meta.sequence.stream))
        if line is not None and line.seq > after:
            queue.put_nowait(line)
        if not follow and meta.num_pending == 0:
            queue.put_nowait(None)  # caught up with what was stored

    try:
        sub = await bus.js.subscribe(subject, stream=bus.names.logs_stream, cb=on_msg,
                                     ordered_consumer=True, idle_heartbeat=1.0)
    except nats.js.errors.NotFoundError:
        return  # no logs stream (a setup from before it): no lines
    try:
        ended: set[int] = set()  # attempts whose end line was read
        finished_at: float | None = None
        checked = 0.0
        while True:
            try:
                line = await asyncio.wait_for(queue.get(), timeout=poll)
            except TimeoutError:
                line = None
            if line is None and not follow:
                return  # caught up (or every stored line was at or before `after`)
            if line is not None:
                if line.end:
                    ended.add(line.attempt)
                yield line
            if not follow or not queue.empty() or time.monotonic() - checked < poll:
                continue
            checked = time.monotonic()
            state = await read_job_state(bus, job_id)
            if state is None or state.status not in TERMINAL:
                continue
            finished_at = finished_at or checked
            if (state.attempt in ended or state.attempt == 0
                    or checked - finished_at > END_GRACE):
                return
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


class JobLines(Struct, frozen=True, kw_only=True):
    """GET /api/v1/jobs/<id>/logs: the stored lines after `after` (a logs-stream sequence),
    oldest first; `next_after` is the sequence to ask after next time."""

    job_id: str
    status: str
    lines: list[LogLine]
    next_after: int
