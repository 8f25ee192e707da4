"""Predictions and backtests of a saved model from raw bars, through the training's own code.

The features are rebuilt by `dataset.symbol_features` (the function training runs) from the
manifest's strategy (indicators, fuzzy sets, inputs, lags) and timeframes, and refused unless
their names are the saved `feature_names`: a model is never fed columns it was not trained on.

Warm-up: recursive indicators (EMA, MACD, ...) depend on where their series starts, so the bars
are read from where the training read them (its `data_window.start` less `history_required`
bars, or the file's first bar) whenever the asked window lies after it: predicting the model's
own test window reproduces the training's feature rows, hence its predictions, bit for bit. A
window before that origin reads `history_required` bars before `start`, and refuses when the
data has fewer. Bars after `end` are never read: predicting bar t with data that ends at t
gives what the full file gives (no look-ahead in serving either).

Output per bar: its time, the class probabilities (BUY / HOLD / SELL) or the predicted return,
and the signal after `decisions.confidence_threshold` (a regression trades its sign).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from libs.pipeline.backtest import (
    SymbolSignals,
    directions_from_probabilities,
    directions_from_returns,
    run_backtest,
)
from libs.pipeline.context import load_context_prices
from libs.pipeline.data import DataError, load_price_data, resample, window
from libs.pipeline.dataset import symbol_features
from libs.pipeline.labels import CLASS_NAMES, class_names, is_signal
from libs.pipeline.scorecard import NOT_SIGNALS_NOTE, backtest_settings
from libs.pipeline.storage.layout import ModelNotFoundError, parse_version_dir
from libs.pipeline.storage.models import FeatureMismatchError, LoadedModel, ModelStorage, predict
from libs.pipeline.strategy import sequence_length_of
from libs.pipeline.windows import Windows, stack_windows, step_names

SIGNAL_NAMES: dict[int, str] = {1: "BUY", 0: "HOLD", -1: "SELL"}


class PredictError(DataError):
    """A window that cannot be predicted (no bars, too little warm-up, a missing column)."""


@dataclass(frozen=True, eq=False)
class SymbolPredictions:
    """One symbol's predictions, bar by bar, with the base-timeframe bars they came from."""

    symbol: str
    times: pd.DatetimeIndex
    outputs: np.ndarray  # (n, 3) probabilities, or (n,) predicted returns
    direction: np.ndarray  # int8: +1 BUY, 0 HOLD, -1 SELL, after the confidence threshold
    confidence: np.ndarray
    prices: pd.DataFrame
    regression: bool
    class_names: tuple[str, ...] = CLASS_NAMES
    # False for classes that describe the market (regime), not a trade: rows name the class,
    # there is no signal, and nothing backtests them.
    signals: bool = True

    def rows(self) -> list[dict[str, Any]]:
        """Plain rows (JSON / CSV): time, symbol, probabilities or value, signal (or class)."""
        out: list[dict[str, Any]] = []
        for i, time in enumerate(self.times):
            row: dict[str, Any] = {"time": time.isoformat(), "symbol": self.symbol}
            if self.regression:
                row["predicted_return"] = float(self.outputs[i])
            else:
                row.update({f"p_{name.lower()}": float(self.outputs[i, k])
                            for k, name in enumerate(self.class_names)})
            if self.signals:
                row["signal"] = SIGNAL_NAMES[int(self.direction[i])]
            else:
                row["class"] = self.class_names[int(np.argmax(self.outputs[i]))]
            out.append(row)
        return out


def model_timeframes(loaded: LoadedModel) -> tuple[list[str], str]:
    """(the timeframes the model reads, its base timeframe)."""
    timeframes = list(loaded.features.get("timeframes") or [loaded.ref.timeframe])
    return timeframes, loaded.ref.timeframe


def model_symbols(loaded: LoadedModel) -> list[str]:
    return list(loaded.metadata.get("symbols") or loaded.features.get("symbols") or [])


def _origin(loaded: LoadedModel) -> pd.Timestamp | None:
    start = (loaded.metadata.get("data_window") or {}).get("start")
    return pd.Timestamp(start, tz="UTC") if start else None


def _bound(value: str | pd.Timestamp | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _from_origin(loaded: LoadedModel, start: pd.Timestamp | None) -> bool:
    """Whether the window lies after where the training started reading bars."""
    origin = _origin(loaded)
    return start is None or origin is None or start >= origin


def _frames(
    loaded: LoadedModel, symbol: str, *, data_dir: Path | None,
    bars: pd.DataFrame | None, start: pd.Timestamp | None, end: str | pd.Timestamp | None,
) -> dict[str, pd.DataFrame]:
    """The bars of every timeframe the model reads, from the warm-up origin to `end`, and its
    context_data series from the data directory (whole up to `end`, as the training read them,
    under `context:<name>` keys)."""
    timeframes, base = model_timeframes(loaded)
    history = loaded.config.training_data.history_required
    begin = _origin(loaded) if _from_origin(loaded, start) else start
    context = load_context_prices(loaded.config, data_dir=data_dir, end=end)
    if bars is not None:
        cut = window(bars, None, end)
        return {**{tf: cut if tf == base else resample(cut, tf) for tf in timeframes}, **context}
    return {**{tf: window(load_price_data(symbol, tf, data_dir=data_dir, end=end), begin, None,
                          history=history)
               for tf in timeframes},
            **context}


def _check_history(frames: Mapping[str, pd.DataFrame], base: str, start: pd.Timestamp | None,
                   history: int, symbol: str) -> None:
    if start is None:
        return
    before = int((frames[base].index < start).sum())
    if before < history:
        raise PredictError(
            f"{symbol}: {before} bars before {start.isoformat()}, the model needs "
            f"training_data.history_required = {history} to warm its indicators up")


def predict_symbol(
    loaded: LoadedModel,
    symbol: str,
    *,
    data_dir: Path | None = None,
    bars: pd.DataFrame | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> SymbolPredictions:
    """The model's predictions for `symbol` on [start, end] (bars from the data directory, or
    `bars`: base-timeframe OHLCV with its own warm-up before `start`)."""
    base = loaded.ref.timeframe
    begin = _bound(start)
    frames = _frames(loaded, symbol, data_dir=data_dir, bars=bars, start=begin, end=end)
    missing = [c for c in ("open", "high", "low", "close") if c not in frames[base].columns]
    if missing:
        raise PredictError(f"{symbol}: bars without {', '.join(missing)}")
    if bars is not None or not _from_origin(loaded, begin):
        _check_history(frames, base, begin, loaded.config.training_data.history_required,
                       symbol)
    features = symbol_features(loaded.config, symbol, frames, base)
    length = sequence_length_of(loaded.config.model)
    names = features.names if length is None else step_names(features.names, length)
    if list(names) != loaded.feature_names:
        raise FeatureMismatchError(
            f"{loaded.ref.name}: the feature code builds {len(names)} features, the "
            f"model was trained on {len(loaded.feature_names)}: refusing to mispredict")
    keep = features.defined_rows()
    if begin is not None:
        keep &= np.asarray(features.index >= begin)
    chosen = np.flatnonzero(keep)
    if len(chosen) == 0:
        raise PredictError(f"{symbol}: no bar to predict between {start or 'the start'} and "
                           f"{end or 'the end'} (after the indicators' warm-up)")
    times = features.index[chosen]
    x: np.ndarray | Windows
    if length is not None:  # the training's window code: the same windows, bit for bit
        x = stack_windows([(features, chosen)], length)
    else:
        rows = features.select(chosen)
        x = np.empty(rows.shape, dtype=np.float32)
        rows.rows_into(x)
    outputs = predict(loaded, x)
    labels = loaded.config.training.labels
    signals = is_signal(labels)
    if loaded.regression:
        direction, confidence = directions_from_returns(outputs)
    elif not signals:  # market classes (regime): the most likely one, no trade
        direction = np.zeros(len(outputs), dtype=np.int8)
        confidence = outputs.max(axis=1)
    else:
        direction, confidence = directions_from_probabilities(outputs)
        threshold = loaded.config.decisions.confidence_threshold
        direction = np.where(confidence >= threshold, direction, 0).astype(np.int8)
    return SymbolPredictions(symbol=symbol, times=times, outputs=outputs,
                             direction=direction, confidence=confidence,
                             prices=frames[base], regression=loaded.regression,
                             class_names=class_names(labels) or CLASS_NAMES, signals=signals)


def predict_window(
    loaded: LoadedModel,
    *,
    symbols: Sequence[str] | None = None,
    data_dir: Path | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> list[SymbolPredictions]:
    """Every symbol of the model (or `symbols`) on one window of the data directory."""
    return [predict_symbol(loaded, s, data_dir=data_dir, start=start, end=end)
            for s in (symbols or model_symbols(loaded))]


def backtest_window(
    loaded: LoadedModel,
    predictions: Sequence[SymbolPredictions],
    *,
    costs: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The evaluation's backtest (libs/pipeline/backtest.py) of these predictions, beside
    buy-and-hold, with the strategy's decisions, costs and risk rules (`costs` replaces the
    transaction costs, a fraction per unit of turnover). The confidence threshold was applied
    by the prediction already."""
    if not is_signal(loaded.config.training.labels):
        raise PredictError(f"{loaded.ref.name}: {NOT_SIGNALS_NOTE}")
    settings = backtest_settings(loaded.config, seed=seed if seed is not None
                                 else int(loaded.metadata.get("seed") or 0))
    settings = replace(settings, confidence_threshold=0.0, window=(None, None))
    if costs is not None:
        settings = replace(settings, cost_per_turnover=costs)
    symbols = [SymbolSignals(symbol=p.symbol, prices=p.prices, times=p.times,
                             signals={"model": (p.direction, p.confidence)})
               for p in predictions]
    return run_backtest(symbols, settings)


def load_model(ref: str, models_dir: Path | None = None) -> LoadedModel:
    """A saved model by `strategy/<tf>_v<N>`, `strategy/latest`, `strategy/<tf>_latest`, or
    the path of its version directory (aliases are resolved by libs/events/registry.py)."""
    path = Path(ref)
    if (path / "metadata.json").is_file():
        parsed = parse_version_dir(path.name)
        if parsed is None:
            raise ModelNotFoundError(f"{ref}: not a model version directory (<tf>_v<N>)")
        timeframe, number = parsed
        return ModelStorage(path.parent.parent).load(path.parent.name, number, timeframe)
    strategy, _, version = ref.partition("/")
    storage = ModelStorage(models_dir)
    if version in ("", "latest"):
        return storage.load(strategy)
    if version.endswith("_latest"):
        return storage.load(strategy, None, version.removesuffix("_latest"))
    parsed = parse_version_dir(version)
    if parsed is None:
        raise ModelNotFoundError(f"{ref}: expected strategy/<tf>_v<N> (e.g. {strategy}/1h_v3), "
                                 f"strategy/latest, strategy@alias or a model directory")
    return storage.load(strategy, parsed[1], parsed[0])
