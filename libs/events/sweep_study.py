"""The Optuna side of a sweep, through its ask/tell interface: no I/O, no clock.

`SweepStudy.rebuild(state)` replays a sweep's asks and tells in log order into a fresh
in-memory study with the same seeded sampler, so a restarted coordinator's sampler is where the
crashed one's was: each ask samples again (advancing the sampler's random state exactly as
before) and must reproduce the logged values; each tell gives the logged result with the
intermediate (pruning) reports made before it. The next ask is then the one the uninterrupted
run would have made.

Optuna categoricals hold scalars only, so a `choice` goes to Optuna as the JSON text of each
option (`[64,32]`) and comes back decoded.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState, create_trial

from libs.events.sweep_fold import SweepState
from libs.events.sweep_fold import TrialState as SweepTrial
from libs.events.sweep_schema import Choice, IntRange, LogUniform, Param, SweepSpec, Uniform
from libs.events.sweep_spec import choice_label

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
_STATES: Final = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                  "failed": TrialState.FAIL}


class _Grid(optuna.samplers.GridSampler):
    """GridSampler without its `study.stop()` after the last point (which only works inside
    `optimize`): the coordinator stops at the sweep's trial budget, capped to the grid."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        return None


def distribution(param: Param) -> BaseDistribution:
    dist = param.dist
    if isinstance(dist, LogUniform):
        return FloatDistribution(dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return FloatDistribution(dist.low, dist.high)
    if isinstance(dist, IntRange):
        return IntDistribution(dist.low, dist.high)
    assert isinstance(dist, Choice)
    return CategoricalDistribution([choice_label(o) for o in dist.options])


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    return {p.key: distribution(p) for p in spec.params}


def to_value(param: Param, optuna_value: Any) -> Any:
    """The strategy value of what Optuna sampled."""
    if isinstance(param.dist, Choice):
        return json.loads(optuna_value)
    if isinstance(param.dist, IntRange):
        return int(optuna_value)
    return float(optuna_value)


def to_optuna(param: Param, value: Any) -> Any:
    return choice_label(value) if isinstance(param.dist, Choice) else value


def sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        space: dict[str, list[Any]] = {}
        for param in spec.params:
            dist = param.dist
            space[param.key] = ([choice_label(o) for o in dist.options]
                                if isinstance(dist, Choice)
                                else list(range(dist.low, dist.high + 1))
                                if isinstance(dist, IntRange) else [])
        return _Grid(space, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # A trial is compared once two others completed, from its second epoch on (steps are
        # 1-based epochs; Optuna prunes from step n_warmup_steps).
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


class SweepStudy:
    """One sweep's study: ask, report, tell, by the sweep's trial numbers."""

    def __init__(self, spec: SweepSpec, seed: int) -> None:
        self.spec = spec
        self.params = {p.key: p for p in spec.params}
        self.dists = distributions(spec)
        self.study = optuna.create_study(direction=spec.direction, sampler=sampler(spec, seed),
                                         pruner=pruner(spec))
        self.trials: dict[int, Trial] = {}
        self.reported: dict[int, dict[int, float]] = {}
        # Logged trials the sampler did not reproduce on a rebuild: told from the log instead.
        self.replaced: dict[int, SweepTrial] = {}

    @classmethod
    def rebuild(cls, state: SweepState) -> SweepStudy:
        """The study as it stood after the sweep's last logged event (see the module doc)."""
        study = cls(state.spec, state.seed)
        steps: list[tuple[int, str, SweepTrial]] = []
        for trial in state.trials:
            steps.append((trial.asked_seq, "ask", trial))
            if trial.told_seq is not None:
                steps.append((trial.told_seq, "tell", trial))
        for _, step, trial in sorted(steps, key=lambda s: s[0]):
            if step == "ask":
                study.replay_ask(trial)
            else:
                for at, value in sorted(trial.intermediate.items()):
                    study.report(trial.n, at, value)
                study.tell(trial.n, trial.status, trial.value)
        return study

    def ask(self, n: int) -> dict[str, Any]:
        """Sample trial `n`; returns its strategy values by key."""
        trial = self.study.ask(self.dists)
        self.trials[n] = trial
        self.reported[n] = {}
        return {key: to_value(self.params[key], trial.params[key]) for key in self.params}

    def replay_ask(self, logged: SweepTrial) -> None:
        values = self.ask(logged.n)
        if not _same(values, logged.params):
            # The sampler did not reproduce it (another Optuna version): keep the logged
            # values in the study instead, so the leaderboard and the next asks see them.
            log.warning("sweep trial %d: the sampler drew %s, the log says %s; using the log",
                        logged.n, values, logged.params)
            self.study.tell(self.trials[logged.n], state=TrialState.FAIL)
            self.trials.pop(logged.n)
            self.replaced[logged.n] = logged

    def report(self, n: int, step: int, value: float) -> bool:
        """Report an intermediate value; True when the pruner says stop."""
        if not math.isfinite(value) or step in self.reported.get(n, {}):
            return False
        self.reported.setdefault(n, {})[step] = value
        trial = self.trials.get(n)
        if trial is None:
            return False
        trial.report(value, step)
        return bool(trial.should_prune())

    def tell(self, n: int, status: str, value: float | None) -> None:
        trial = self.trials.pop(n, None)
        state = _STATES.get(status, TrialState.FAIL)
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        if trial is None:
            logged = self.replaced.get(n)
            if logged is not None:
                self._add(logged.params, state, value, self.reported.get(n, {}))
            return
        self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)

    def _add(self, params: Mapping[str, Any], state: TrialState, value: float | None,
             intermediate: Mapping[int, float]) -> None:
        self.study.add_trial(create_trial(
            params={k: to_optuna(self.params[k], v) for k, v in params.items()},
            distributions=self.dists, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values=dict(intermediate)))


def importance(state: SweepState) -> dict[str, float] | None:
    """Each parameter's importance for the objective (Optuna's fANOVA), from the complete
    trials; None when Optuna cannot compute it (fewer than two, or a constant objective)."""
    spec = state.spec
    complete = [t for t in state.trials if t.status == "complete" and t.value is not None]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return None
    params = {p.key: p for p in spec.params}
    dists = distributions(spec)
    study = optuna.create_study(direction=spec.direction)
    for trial in complete:
        study.add_trial(create_trial(
            params={k: to_optuna(params[k], v) for k, v in trial.params.items() if k in params},
            distributions=dists, value=trial.value))
    try:
        scores = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:
        log.info("no parameter importance for sweep %s: %s", state.sweep_id, exc)
        return None
    return {key: float(value) for key, value in scores.items()}


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, float) and isinstance(other, int | float):
            if not math.isclose(value, float(other), rel_tol=1e-12, abs_tol=0.0):
                return False
        elif value != other:
            return False
    return True
