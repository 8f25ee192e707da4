"""`GET /api/v1/strategies`: the strategy files in the backend's strategies dir, with the symbols
and timeframes each trains on by default (what the dashboard's submit form offers).

A file that does not parse is listed with its error instead of being hidden: the person who
wrote it sees why it cannot be submitted. Parsing imports the pipeline's config module (pandas,
TA-Lib for the indicator checks), so it runs in a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from litestar import Controller, get
from litestar.di import NamedDependency
from msgspec import Struct

from services.backend.runtime import Runtime


class StrategyInfo(Struct, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    symbols: list[str] = []
    timeframes: list[str] = []
    epochs: int | None = None
    error: str | None = None


class StrategyController(Controller):
    path = "/api/v1/strategies"
    tags = ("strategies",)

    @get("/", summary="Strategies the backend knows, with their default symbols and timeframes")
    async def list_strategies(self, runtime: NamedDependency[Runtime]) -> list[StrategyInfo]:
        return await asyncio.to_thread(list_strategies, runtime.settings.strategies_dir)


def list_strategies(directory: Path) -> list[StrategyInfo]:
    from libs.pipeline import strategy as strategy_config
    from libs.pipeline.types import is_strategy_name

    if not directory.is_dir():
        return []
    names = sorted({p.stem for p in directory.iterdir()
                    if p.suffix in (".yaml", ".yml") and p.is_file()
                    and is_strategy_name(p.stem)})
    found: list[StrategyInfo] = []
    for name in names:
        try:
            parsed = strategy_config.load_strategy_by_name(name, directory)
        except strategy_config.StrategyError as exc:
            found.append(StrategyInfo(name=name, error=str(exc)))
            continue
        description = parsed.extras.get("description")
        found.append(StrategyInfo(
            name=name,
            description=description if isinstance(description, str) else None,
            symbols=strategy_config.symbols_of(parsed),
            timeframes=strategy_config.timeframes_of(parsed),
            epochs=parsed.training.epochs,
        ))
    return found
