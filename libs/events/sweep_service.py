"""The sweep leaderboard behind both edges (`trainbus sweep show|list|promote`, GET
`/api/v1/sweeps[/{id}]` and the dashboard's sweep page): the sweep's folded events, each
trial's jobs as the projection has them (live progress), ranked by the objective.

A trial's value is the mean over its seeds (± the sample standard deviation); its metrics are
the means of its jobs' test metrics; its model is that of its best seed.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from libs.events.errors import InvalidRequest
from libs.events.fold import JobState
from libs.events.follow import read_job_state
from libs.events.sweep_fold import SweepState, TrialState, better, ranked
from libs.events.sweep_log import read_sweep, read_sweeps
from libs.events.sweep_schema import AnyDistribution, Choice, IntRange, LogUniform, Uniform

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.registry import AliasRecord


class TrialJob(Struct, frozen=True, kw_only=True):
    job_id: str
    seed: int
    status: str
    epoch: int | None = None
    total_epochs: int | None = None
    value: float | None = None


class TrialModel(Struct, frozen=True, kw_only=True):
    strategy: str
    version: str
    job_id: str


class TrialRow(Struct, frozen=True, kw_only=True):
    n: int
    rank: int | None  # 1 = best; None for trials not complete
    status: str
    params: dict[str, Any]
    value: float | None = None
    std: float | None = None
    values: list[float | None] = []
    reason: str | None = None
    jobs: list[TrialJob] = []
    metrics: dict[str, float] = {}
    backtest: dict[str, float] = {}
    model: TrialModel | None = None


class SweepSummary(Struct, frozen=True, kw_only=True):
    sweep_id: str
    status: str
    strategy: str
    objective: str
    direction: str
    trials: int
    told: int
    running: int
    best_value: float | None = None
    best_trial: int | None = None
    started_at: float = 0.0
    finished_at: float | None = None


class SweepView(Struct, frozen=True, kw_only=True):
    sweep_id: str
    status: str
    strategy: str
    objective: str
    direction: str
    sampler: str
    pruner: str
    seeds: int
    parallel: int
    trials_total: int
    told: int
    running: int
    params: dict[str, str]
    trials: list[TrialRow]
    importance: dict[str, float] | None = None
    best_trial: int | None = None
    seed: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    cancel_reason: str | None = None


def describe(dist: AnyDistribution) -> str:
    """The distribution as the command line writes it."""
    if isinstance(dist, LogUniform | Uniform):
        name = "loguniform" if isinstance(dist, LogUniform) else "uniform"
        return f"{name}({dist.low:g},{dist.high:g})"
    if isinstance(dist, IntRange):
        return f"int({dist.low},{dist.high})"
    assert isinstance(dist, Choice)
    return "choice(" + ",".join(_flow(o) for o in dist.options) + ")"


def _flow(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_flow(v) for v in value) + "]"
    return str(value)


def summary_of(state: SweepState) -> SweepSummary:
    from libs.events.sweep_fold import best_trial

    best = best_trial(state)
    return SweepSummary(
        sweep_id=state.sweep_id, status=state.status, strategy=state.spec.strategy,
        objective=state.spec.objective, direction=state.spec.direction,
        trials=state.spec.trials, told=state.told, running=len(state.running),
        best_value=best.value if best else None, best_trial=best.n if best else None,
        started_at=state.started_at, finished_at=state.finished_at)


class SweepService:
    def __init__(self, bus: Bus, *, models_dir: Path | None = None) -> None:
        self.bus = bus
        self.models_dir = models_dir

    async def list(self) -> list[SweepSummary]:
        return [summary_of(s) for s in await read_sweeps(self.bus)]

    async def get(self, sweep_id: str, *, with_importance: bool = True) -> SweepView:
        state = await read_sweep(self.bus, sweep_id)
        jobs = {job_id: await read_job_state(self.bus, job_id)
                for trial in state.trials for job_id in trial.job_ids}
        importance = None
        if with_importance:
            from libs.events.sweep_study import importance as compute  # Optuna, on demand

            importance = await asyncio.to_thread(compute, state)
        return view_of(state, jobs, importance)

    async def promote(self, sweep_id: str, alias: str, *, by: str) -> AliasRecord:
        """Point `<trial strategy>@<alias>` at the best trial's model."""
        from libs.events.registry import set_alias

        view = await self.get(sweep_id, with_importance=False)
        best = next((t for t in view.trials if t.rank == 1), None)
        if best is None or best.model is None:
            raise InvalidRequest(f"sweep {sweep_id} has no complete trial with a model yet",
                                 field="sweep_id")
        return await set_alias(self.bus, best.model.strategy, alias, best.model.job_id, by=by,
                               expires_after=None, models_dir=self.models_dir,
                               reason=f"sweep {sweep_id}: best trial {best.n} "
                                      f"({view.objective} {best.value})")


def view_of(state: SweepState, jobs: dict[str, JobState | None],
            importance: dict[str, float] | None) -> SweepView:
    """The leaderboard of a sweep (pure: the sweep state and its jobs' states)."""
    rows: list[TrialRow] = []
    rank = 0
    for trial in ranked(state):
        complete = trial.status == "complete" and trial.value is not None
        if complete:
            rank += 1
        rows.append(_row(state, trial, jobs, rank if complete else None))
    spec = state.spec
    best = next((r.n for r in rows if r.rank == 1), None)
    return SweepView(
        sweep_id=state.sweep_id, status=state.status, strategy=spec.strategy,
        objective=spec.objective, direction=spec.direction, sampler=spec.sampler,
        pruner=spec.pruner, seeds=spec.seeds, parallel=spec.parallel, trials_total=spec.trials,
        told=state.told, running=len(state.running),
        params={p.key: describe(p.dist) for p in spec.params}, trials=rows,
        importance=importance, best_trial=best, seed=state.seed, started_at=state.started_at,
        finished_at=state.finished_at, cancel_reason=state.cancel_reason)


def _row(state: SweepState, trial: TrialState, jobs: dict[str, JobState | None],
         rank: int | None) -> TrialRow:
    trial_jobs: list[TrialJob] = []
    done: list[JobState] = []
    for k, job_id in enumerate(trial.job_ids):
        job = jobs.get(job_id)
        value = trial.values[k] if k < len(trial.values) else None
        trial_jobs.append(TrialJob(
            job_id=job_id, seed=trial.seeds[k], status=job.status if job else "queued",
            epoch=job.epoch if job else None, total_epochs=job.total_epochs if job else None,
            value=value))
        if job is not None and job.status == "completed":
            done.append(job)
    metrics = _mean_metrics(done)
    numbers = [v for v in trial.values if v is not None]
    std = statistics.stdev(numbers) if len(numbers) > 1 else (0.0 if numbers else None)
    return TrialRow(
        n=trial.n, rank=rank, status=trial.status, params=dict(trial.params), value=trial.value,
        std=std, values=list(trial.values), reason=trial.reason, jobs=trial_jobs,
        metrics=metrics,
        backtest={k: v for k, v in metrics.items()
                  if k.startswith(("backtest_", "buy_and_hold_"))},
        model=_best_model(state, trial, jobs))


def _mean_metrics(jobs: list[JobState]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for job in jobs:
        for key, value in job.test_metrics.items():
            if isinstance(value, int | float):
                sums.setdefault(key, []).append(float(value))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _best_model(state: SweepState, trial: TrialState,
                jobs: dict[str, JobState | None]) -> TrialModel | None:
    best: tuple[float | None, JobState] | None = None
    for k, job_id in enumerate(trial.job_ids):
        job = jobs.get(job_id)
        if job is None or job.model is None:
            continue
        value = trial.values[k] if k < len(trial.values) else None
        if best is None or (value is not None and (
                best[0] is None or better(state.spec.direction, value, best[0]))):
            best = (value, job)
    if best is None:
        return None
    model = best[1].model
    assert model is not None
    return TrialModel(strategy=model.strategy, version=model.version, job_id=best[1].job_id)
