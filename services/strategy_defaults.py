"""What the edges know of strategy files that the application service does not: the symbols
and timeframes a strategy selects (`StrategyDefaultsLookup` of libs/events/jobs.py), read with
the strategy config. Shared by the HTTP API and the CLI."""

from __future__ import annotations

from pathlib import Path

from libs.events.errors import InvalidRequest
from libs.events.job_types import TrainingRequest
from libs.events.jobs import StrategyDefaults, StrategyDefaultsLookup


def strategy_defaults(strategies_dir: Path | None) -> StrategyDefaultsLookup:
    """The lookup for strategies in `strategies_dir` (None: the configured default)."""

    def lookup(request: TrainingRequest) -> StrategyDefaults | None:
        return _load_defaults(request, strategies_dir)

    return lookup


def _load_defaults(
    request: TrainingRequest, strategies_dir: Path | None
) -> StrategyDefaults | None:
    # Imported on first use (in a thread: reading and validating a file), so that importing
    # the edges stays instant; the strategy package itself imports neither pandas nor TA-Lib.
    from libs.pipeline import strategy as strategy_config

    directory = strategies_dir or strategy_config.strategies_dir()
    field = "strategy_yaml" if request.strategy_yaml is not None else "strategy"
    try:
        if request.strategy_yaml is not None:
            parsed = strategy_config.parse_strategy(request.strategy_yaml, source="strategy_yaml")
        else:
            assert request.strategy is not None
            try:
                strategy_config.resolve_strategy_path(request.strategy, directory)
            except strategy_config.StrategyError:
                return None  # not known here; the trainers may know it
            parsed = strategy_config.load_strategy_by_name(request.strategy, directory)
    except strategy_config.StrategyError as exc:
        raise InvalidRequest(str(exc), field=field) from None
    return StrategyDefaults(
        symbols=strategy_config.symbols_of(parsed), timeframes=strategy_config.timeframes_of(parsed)
    )
