"""The sweep's coordinator: asks Optuna for trials, trains each as ordinary jobs (one per seed),
reports their epochs for pruning, tells Optuna their results, and writes every step to the log.

The log is the coordinator's only memory. Started again after a crash (`trainbus sweep resume`)
it folds the sweep's events, rebuilds the study from them (libs/events/sweep_study.py),
submits any job of an asked trial that never reached the log, and watches the running trials'
jobs again; a trial told is never run again. Each step is written before the next one depends
on it: `asked` before its jobs are submitted (job ids derived from the sweep id, trial and seed,
so a second submit is the same job), `told` after its jobs ended.

A trial's pruning report at epoch e is the mean over its seeds of the epoch events'
`prune_on` value; a pruned trial's jobs are cancelled with the reason "pruned".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import nats.js.errors

from libs.events.catalog import ModelCatalog
from libs.events.errors import JobAlreadyFinished, JobNotFound, ServiceError
from libs.events.fold import TERMINAL, JobState
from libs.events.follow import read_job_state, state_folded_from_log
from libs.events.job_types import CancelRequest, TrainingRequest
from libs.events.jobs import JobService, idempotent_job_id
from libs.events.routing import RoutingMode
from libs.events.sweep_fold import (
    SWEEP_ENDED,
    SweepMessage,
    SweepState,
    TrialState,
    best_trial,
    fold_sweep,
)
from libs.events.sweep_log import publish_sweep_event, read_sweep
from libs.events.sweep_schema import (
    AnySweepEvent,
    SweepCancelled,
    SweepFinished,
    SweepSpec,
    TrialAsked,
    TrialTold,
)
from libs.events.sweep_spec import (
    grid_size,
    split_objective,
    trial_seeds,
    trial_strategy_name,
    trial_yaml,
)

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.sweep_study import SweepStudy

log = logging.getLogger(__name__)
PRUNED: Final = "pruned"
Notify = Callable[[SweepState, str], None]
# Polls a finished trial's metrics may be unreadable (NATS, the object store) before the trial
# is told failed: a hiccup must not lose a completed trial, a model gone for good must end it.
_MAX_UNREADABLE: Final = 20


class _NotReadable(Exception):
    """A finished job's metrics could not be read this time."""


def trial_key(sweep_id: str, n: int, k: int) -> str:
    """The idempotency key of trial n's seed k: the same key always names the same job."""
    return f"{sweep_id}:{n}:{k}"


def trial_job_ids(sweep_id: str, n: int, seeds: int) -> tuple[str, ...]:
    return tuple(idempotent_job_id(trial_key(sweep_id, n, k)) for k in range(seeds))


def budget(spec: SweepSpec) -> int:
    """The trials the sweep runs: `trials`, capped to the grid's size for the grid sampler."""
    return min(spec.trials, grid_size(spec.params)) if spec.sampler == "grid" else spec.trials


def epoch_report(spec: SweepSpec, jobs: list[JobState | None]) -> dict[int, float]:
    """Step (epoch, 1-based) -> the mean over seeds of `prune_on`, for the epochs every seed
    has finished."""
    histories = [job.history if job is not None else () for job in jobs]
    steps = min((len(h) for h in histories), default=0)
    out: dict[int, float] = {}
    for i in range(steps):
        values = [getattr(h[i], spec.prune_on) for h in histories]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            out[i + 1] = sum(values) / len(values)
    return out


class SweepCoordinator:
    """Runs one sweep until it is finished or cancelled (or the process stops)."""

    def __init__(self, bus: Bus, sweep_id: str, *, routing: RoutingMode = "auto",
                 models_dir: Path | None = None, poll: float = 0.3,
                 notify: Notify | None = None, by: str = "cli") -> None:
        self.bus, self.sweep_id = bus, sweep_id
        self.jobs = JobService(bus, routing=routing)
        self.catalog = ModelCatalog(bus, models_dir)
        self.poll = poll
        self.notify = notify or (lambda _state, _text: None)
        self.by = by
        self.state: SweepState | None = None
        self._unreadable: dict[int, int] = {}  # trial n -> polls its metrics were unreadable

    async def run(self) -> SweepState:
        from libs.events.sweep_study import SweepStudy  # Optuna: only where a sweep runs

        state = await read_sweep(self.bus, self.sweep_id)
        self.state = state
        if state.status in SWEEP_ENDED:
            return state
        study = SweepStudy.rebuild(state)
        for trial in state.running:  # re-attach: a job that never reached the log is sent now
            await self._submit(state.spec, trial)
        while True:
            state = self._current()
            if await self._cancelled():
                # What `cancel_sweep` read may predate a trial this process asked since (its
                # jobs would train to the end): cancel every trial this process knows running.
                await cancel_trial_jobs(self.jobs, self.sweep_id, state.running, by=self.by)
                return await read_sweep(self.bus, self.sweep_id)
            for trial in state.running:
                await self._watch(study, trial)
            state = self._current()
            total = budget(state.spec)
            while len(state.trials) < total and len(state.running) < state.spec.parallel:
                await self._ask(study, len(state.trials))
                state = self._current()
            if len(state.trials) >= total and not state.running:
                best = best_trial(state)
                await self._record(SweepFinished(sweep_id=self.sweep_id, time=time.time(),
                                                 by=self.by, best=best.n if best else None))
                self.notify(self._current(), "finished")
                return self._current()
            await asyncio.sleep(self.poll)

    # --- steps ----------------------------------------------------------------------------

    def _current(self) -> SweepState:
        assert self.state is not None
        return self.state

    async def _record(self, event: AnySweepEvent) -> None:
        seq = await publish_sweep_event(self.bus, event)
        new = fold_sweep(self.state, SweepMessage(seq=seq, event=event))
        assert new is not None
        self.state = new

    async def _cancelled(self) -> bool:
        subject = self.bus.names.sweep_subject(self.sweep_id, "cancelled")
        try:
            await self.bus.js.get_last_msg(self.bus.names.stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def _ask(self, study: SweepStudy, n: int) -> None:
        state = self._current()
        spec = state.spec
        values = study.ask(n)
        event = TrialAsked(sweep_id=self.sweep_id, time=time.time(), by=self.by, n=n,
                           params=values, job_ids=trial_job_ids(self.sweep_id, n, spec.seeds),
                           seeds=trial_seeds(state.seed, spec.seeds))
        await self._record(event)
        trial = self._current().trials[n]
        self.notify(self._current(), f"trial {n} asked: {_params_text(values)}")
        await self._submit(spec, trial)

    async def _submit(self, spec: SweepSpec, trial: TrialState) -> None:
        document = trial_yaml(spec.strategy_yaml, trial.params,
                              name=trial_strategy_name(spec.strategy, self.sweep_id))
        for k, seed in enumerate(trial.seeds):
            if await self._job(trial.job_ids[k]) is not None:
                continue  # already on the log: re-attached, not sent again
            request = TrainingRequest(
                strategy_yaml=document, symbols=list(spec.symbols),
                timeframes=list(spec.timeframes),  # type: ignore[arg-type]
                start=spec.start, end=spec.end, seed=seed, epochs=spec.epochs, pool=spec.pool,
                idempotency_key=trial_key(self.sweep_id, trial.n, k),
                requested_by=f"sweep {self.sweep_id}")
            await self.jobs.submit(request)

    async def _job(self, job_id: str) -> JobState | None:
        """The job's state: the projection's, else folded from the log itself."""
        return (await read_job_state(self.bus, job_id)
                or await state_folded_from_log(self.bus, job_id))

    async def _watch(self, study: SweepStudy, trial: TrialState) -> None:
        spec = self._current().spec
        jobs = [await self._job(job_id) for job_id in trial.job_ids]
        ended = all(job is not None and job.status in TERMINAL for job in jobs)
        if spec.pruner != "none":
            for step, value in sorted(epoch_report(spec, jobs).items()):
                # Every epoch is reported (the pruner compares trials by them), but a trial
                # whose jobs already ended is told as it ended: pruning it now (its epochs
                # seen at once after a resume, or faster than a poll) would throw a finished
                # result away.
                if study.report(trial.n, step, value) and not ended:
                    await self._prune(study, trial, step)
                    return
        if not ended:
            return
        finished = [job for job in jobs if job is not None]
        if any(job.status == "cancelled" and job.cancel_reason == PRUNED for job in finished):
            await self._tell(study, trial, "pruned", None, (), "pruned")
            return
        if not all(job.status == "completed" for job in finished):
            bad = next(job for job in finished if job.status != "completed")
            why = (bad.error.reason if bad.error else bad.cancel_reason) or bad.status
            await self._tell(study, trial, "failed", None, (),
                             f"job {bad.job_id} {bad.status}: {why}"[:4096])
            return
        try:
            values = tuple([await self._objective(spec, job) for job in finished])
        except _NotReadable as exc:  # a NATS or object-store hiccup: ask again next poll
            self._unreadable[trial.n] = misses = self._unreadable.get(trial.n, 0) + 1
            if misses < _MAX_UNREADABLE:
                return
            await self._tell(study, trial, "failed", None, (), str(exc)[:4096])
            return
        numbers = [v for v in values if v is not None]
        if len(numbers) != len(values):
            await self._tell(study, trial, "failed", None, values,
                             f"a job reported no {spec.objective}")
            return
        await self._tell(study, trial, "complete", sum(numbers) / len(numbers), values, None)

    async def _prune(self, study: SweepStudy, trial: TrialState, step: int) -> None:
        for job_id in trial.job_ids:
            with contextlib.suppress(JobAlreadyFinished, JobNotFound):
                await self.jobs.cancel(job_id, CancelRequest(reason=PRUNED,
                                                             requested_by=f"sweep {self.sweep_id}"))
        await self._tell(study, trial, "pruned", None, (), f"pruned at epoch {step}")

    async def _tell(self, study: SweepStudy, trial: TrialState, status: str,
                    value: float | None, values: tuple[float | None, ...],
                    reason: str | None) -> None:
        event = TrialTold(sweep_id=self.sweep_id, time=time.time(), by=self.by, n=trial.n,
                          state=status,  # type: ignore[arg-type]
                          value=value, values=values,
                          intermediate=dict(study.reported.get(trial.n, {})), reason=reason)
        await self._record(event)
        study.tell(trial.n, status, value)
        shown = f"{value:.6g}" if value is not None else (reason or "")
        self.notify(self._current(), f"trial {trial.n} {status}: {shown}")

    async def _objective(self, spec: SweepSpec, job: JobState) -> float | None:
        source, metric = split_objective(spec.objective)
        if source == "test":
            return _finite(job.test_metrics.get(metric))
        if job.model is None:
            return None
        try:
            detail = await self.catalog.get(job.model.strategy, job.job_id)
        except ServiceError as exc:
            log.warning("sweep %s: no metrics of job %s yet: %s", self.sweep_id, job.job_id, exc)
            raise _NotReadable(f"the metrics of job {job.job_id} could not be read: {exc}"
                               ) from None
        walk = detail.metrics.get("walk_forward")
        summary = walk.get("summary") if isinstance(walk, dict) else None
        entry = summary.get(metric) if isinstance(summary, dict) else None
        return _finite(entry.get("mean")) if isinstance(entry, dict) else None


async def cancel_sweep(bus: Bus, sweep_id: str, *, reason: str | None, by: str) -> SweepState:
    """Cancel the sweep (its coordinator stops at its next step) and its running trials' jobs;
    a sweep that already ended is left as it is."""
    state = await read_sweep(bus, sweep_id)
    if state.status in SWEEP_ENDED:
        return state
    await publish_sweep_event(bus, SweepCancelled(sweep_id=sweep_id, time=time.time(), by=by,
                                                  reason=reason))
    await cancel_trial_jobs(JobService(bus), sweep_id, state.running, by=by)
    return await read_sweep(bus, sweep_id)


async def cancel_trial_jobs(jobs: JobService, sweep_id: str, trials: Iterable[TrialState], *,
                            by: str) -> None:
    """Cancel the jobs of `trials` (those already ended, or not on the log, are skipped)."""
    for trial in trials:
        for job_id in trial.job_ids:
            with contextlib.suppress(JobAlreadyFinished, JobNotFound):
                await jobs.cancel(job_id, CancelRequest(reason=f"sweep {sweep_id} cancelled",
                                                        requested_by=by))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
