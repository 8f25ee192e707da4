"""Predictions and backtests of a saved model, for both edges (the HTTP routes and the NATS
service): a request in, a reply out, every refusal a `ServiceError` naming its field.

The work is libs/pipeline/predict.py (the training's own feature code); here a request becomes
its arguments (the window of the data directory, or the bars sent along as a frame), the model
comes from `ModelSource` (cached), and the CPU-bound part runs in a worker thread, at most
`concurrency` at a time, so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from libs.events.errors import InvalidRequest
from services.predictor.errors import ModelUnusable
from services.predictor.messages import (
    BacktestCall,
    BacktestReply,
    BacktestRequest,
    Bar,
    PredictCall,
    PredictionRow,
    PredictReply,
    PredictRequest,
)
from services.predictor.models import ModelSource

if TYPE_CHECKING:
    import pandas as pd

    from libs.pipeline.data import DataError
    from libs.pipeline.predict import SymbolPredictions
    from libs.pipeline.storage.models import LoadedModel

__all__ = ["DEFAULT_CONCURRENCY", "PredictionService", "bars_frame", "model_ref"]

DEFAULT_CONCURRENCY: Final = 2
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_NO_DATA: Final = re.compile(r"^no data for (?P<symbol>\S+) (?P<tf>\S+) in ")


def model_ref(strategy: str, version: str) -> str:
    """The reference of the HTTP path `/models/{strategy}/{version}`: `@<alias>` as the version
    segment names an alias (`/models/eurusd/@champion/predict`)."""
    return f"{strategy}@{version[1:]}" if version.startswith("@") else f"{strategy}/{version}"


class PredictionService:
    """`predict` and `backtest` of a model on a window or on bars (module docstring)."""

    def __init__(self, models: ModelSource, *, data_dir: Path,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.models = models
        self.data_dir = data_dir
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def predict(self, ref: str, request: PredictRequest) -> PredictReply:
        """The predictions of the model `ref` (`strategy/1h_v3`, `strategy@alias`, ...)."""
        served = await self.models.get(ref)
        async with self._slots:
            rows = await asyncio.to_thread(self._predict_rows, served.loaded, request)
        return PredictReply(model=served.summary, predictions=rows)

    async def backtest(self, ref: str, request: BacktestRequest) -> BacktestReply:
        served = await self.models.get(ref)
        async with self._slots:
            figures = await asyncio.to_thread(self._backtest, served.loaded, request)
        return BacktestReply(model=served.summary, backtest=figures)

    async def predict_call(self, call: PredictCall) -> PredictReply:
        return await self.predict(call.model, call)

    async def backtest_call(self, call: BacktestCall) -> BacktestReply:
        return await self.backtest(call.model, call)

    # --- in the worker thread -----------------------------------------------------------------

    def _predict_rows(self, loaded: LoadedModel, request: PredictRequest) -> list[PredictionRow]:
        rows = [row for p in self._predictions(loaded, request) for row in p.rows()]
        return msgspec.convert(rows, list[PredictionRow])

    def _backtest(self, loaded: LoadedModel, request: BacktestRequest) -> dict[str, Any]:
        from libs.pipeline.predict import backtest_window

        predictions = self._predictions(loaded, request)
        try:
            figures = backtest_window(loaded, predictions, costs=request.costs, seed=request.seed)
        except ValueError as exc:  # what the backtest refuses (DataError included)
            raise InvalidRequest(f"backtest: {exc}") from None
        # NaN/inf (a statistic of a flat equity curve) are null in JSON, as in metrics.json.
        clean: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(figures))
        return clean

    def _predictions(self, loaded: LoadedModel, request: PredictRequest
                     ) -> list[SymbolPredictions]:
        from libs.pipeline.data import DataError
        from libs.pipeline.predict import (
            PredictError,
            model_symbols,
            predict_symbol,
            predict_window,
        )
        from libs.pipeline.storage.layout import FeatureMismatchError

        _check_bounds(request)
        try:
            if request.bars is not None:
                if request.symbols is not None:
                    raise InvalidRequest("send `symbol` with `bars`, not `symbols`",
                                         field="symbols")
                symbol = request.symbol or _only_symbol(model_symbols(loaded))
                frame = bars_frame(request.bars, loaded.ref.timeframe)
                return [predict_symbol(loaded, symbol, bars=frame, start=request.start,
                                       end=request.end)]
            if request.symbol is not None and request.symbols is not None:
                raise InvalidRequest("give `symbol` or `symbols`, not both", field="symbol")
            symbols = request.symbols or ([request.symbol] if request.symbol else None)
            return predict_window(loaded, symbols=symbols, data_dir=self.data_dir,
                                  start=request.start, end=request.end)
        except PredictError as exc:
            raise _refusal(exc, request) from None
        except DataError as exc:
            raise _data_refusal(exc, loaded, request, self.data_dir) from None
        except FeatureMismatchError as exc:  # the feature code no longer builds its inputs
            raise ModelUnusable(str(exc)) from None


def bars_frame(bars: Sequence[Bar], timeframe: str) -> pd.DataFrame:
    """The bars as the data layer's frame (UTC open times, float64 OHLCV, volume 0 when
    absent), checked as a price file is: times in order and unique, high not below low, the
    spacing of `timeframe`. InvalidRequest naming `bars` otherwise."""
    import numpy as np
    import pandas as pd

    from libs.pipeline.data import DataError, check_spacing

    try:
        times = pd.DatetimeIndex(pd.to_datetime([b.time for b in bars], utc=True, format="ISO8601"),
                                 name="timestamp").as_unit("ns")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"bars: a time is not a date-time: {exc}", field="bars") from None
    later = np.flatnonzero(np.diff(times.asi8) <= 0)
    if len(later):
        i = int(later[0]) + 1
        raise InvalidRequest(f"bars[{i}].time {bars[i].time} is not after bars[{i - 1}].time "
                             f"{bars[i - 1].time}: send bars oldest first, once each",
                             field="bars")
    columns = {c: np.array([getattr(b, c) for b in bars], dtype=np.float64)
               for c in ("open", "high", "low", "close")}
    columns["volume"] = np.array([b.volume or 0.0 for b in bars], dtype=np.float64)
    for name, values in columns.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InvalidRequest(f"bars[{int(bad[0])}].{name} is not a finite number",
                                 field="bars")
    inverted = np.flatnonzero(columns["high"] < columns["low"])
    if len(inverted):
        i = int(inverted[0])
        raise InvalidRequest(f"bars[{i}]: high {bars[i].high} is below low {bars[i].low}",
                             field="bars")
    frame = pd.DataFrame(columns, index=times)
    try:
        check_spacing(frame, timeframe, "bars")
    except DataError as exc:
        raise InvalidRequest(f"{exc} (the model reads {timeframe} bars)", field="bars") from None
    return frame


def _only_symbol(symbols: list[str]) -> str:
    if len(symbols) == 1:
        return symbols[0]
    raise InvalidRequest("say which `symbol` the bars are of (the model was trained on "
                         f"{', '.join(symbols) or 'no named symbol'})", field="symbol")


def _check_bounds(request: PredictRequest) -> None:
    import pandas as pd

    stamps = {}
    for name in ("start", "end"):
        value = getattr(request, name)
        if value is None:
            continue
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise InvalidRequest(f"{name} {value!r} is not a date", field=name) from None
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        if name == "end" and _DATE.fullmatch(value.strip()):  # through that whole day
            stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(1, unit="ns")
        stamps[name] = stamp
    if "start" in stamps and "end" in stamps and stamps["start"] > stamps["end"]:
        raise InvalidRequest(f"start {request.start} is after end {request.end}", field="end")


def _refusal(exc: Exception, request: PredictRequest) -> InvalidRequest:
    """A PredictError as the refusal of the field at fault."""
    message = str(exc)
    if " bars without " in message:
        return InvalidRequest(message, field="bars")
    if " bars before " in message:  # too little warm-up before start
        return InvalidRequest(message, field="bars" if request.bars is not None else "start")
    if "no bar to predict" in message:
        field = "start" if request.start is not None else "end" if request.end is not None \
            else "bars" if request.bars is not None else "symbols"
        window = f"start={request.start or '-'}, end={request.end or '-'}"
        return InvalidRequest(f"{message}; the window {window} holds no bar to predict",
                              field=field)
    return InvalidRequest(message)


def _data_refusal(exc: DataError, loaded: LoadedModel, request: PredictRequest,
                  data_dir: Path) -> InvalidRequest:
    """A DataError of the data directory, without the server's paths."""
    message = str(exc)
    missing = _NO_DATA.match(message)
    if missing:
        return InvalidRequest(f"no price data for {missing['symbol']} {missing['tf']} on this "
                              f"server (the model {loaded.ref.name} reads "
                              f"{', '.join(loaded.features.get('timeframes') or [])})",
                              field="symbols" if request.symbol is None else "symbol")
    if message.startswith("invalid symbol"):
        return InvalidRequest(message, field="symbols")
    if message.startswith("start ") and " is after end " in message:
        return InvalidRequest(message, field="end")
    return InvalidRequest(message.replace(str(data_dir), "<data dir>"))
