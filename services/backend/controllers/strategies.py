"""`GET /api/v1/strategies`: the strategy files in the backend's strategies dir, with the symbols
and timeframes each trains on by default (what the dashboard's submit form offers).

A file that does not parse is listed with its error instead of being hidden: the person who
wrote it sees why it cannot be submitted. Parsing imports the pipeline's config module (pandas,
TA-Lib for the indicator checks), so it runs in a thread.

`POST /api/v1/strategies/check`: every problem and warning of a YAML document, without
training; a read (it stores nothing), so no write token is needed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from msgspec import Struct

from services.backend.runtime import Runtime
from services.backend.security import READ_ONLY


class StrategyInfo(Struct, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    symbols: list[str] = []
    timeframes: list[str] = []
    epochs: int | None = None
    error: str | None = None


class CheckRequest(Struct, frozen=True, kw_only=True):
    yaml: str  # the strategy document, as a file would hold it


class CheckIssue(Struct, frozen=True, kw_only=True, omit_defaults=True):
    path: str  # dotted path of the key, `(top level)` for the document itself
    message: str  # what is wrong, or (a warning) what was ignored and why
    hint: str | None = None  # a fix, when one is obvious


class CheckReply(Struct, frozen=True, kw_only=True):
    ok: bool
    problems: list[CheckIssue]
    warnings: list[CheckIssue]


class StrategyController(Controller):
    path = "/api/v1/strategies"
    tags = ("strategies",)

    @get("/", summary="Strategies the backend knows, with their default symbols and timeframes")
    async def list_strategies(self, runtime: NamedDependency[Runtime]) -> list[StrategyInfo]:
        return await asyncio.to_thread(list_strategies, runtime.settings.strategies_dir)

    @post(
        "/check",
        status_code=HTTP_200_OK,
        opt={READ_ONLY: True},
        summary="Every problem and warning of a strategy document, without training",
        description=(
            "`ok` is false when the document has problems (each with the path of its key, "
            "the reason, and a fix when one is obvious); `warnings` name the keys accepted but "
            "ignored, with why. A read: no write token needed."
        ),
    )
    async def check_strategy(self, data: JSONBody[CheckRequest]) -> CheckReply:
        return await asyncio.to_thread(check_yaml, data.yaml)


def check_yaml(text: str) -> CheckReply:
    from libs.pipeline.strategy import check_strategy

    result = check_strategy(text, source="<request>")

    def issues(items: list[Any]) -> list[CheckIssue]:
        return [CheckIssue(path=i.path, message=i.message, hint=i.hint) for i in items]

    return CheckReply(ok=not result.problems, problems=issues(result.problems),
                      warnings=issues(result.warnings))


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
