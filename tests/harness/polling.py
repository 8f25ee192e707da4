"""Waiting for a condition that has no event of its own to wait on: poll it, with a deadline,
and fail saying what was awaited and what was seen last.

- `eventually(probe, accept)`: the general form (an async `probe`), failing at once when
  one of the watched processes exits;
- `wait_until(predicate, what)`: until `predicate()` (sync or async) is truthy;
- `wait_status` (the HTTP API's view of a job) and `wait_job_state` (the projection in KV).

Prefer an event when there is one: an `asyncio.Event`, or `Started` as the `ready=` callback
of a server task. Poll only what the server or another process knows.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import httpx

    from libs.events.bus import Bus
    from libs.events.fold import JobState

T = TypeVar("T")

TERMINAL = frozenset({"completed", "failed", "cancelled", "rejected"})


class Watched(Protocol):
    """A process whose death ends the wait (tests/reliability/cluster.py `Proc`)."""

    @property
    def name(self) -> str: ...

    @property
    def popen(self) -> subprocess.Popen[bytes] | None: ...

    def log_text(self) -> str: ...


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    procs: tuple[Watched, ...] = (),
) -> T:
    """Poll `probe` until `accept(result)`; return that result. Fails with the last result
    after `timeout`, and as soon as one of `procs` has exited (with its log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if accept(result):
            return result
        for proc in procs:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}) while "
                                     f"waiting for {what}:\n{proc.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}:\n{p.log_text()[-2000:]}" for p in procs)
            raise AssertionError(f"{what} not met within {timeout}s; last: {result!r}{tails}")
        await asyncio.sleep(interval)


async def wait_until(predicate: Callable[[], Any], what: str, *, timeout: float = 90.0,
                     interval: float = 0.05, procs: tuple[Watched, ...] = ()) -> Any:
    """Poll `predicate` (sync or async) until truthy; return its value."""

    async def probe() -> Any:
        value = predicate()
        return await value if inspect.isawaitable(value) else value

    return await eventually(probe, bool, timeout=timeout, interval=interval, what=what,
                            procs=procs)


async def wait_status(client: httpx.AsyncClient, job_id: str, statuses: Collection[str],
                      timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /api/v1/jobs/{id} until its status is one of `statuses`; the job's JSON."""

    async def state() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/jobs/{job_id}")
        return response.json() if response.status_code == 200 else None

    found = await eventually(state, lambda s: s is not None and s["status"] in statuses,
                             timeout=timeout, interval=0.1,
                             what=f"job {job_id} in {sorted(statuses)}")
    assert found is not None
    return found


async def wait_job_state(bus: Bus, job_id: str, statuses: Collection[str] = TERMINAL, *,
                         timeout: float = 120.0, procs: tuple[Watched, ...] = ()) -> JobState:
    """Poll the job's projected state (KV) until its status is one of `statuses`."""
    from libs.events.follow import read_job_state

    found = await eventually(lambda: read_job_state(bus, job_id),
                             lambda s: s is not None and s.status in statuses,
                             timeout=timeout, what=f"{job_id} in {sorted(statuses)}",
                             procs=procs)
    assert found is not None
    return found


class Started(Generic[T]):
    """A `ready=` callback: keeps what it is handed and wakes whoever waits for it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._value: list[T] = []  # the first value handed over, once there is one

    def __call__(self, value: T) -> None:
        if not self._value:
            self._value.append(value)
            self._event.set()

    async def wait(self, *tasks: asyncio.Future[Any], timeout: float = 60.0) -> T:
        """The first value handed over. Should one of `tasks` (the servers that will call
        back) end first, its error is raised."""
        ready = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({ready, *tasks}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._value:
            return self._value[0]
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError(f"{task!r} ended without calling back")
        raise AssertionError(f"no call back within {timeout}s")
