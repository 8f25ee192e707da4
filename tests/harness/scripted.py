"""A worker that fails or waits on cue: the real worker runtime (claims, fencing, events, log
lines) around the scriptable runner of tests/trainers/fakes.py, on the host pool only, so that
the container pool's real trainer keeps every job sent to it by name.

A job tagged `fail` logs a line, then raises a code error (a bug in the model code, its message
holding a password the traceback must mask); one tagged `wait` logs a line, waits for
`release`, logs another and completes; any other job "trains" as FakeRunner does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from libs.events.config import BusConfig
from libs.events.schema import TrainCommand
from libs.events.worker.port import CancelSignal, JobCallbacks, JobResult
from libs.events.worker.runtime import WorkerRuntime, WorkerSettings
from tests.harness.bus import open_bus
from tests.trainers.fakes import FakeRunner

HOST_WORKER = "fake-host-1"
SECRET = "hunter2hunter2"
log = logging.getLogger("tests.research")


def shape_check(width: int) -> None:
    raise ValueError(f"shape mismatch: {width} != 16 (password={SECRET})")


@dataclass
class ScriptedRunner(FakeRunner):
    release: threading.Event = field(default_factory=threading.Event)

    def run(self, command: TrainCommand, callbacks: JobCallbacks, cancel: CancelSignal,
            resume_from: bytes | None) -> JobResult:
        if "fail" in command.tags:
            log.warning("building the model for %s", command.job_id)
            shape_check(17)
        if "wait" in command.tags:
            log.warning("first line of %s", command.job_id)
            if not self.release.wait(60):
                raise TimeoutError("the test never released the job")
            log.warning("second line of %s", command.job_id)
        return super().run(command, callbacks, cancel, resume_from)


@contextlib.asynccontextmanager
async def scripted_host_worker(config: BusConfig) -> AsyncIterator[ScriptedRunner]:
    """A running host-pool worker (`HOST_WORKER`) with a ScriptedRunner, stopped at the end."""
    runner = ScriptedRunner(epochs=1, batches=2)
    async with open_bus(config) as bus:
        stop = asyncio.Event()
        host = WorkerRuntime(bus, WorkerSettings(kind="host", worker_id=HOST_WORKER,
                                                 pools=("host",)), runner)
        task = asyncio.create_task(host.run(stop))
        await host.wait_ready()
        try:
            yield runner
        finally:
            runner.release.set()
            stop.set()
            await asyncio.wait_for(task, 30)
