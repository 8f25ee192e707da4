"""The `context_data` section (the reference platform's v3 grammar): external series that
indicators read with `data_source: <name>`, decoded and checked here, served from the local
price files by libs/pipeline/context.py.

Local providers (`local`, `file`, `ib`) are decoded into ContextDataConfig; `ib` is accepted
with a warning (trainbus never calls a broker: it reads the file an import would have written).
Any other provider (fred, cftc_cot, ...) needs the network and is refused at
`context_data[i].provider`, before its own keys (`series`, `frequency`) are looked at."""

from __future__ import annotations

from typing import Any

from libs.pipeline.strategy.problems import PathT, Problems, decode, show
from libs.pipeline.strategy.schema import (
    LOCAL_CONTEXT_PROVIDERS,
    ContextDataConfig,
    StrategyConfig,
)

_IMPORT_HINT = (
    "import the series as a local price file (`trainbus data import FILE --symbol NAME "
    "--timeframe TF`) and write {provider: local, symbol: NAME, timeframe: TF}"
)


def context_data(raw: dict[str, Any], problems: Problems) -> list[ContextDataConfig]:
    """The decoded series, every problem named by its path; names must be unique."""
    section = raw.get("context_data", [])
    if not isinstance(section, list):
        problems.add(("context_data",), f"expected a list of series, got {show(section)}")
        return []
    series: list[ContextDataConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(section):
        path: PathT = ("context_data", i)
        if isinstance(item, dict) and not _local_provider(item.get("provider"), path, problems):
            continue
        decoded: ContextDataConfig | None = decode(item, ContextDataConfig, path, problems)
        if decoded is None:
            continue
        if decoded.provider == "ib":
            problems.warn((*path, "provider"), "read from the local price file "
                          f"{decoded.symbol}_{decoded.timeframe}: trainbus never calls a broker")
        name = decoded.source_name
        if name in seen:
            problems.add((*path, "name"), f"{name!r} is also context_data[{seen[name]}]; "
                         "give one of them another `name`")
            continue
        seen[name] = i
        series.append(decoded)
    return series


def _local_provider(provider: Any, path: PathT, problems: Problems) -> bool:
    """Whether `provider` is served from local files; a problem naming the path if not (a
    missing provider is left to the decoder, which says it is required)."""
    if provider is None or (isinstance(provider, str) and provider in LOCAL_CONTEXT_PROVIDERS):
        return True
    problems.add(
        (*path, "provider"),
        f"{show(provider)} would fetch data over the network, which trainbus never does "
        f"(it serves {', '.join(LOCAL_CONTEXT_PROVIDERS)} from the data directory)",
        _IMPORT_HINT,
    )
    return False


def check_data_sources(config: StrategyConfig, problems: Problems) -> None:
    """Every `indicators.<id>.data_source` names a context_data series; a series no indicator
    reads is a warning (it is still loaded, and a missing file still fails the run)."""
    names = [series.source_name for series in config.context_data]
    read = {indicator.data_source for indicator in config.indicators.values()}
    for i, name in enumerate(names):
        if name not in read:
            problems.warn(("context_data", i), f"no indicator reads {name!r} "
                          f"(write `data_source: {name}` in one)")
    for ind_id, indicator in config.indicators.items():
        if indicator.data_source is not None and indicator.data_source not in names:
            defined = ", ".join(names) or "(none: add a context_data section)"
            problems.add(("indicators", ind_id, "data_source"),
                         f"unknown context series {indicator.data_source!r}; defined: {defined}")
