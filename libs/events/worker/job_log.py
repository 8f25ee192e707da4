"""Publishing a job's own log lines while a worker runs it (`trainbus logs`; the reader is
libs/events/job_logs.py).

Which records are the job's: those logged in the job's asyncio task (the attempt) and in its
training thread: `JobLogSink.attach` sets a context variable in the attempt's task, and
`asyncio.to_thread` copies the context into the thread, so every record logged there (by any
logger, at the levels the process logs) names its job. Records of other jobs (capacity > 1),
of the heartbeat and of the pull loop carry no job and are not published.

One `JobLogHandler` on the root logger serves every job of the process (`install`). A record
becomes one JSON line on `<prefix>.log.<job>`, sent with a core publish (no ack to wait for:
the logs stream stores it; a line lost with the connection is a lost line, never a stalled
job) by one pump task per attempt, from a bounded queue (a flood drops lines and says how
many). Messages are masked like failure tracebacks (failure_detail.py `redact`), trimmed, and an
exception is its frames as `file:line function`, never source lines or locals. The pump's own
task runs outside the job's context, so what publishing logs is not published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from typing import TYPE_CHECKING, Final

import msgspec
import nats.errors

from libs.events.job_logs import LogLine
from libs.events.setup import LOG_MAX_LINE
from libs.events.worker.failure_detail import redact, traceback_lines

if TYPE_CHECKING:
    from libs.events.bus import Bus

MAX_PENDING: Final = 2000  # lines waiting for the pump; more are dropped (and counted)
_encoder: Final = msgspec.json.Encoder()
_current: contextvars.ContextVar[JobLogSink | None] = contextvars.ContextVar(
    "trainbus_job_log", default=None)
_inside = threading.local()  # a record logged while handling a record is not published


class JobLogSink:
    """One attempt's log lines on their way to `<prefix>.log.<job>`."""

    def __init__(self, bus: Bus, *, job_id: str, attempt: int, worker_id: str) -> None:
        self.bus = bus
        self.subject = bus.names.log_subject(job_id)
        self.attempt, self.worker_id = attempt, worker_id
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[LogLine | None] = asyncio.Queue()  # bounded by _put
        self.dropped = 0
        self.sent = 0
        # Created in an empty context: the pump's own records belong to no job.
        self._pump = self.loop.create_task(self._run(), name=f"log-{job_id}",
                                           context=contextvars.Context())

    def attach(self) -> None:
        """From now on, the calling task's records (and its threads') are this job's."""
        _current.set(self)

    def offer(self, line: LogLine) -> None:
        """Queue a line; from any thread (the loop's too), never blocks."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to send to
            self.loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: LogLine | None) -> None:
        # The end line and the stop always get in: a flood must not keep the pump waiting.
        if line is not None and not line.end and self.queue.qsize() >= MAX_PENDING:
            self.dropped += 1
            return
        self.queue.put_nowait(line)

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, then the attempt's `end` line, and stop."""
        _current.set(None)
        # Behind the lines already handed to the loop (`offer`: call_soon_threadsafe, FIFO).
        self.loop.call_soon(self._finish)
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), timeout)
        except TimeoutError:
            self._pump.cancel()

    def _finish(self) -> None:
        if self.dropped:
            self._put(self._line(logging.WARNING, __name__,
                                 f"{self.dropped} log line(s) of this job were dropped "
                                 f"(more than {MAX_PENDING} waiting)"))
        self._put(self._line(logging.INFO, __name__, "attempt ended", end=True))
        self._put(None)

    def _line(self, level: int, logger: str, message: str, *, end: bool = False,
              stamp: float | None = None) -> LogLine:
        return LogLine(time=time.time() if stamp is None else stamp,
                       level=logging.getLevelName(level), logger=logger[:128],
                       message=message[:LOG_MAX_LINE], attempt=self.attempt,
                       worker_id=self.worker_id, end=end)

    def line_of(self, record: logging.LogRecord) -> LogLine:
        message = redact(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            message += "\n" + "\n".join(traceback_lines(record.exc_info[1]))
        return self._line(record.levelno, record.name, message, stamp=record.created)

    async def _run(self) -> None:
        while True:
            line = await self.queue.get()
            if line is None:
                break
            try:
                await self.bus.nc.publish(self.subject, _encoder.encode(line))
                self.sent += 1
            except nats.errors.Error:
                self.dropped += 1  # connection trouble: the job goes on without this line
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.bus.nc.flush(timeout=2)


class JobLogHandler(logging.Handler):
    """Hands each record logged in a job's context to that job's sink."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _current.get()
        if sink is None or getattr(_inside, "active", False):
            return
        _inside.active = True
        try:
            sink.offer(sink.line_of(record))
        except Exception:  # a log line must never break the job that logged it
            self.handleError(record)
        finally:
            _inside.active = False


_handler: JobLogHandler | None = None
_users = 0
_lock = threading.Lock()


def install() -> None:
    """Put the handler on the root logger (once per process; `uninstall` as often)."""
    global _handler, _users
    with _lock:
        _users += 1
        if _handler is None:
            _handler = JobLogHandler()
            logging.getLogger().addHandler(_handler)


def uninstall() -> None:
    global _handler, _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _handler is not None:
            logging.getLogger().removeHandler(_handler)
            _handler = None
