"""The worker runtime shared by every trainer: pull, lease, heartbeat, cancel, events, drain.

    runtime = WorkerRuntime(bus, WorkerSettings.for_kind("container"), PipelineRunner(...))
    await runtime.run(stop)          # until `stop` is set; then drains and returns

The container trainer and the host trainer are two configurations of this class (pools,
device, session view); neither holds coordination logic of its own.

Phases (uvicorn-style): startup (JetStream objects, pool subscriptions, first heartbeat), main
loop (pull one command at a time while a slot is free), shutdown (stop pulling, ask running jobs
to hand back a checkpoint, wait up to `drain_timeout`, then cancel; remove the heartbeat).
Each step is logged. Signal handlers (services/trainers/process.py) only set `stop` / `force`.

Pulling (checked on a real nats-server): `fetch(batch=1)` on the own pool's durable
consumer, then on `any`, one after the other; never two fetches in flight and never a cancelled
fetch (shutdown waits for the running fetch to expire, at most `fetch_timeout`). An idle worker
does not long-poll: a core subscription on its pools' train subjects is a doorbell (it consumes
nothing) that starts the next sweep within a millisecond of a publish, so a job is claimed
~10-20 ms after it is sent instead of up to a long-poll later; a slow poll catches
redeliveries (a nak or an expired lease rings no bell).

What happens to one delivery is in attempt.py; the thread -> loop relay and the fenced event
writer in relay.py; the port to the work in port.py; the real pipeline behind it in
services/trainers/pipeline_runner.py; models in the object store in libs/events/models.py.

Capacity > 1 runs jobs in parallel threads of one process. Torch's global RNG and its
deterministic-algorithms switch are process-wide, so only capacity 1 keeps the guarantee that
the same command gives bit-identical weights; scale out with more worker processes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors
import nats.js.errors

from libs import worker_defaults as defaults
from libs.events.bus import Bus
from libs.events.heartbeat import (
    WorkerHeartbeat,
    delete_heartbeat,
    put_heartbeat,
)
from libs.events.models import fetch_model
from libs.events.schema import AnyEvent, PoolName, WorkerKind
from libs.events.setup import delivery_limits, ensure_jetstream
from libs.events.subjects import POOLS
from libs.events.worker import job_log
from libs.events.worker.attempt import AttemptSettings, JobAttempt
from libs.events.worker.port import (
    JobCallbacks,
    JobCancelled,
    JobFailed,
    JobResult,
    JobRunner,
    RunnerInfo,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

__all__ = [
    "JobCallbacks",
    "JobCancelled",
    "JobFailed",
    "JobResult",
    "JobRunner",
    "RunnerInfo",
    "WorkerObserver",
    "WorkerRuntime",
    "WorkerSettings",
    "fetch_model",
]

log = logging.getLogger(__name__)

VERSION = "1"


def default_worker_id(kind: str) -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{kind}-{host}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """How one worker serves. `pools`: its own pool first, then `any`."""

    kind: WorkerKind
    worker_id: str
    pools: tuple[PoolName, ...]
    capacity: int = defaults.CAPACITY
    host: str = field(default_factory=socket.gethostname)
    heartbeat_interval: float = 3.0  # KV TTL is BusConfig.workers_ttl (15 s)
    progress_interval: float = 0.25  # at most ~4 progress events per second per job
    checkpoint_every: int = defaults.CHECKPOINT_EVERY
    checkpoint_interval: float = defaults.CHECKPOINT_INTERVAL
    fetch_timeout: float = 0.05  # one fetch(batch=1); a sweep is one per pool
    poll_interval: float = 1.0  # idle: sweep at least this often (redeliveries ring no bell)
    drain_timeout: float = defaults.DRAIN_TIMEOUT
    lease_interval: float | None = None  # default: the consumer's ack_wait / 4
    data_dir: Path | None = None
    models_dir: Path | None = None
    strategies_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")
        if not self.pools or any(pool not in POOLS for pool in self.pools):
            raise ValueError(f"pools must be some of {', '.join(POOLS)}, got {self.pools}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0")
        if self.checkpoint_interval < 0:
            raise ValueError("checkpoint_interval must be >= 0")
        for name in ("heartbeat_interval", "progress_interval", "fetch_timeout",
                     "poll_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    @classmethod
    def for_kind(
        cls, kind: WorkerKind, *, worker_id: str | None = None, **overrides: Any
    ) -> WorkerSettings:
        """Pools `(<kind>, any)`, a fresh worker id unless given."""
        return cls(kind=kind, worker_id=worker_id or default_worker_id(kind),
                   pools=(kind, "any"), **overrides)


class WorkerObserver(Protocol):
    """Optional bookkeeping beside the runtime (the host trainer's session view)."""

    def on_event(self, event: AnyEvent) -> None:
        """Every event this worker published (in the loop; must be fast, must not raise)."""
        ...

    def session_view(self) -> dict[str, Any] | None:
        """What the heartbeat shows as `session` (None: nothing)."""
        ...


class WorkerRuntime:
    """Serves train commands from `settings.pools` with `job_runner` until stopped."""

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings,
        job_runner: JobRunner,
        *,
        observer: WorkerObserver | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.runner = job_runner
        self.observer = observer
        self.info: RunnerInfo | None = None
        self.started_at = time.time()
        self._subs: list[tuple[PoolName, JetStreamContext.PullSubscription]] = []
        self._limits: dict[str, tuple[int, int]] = {}  # pool -> (attempts, hand-backs)
        self._ack_wait = bus.config.ack_wait
        self._jobs: dict[asyncio.Task[None], JobAttempt] = {}
        self._slot_free = asyncio.Event()
        self._doorbell = asyncio.Event()
        self._rang: set[str] = set()
        self._bells: list[Subscription] = []
        self._ready = asyncio.Event()
        self._serving = False

    # --- views ---

    @property
    def running_jobs(self) -> list[str]:
        return [a.job_id for a in self._jobs.values() if a.job_id is not None]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until startup is done (subscriptions bound, first heartbeat written)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def heartbeat(self) -> WorkerHeartbeat:
        info = self.info or RunnerInfo(device="unknown")
        return WorkerHeartbeat(
            worker_id=self.settings.worker_id, kind=self.settings.kind,
            pools=list(self.settings.pools), host=self.settings.host, pid=os.getpid(),
            device=info.device, capabilities=dict(info.capabilities),
            capacity=self.settings.capacity, running=self.running_jobs,
            session=self.observer.session_view() if self.observer is not None else None,
            started_at=self.started_at, updated_at=time.time(), version=VERSION,
        )

    # --- lifecycle ---

    async def run(self, stop: asyncio.Event, *, force: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, then drain (bounded by `drain_timeout`, cut short by
        `force`)."""
        await self._startup()
        job_log.install()  # each job's own log records to its log subject (job_log.py)
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._lease_loop(), name="worker-lease"),
        ]
        try:
            await self._pull_loop(stop)
        finally:
            try:
                await self._shutdown(background, force)
            finally:
                job_log.uninstall()

    async def _startup(self) -> None:
        s = self.settings
        log.info("worker %s (%s) starting on pools %s", s.worker_id, s.kind, ", ".join(s.pools))
        # Not the logs stream: a trainer may not create streams, and asking would only wait
        # for the server's silence; lines published before the backend made it are not kept.
        await ensure_jetstream(self.bus, logs=False)
        self.info = await asyncio.to_thread(self.runner.describe)
        for pool in s.pools:
            consumer = self.bus.names.consumer(pool)
            info = await self.bus.js.consumer_info(self.bus.names.stream, consumer)
            # Attempts that may run and hand-backs that spend none, out of the consumer's
            # deliveries (its last one is the give-up one).
            self._limits[pool] = delivery_limits(
                int(info.config.max_deliver or 0), self.bus.config.max_deliver,
                self.bus.config.max_handbacks)
            self._ack_wait = min(self._ack_wait, float(info.config.ack_wait or self._ack_wait))
            sub = await self.bus.js.pull_subscribe_bind(durable=consumer,
                                                         stream=self.bus.names.stream)
            self._subs.append((pool, sub))
        for pool in s.pools:
            self._bells.append(await self.bus.nc.subscribe(
                self.bus.names.train_subject(pool), cb=self._ring_for(pool)))
        self.bus.on_reconnected(self._after_reconnect)
        self._serving = True
        await self._put_heartbeat()
        self._ready.set()
        log.info("worker %s ready on %s (ack_wait %gs, attempts and hand-backs %s)",
                 s.worker_id, self.info.device, self._ack_wait, self._limits)

    async def _pull_loop(self, stop: asyncio.Event) -> None:
        """Sweep the pools in order with one short fetch each while a slot is free; when a
        sweep finds nothing, wait for a doorbell (a train command published to one of our
        pools) or `poll_interval` (redeliveries ring no bell), then sweep again, the pools
        that rang first. A pool that rang after an empty sweep holds only new commands, so
        taking it first keeps the own-pool-before-any priority for everything older."""
        default = list(self._subs)
        after_idle = False
        while not stop.is_set():
            if len(self._jobs) >= self.settings.capacity:
                self._slot_free.clear()
                await _wait_any(self._slot_free, stop, timeout=1.0)
                after_idle = False
                continue
            rang, self._rang = self._rang, set()
            self._doorbell.clear()
            order = default
            if after_idle and rang:
                order = sorted(default, key=lambda item: item[0] not in rang)
            took = False
            for pool, sub in order:
                if stop.is_set() or len(self._jobs) >= self.settings.capacity:
                    break
                msg = await self._fetch_one(pool, sub)
                if msg is not None:
                    self._start(msg, pool)
                    took = True
            after_idle = not took
            if not took:
                await _wait_any(self._doorbell, stop, timeout=self.settings.poll_interval)

    async def _fetch_one(
        self, pool: str, sub: JetStreamContext.PullSubscription
    ) -> Msg | None:
        """One `fetch(batch=1)`, awaited to its end (never cancelled)."""
        try:
            msgs = await sub.fetch(batch=1, timeout=self.settings.fetch_timeout)
        except nats.errors.TimeoutError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.debug("fetch on %s failed (%s); retrying shortly", pool, exc)
            await asyncio.sleep(0.5)  # disconnected: don't spin
            return None
        return msgs[0] if msgs else None

    def _ring_for(self, pool: str) -> Callable[[Msg], Awaitable[None]]:
        async def ring(_msg: Msg) -> None:
            self._rang.add(pool)
            self._doorbell.set()

        return ring

    def _start(self, msg: Msg, pool: PoolName) -> None:
        s = self.settings
        assert self.info is not None
        max_deliver, max_handbacks = self._limits.get(
            pool, (self.bus.config.max_deliver, self.bus.config.max_handbacks))
        attempt = JobAttempt(
            self.bus, msg, self.runner, self.info,
            AttemptSettings(
                worker_id=s.worker_id, kind=s.kind, host=s.host, pool=pool,
                max_deliver=max_deliver, max_handbacks=max_handbacks,
                progress_interval=s.progress_interval,
            ),
            on_event=self._on_event,
        )
        task = asyncio.create_task(attempt.run(), name=f"job-seq-{attempt.seq}")
        self._jobs[task] = attempt
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.pop(task, None)
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:  # JobAttempt.run catches all
            log.error("job task %s ended with an error", task.get_name(),
                      exc_info=task.exception())

    def _on_event(self, event: AnyEvent) -> None:
        if self.observer is not None:
            try:
                self.observer.on_event(event)
            except Exception:  # an observer's bug must not break the job
                log.exception("worker observer failed on %s", type(event).__name__)

    async def _shutdown(self, background: list[asyncio.Task[None]],
                        force: asyncio.Event | None) -> None:
        s = self.settings
        self._serving = False
        log.info("worker %s: stopped pulling", s.worker_id)
        if self._jobs:
            log.info("worker %s: draining %d job(s): %s", s.worker_id, len(self._jobs),
                     ", ".join(self.running_jobs) or "-")
            for attempt in self._jobs.values():
                attempt.request_stop("drain", "worker shutting down")
            await self._wait_drained(set(self._jobs), force)
            leftover = [t for t in self._jobs if not t.done()]
            if leftover:
                log.warning("worker %s: %d job(s) did not drain in time; abandoning them "
                            "(redelivered after ack_wait)", s.worker_id, len(leftover))
                for task in leftover:
                    task.cancel()
                await asyncio.gather(*leftover, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for _, pull in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await pull.unsubscribe()
        for bell in self._bells:
            with contextlib.suppress(nats.errors.Error):
                await bell.unsubscribe()
        self._subs.clear()
        self._bells.clear()
        try:
            await asyncio.wait_for(delete_heartbeat(self.bus, s.worker_id), 2.0)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.info("heartbeat of %s not removed (%s); it expires by TTL", s.worker_id, exc)
        log.info("worker %s stopped", s.worker_id)

    async def _wait_drained(
        self, pending: set[asyncio.Task[None]], force: asyncio.Event | None
    ) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        forced = asyncio.ensure_future(force.wait()) if force is not None else None
        try:
            while pending and not (force is not None and force.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waitset: set[asyncio.Future[Any]] = set(pending)
                if forced is not None:
                    waitset.add(forced)
                done, _ = await asyncio.wait(waitset, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
        finally:
            if forced is not None:
                forced.cancel()

    # --- housekeeping ---

    async def _put_heartbeat(self) -> None:
        await put_heartbeat(self.bus, self.heartbeat())

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await asyncio.wait_for(self._put_heartbeat(), timeout=5.0)
                if failing:
                    log.info("heartbeats flowing again")
                failing = False
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                if not failing:
                    log.warning("heartbeat not written (%s)", exc)
                failing = True

    async def _lease_loop(self) -> None:
        interval = self.settings.lease_interval or self._ack_wait / 4
        tick = max(0.05, min(1.0, interval / 2))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for attempt in list(self._jobs.values()):
                if now - attempt.last_lease >= interval:
                    await attempt.keep_lease()

    async def _after_reconnect(self) -> None:
        if not self._serving:
            return
        for attempt in list(self._jobs.values()):
            try:
                await attempt.recheck_cancel()
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("cancel re-check of %s failed (%s)", attempt.label, exc)
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
            await asyncio.wait_for(self._put_heartbeat(), timeout=5.0)


async def _wait_any(*events_and_timeout: Any, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events_and_timeout]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
