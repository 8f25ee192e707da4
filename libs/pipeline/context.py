"""Context series (the strategy's `context_data`): external bars that indicators read with
`data_source: <name>`, served from the local price files and aligned without look-ahead.

Loading: each series is the local file of its symbol and timeframe (`load_price_data`, the
data directory the run reads), from its first bar up to the run's `end`. Never cut at the
run's start: recursive indicators (EMA, ...) depend on where their series starts, so reading
it whole makes a context value the same for training, prediction and any asked window.

The loaded frames ride along with the traded symbol's bars under `context:<name>` keys
(`load_symbol_prices`, predict's frames), so whatever passes the bars on carries them and
the data fingerprint hashes them; `split_context` takes them out again.

Alignment: an indicator on a context series is computed on the context bars, then each bar of
a timeframe sees the latest context bar CLOSED by that bar's close (features.visible_positions:
bars are stamped at their open, a context bar stamped c closes at c + its timeframe), held
until the next one closes (`alignment: forward_fill`). Rows before the first closed context
bar are NaN and dropped with the warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from libs.pipeline.data import DataError, load_price_data
from libs.pipeline.features import visible_positions
from libs.pipeline.indicators import compute_indicators
from libs.pipeline.strategy import ContextDataConfig, IndicatorConfig, StrategyConfig

CONTEXT_PREFIX = "context:"


def context_key(name: str) -> str:
    """The key a context series' bars travel under beside the timeframes' bars."""
    return f"{CONTEXT_PREFIX}{name}"


def load_context_prices(
    strategy: StrategyConfig,
    *,
    data_dir: Path | None = None,
    end: str | pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """`{context:<name>: bars}` for every context_data series, from its first bar to `end`.
    A missing file is a DataError naming the series and the file looked for."""
    frames: dict[str, pd.DataFrame] = {}
    for i, series in enumerate(strategy.context_data):
        try:
            frame = load_price_data(series.symbol, series.timeframe, data_dir=data_dir, end=end)
        except DataError as exc:
            raise DataError(
                f"context_data[{i}] ({series.source_name}: {series.provider} "
                f"{series.symbol} {series.timeframe}): {exc}. Context series are read from "
                f"local files only: import it with `trainbus data import FILE --symbol "
                f"{series.symbol} --timeframe {series.timeframe}`"
            ) from None
        frames[context_key(series.source_name)] = frame
    return frames


def split_context(
    prices: Mapping[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """(bars per timeframe, bars per context name) from one mapping holding both."""
    by_tf = {key: frame for key, frame in prices.items() if not key.startswith(CONTEXT_PREFIX)}
    context = {key.removeprefix(CONTEXT_PREFIX): frame for key, frame in prices.items()
               if key.startswith(CONTEXT_PREFIX)}
    return by_tf, context


def aligned(
    values: pd.DataFrame, context_tf: str, index: pd.DatetimeIndex, timeframe: str
) -> pd.DataFrame:
    """`values` (on context bars) on the bars `index` of `timeframe`: each bar takes the row
    of the latest context bar closed by its own close; NaN before the first one."""
    pos = visible_positions(pd.DatetimeIndex(values.index), context_tf, index, timeframe)
    unseen = pos < 0
    out = values.to_numpy(dtype=np.float64)[np.maximum(pos, 0)] if len(values) else np.full(
        (len(index), values.shape[1]), np.nan)
    out[unseen] = np.nan
    return pd.DataFrame(out, index=index, columns=values.columns)


def _series_of(strategy: StrategyConfig, name: str) -> ContextDataConfig:
    return next(s for s in strategy.context_data if s.source_name == name)


def indicators_with_context(
    prices: pd.DataFrame,
    timeframe: str,
    strategy: StrategyConfig,
    context: Mapping[str, pd.DataFrame],
) -> pd.DataFrame:
    """`compute_indicators` on `prices` (bars of `timeframe`), the indicators with a
    `data_source` computed on that context series and aligned to these bars; columns in the
    order: the own first, then each context series'."""
    own: dict[str, IndicatorConfig] = {}
    by_source: dict[str, dict[str, IndicatorConfig]] = {}
    for ind_id, cfg in strategy.indicators.items():
        if cfg.data_source is None:
            own[ind_id] = cfg
        else:
            by_source.setdefault(cfg.data_source, {})[ind_id] = cfg
    frame = compute_indicators(prices, own)
    if not by_source:
        return frame
    parts = [frame]
    index = pd.DatetimeIndex(prices.index)
    for name, indicators in by_source.items():
        if name not in context:
            raise DataError(f"indicators {', '.join(indicators)} read context series {name!r}, "
                            "whose bars were not loaded (load_context_prices)")
        values = compute_indicators(context[name], indicators)
        parts.append(aligned(values, _series_of(strategy, name).timeframe, index, timeframe))
    return pd.concat(parts, axis=1)
