"""A sweep's search space checked against the strategy grammar, before anything is submitted.

Each parameter stands for the strategy built with its extremes (or each of its choices): every
such document must pass the strategy checker (libs/pipeline/strategy), so an unknown key, a
distribution that does not fit the key's type (`uniform` on an integer, a number for a list)
or a value out of the key's bounds is refused naming the key. A key the grammar accepts but
ignores is refused too: sweeping it would train the same model again and again. The objective
must be a number every trial reports for this strategy (libs/pipeline/headline.py).

The edges build the candidate documents (libs/events/sweep_spec.py `trial_yaml`) and pass
them here as YAML text: this module knows the grammar, not the sweep's schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from libs.pipeline.strategy import (
    ForwardReturnLabels,
    RegimeLabels,
    StrategyConfig,
    check_strategy,
)

CLASSIFICATION_KEYS: Final = ("samples", "loss", "accuracy", "macro_f1", "weighted_f1")
REGRESSION_KEYS: Final = ("samples", "loss", "rmse", "mae", "direction_accuracy")
BACKTEST_KEYS: Final = ("backtest_net_return", "backtest_sharpe", "backtest_max_drawdown",
                        "backtest_trades", "buy_and_hold_net_return", "buy_and_hold_sharpe",
                        "backtest_lift_vs_buy_and_hold")
_BASELINE_RE: Final = re.compile(r"^(baseline_[a-z0-9_]+|lift_[a-z0-9_]+_vs_[a-z0-9_]+)$")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One value of one parameter, and the base strategy with it set (YAML)."""

    key: str
    value: object
    yaml_text: str


@dataclass(frozen=True, slots=True)
class SpaceProblem:
    key: str  # the parameter at fault ("objective" for the objective)
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def check_candidates(candidates: Sequence[Candidate]) -> list[SpaceProblem]:
    """Every problem of every candidate document, each naming its parameter and value."""
    problems: list[SpaceProblem] = []
    seen: set[tuple[str, str, str]] = set()  # an unknown key is one problem, not one per value
    for candidate in candidates:
        check = check_strategy(candidate.yaml_text, source=f"{candidate.key}={candidate.value}")
        shown = _show(candidate.value)
        for issue in check.problems:
            if (candidate.key, issue.path, issue.message) in seen:
                continue
            seen.add((candidate.key, issue.path, issue.message))
            where = "" if issue.path == candidate.key else f" (at {issue.path})"
            problems.append(SpaceProblem(candidate.key,
                                         f"{shown} does not fit: {issue.message}{where}"))
        for issue in check.warnings:
            if issue.path == candidate.key or issue.path.startswith(f"{candidate.key}."):
                problems.append(SpaceProblem(candidate.key,
                                             f"is accepted but ignored: {issue.message}"))
    return _unique(problems)


def reported_metrics(config: StrategyConfig) -> set[str]:
    """The test metrics every trial of this strategy reports by name (baselines and lifts are
    matched by pattern in `check_objective`)."""
    labels = config.training.labels
    keys = set(REGRESSION_KEYS if isinstance(labels, ForwardReturnLabels)
               else CLASSIFICATION_KEYS)
    if not isinstance(labels, RegimeLabels):  # regime classes are no trade signals
        keys.update(BACKTEST_KEYS)
    return keys


def check_objective(base_yaml: str, source: str, metric: str) -> SpaceProblem | None:
    """Why no trial of the base strategy can report `<source>.<metric>` (None: it can)."""
    check = check_strategy(base_yaml, source="strategy")
    if check.config is None:
        return SpaceProblem("strategy", "; ".join(str(i) for i in check.problems[:5]))
    config = check.config
    if source == "walkforward" and config.training.walk_forward is None:
        return SpaceProblem("objective", f"walkforward.{metric}: the strategy has no "
                            "training.walk_forward, so no trial reports walk-forward metrics "
                            f"(use test.{metric})")
    known = reported_metrics(config)
    if metric in known or _BASELINE_RE.fullmatch(metric):
        return None
    return SpaceProblem("objective", f"{source}.{metric}: no trial of this strategy reports "
                        f"{metric!r}; it reports {', '.join(sorted(known))}")


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _unique(problems: list[SpaceProblem]) -> list[SpaceProblem]:
    seen: set[tuple[str, str]] = set()
    out: list[SpaceProblem] = []
    for problem in problems:
        if (problem.key, problem.message) not in seen:
            seen.add((problem.key, problem.message))
            out.append(problem)
    return out
