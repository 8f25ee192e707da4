"""Indicator registry on TA-Lib.

Each indicator type is an `IndicatorSpec`: its parameters (with defaults and bounds), its outputs
and a compute function that calls TA-Lib on float64 arrays. `compute_indicators` turns a price
frame plus the strategy's `{id: IndicatorConfig}` into one frame of columns:

- `<id>` for a single-output indicator (`rsi_14`);
- `<id>.<output>` for each output of a multi-output one (`macd_12_26_9.histogram`), plus `<id>`
  aliasing its primary output, so a fuzzy set may name either.

Warm-up rows are NaN (TA-Lib's lookback); nothing is filled, the dataset drops them later.
Parameter names follow the strategy grammar we descend from (`period`, `fast_period`,
`multiplier`, `k_period`, ...), not TA-Lib's, so strategy files keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import talib

if TYPE_CHECKING:
    from libs.pipeline.config import IndicatorConfig

# TA-Lib refuses periods above this (TA_INTEGER_MAX is larger, but every period has this bound).
_MAX_PERIOD = 100_000

SOURCES: tuple[str, ...] = ("open", "high", "low", "close", "volume", "hl2", "hlc3", "ohlc4")


class IndicatorError(ValueError):
    """Raised when an indicator type or parameter is unknown or invalid; names the valid ones."""


@dataclass(frozen=True, slots=True)
class Param:
    kind: Literal["int", "float", "source"]
    default: int | float | str
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive

    def check(self, name: str, value: Any) -> str | None:
        """An error message for `value`, or None when it is acceptable."""
        if self.kind == "source":
            if value not in SOURCES:
                return f"{name} must be one of {', '.join(SOURCES)}, got {value!r}"
            return None
        # bool is an int subclass in Python; `period: true` is a typo, not 1.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
        # ints are always finite (and math.isfinite overflows on one beyond a float's range)
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be finite, got {value!r}"
        if self.low is not None and value < self.low:
            return f"{name} must be >= {self.low:g}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"{name} must be <= {self.high:g}, got {value!r}"
        return None


class PriceArrays:
    """Float64, C-contiguous views of a price frame's columns, converted once and shared."""

    def __init__(self, prices: pd.DataFrame) -> None:
        self._prices = prices
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._prices)

    def __getitem__(self, source: str) -> np.ndarray:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        if source == "hl2":
            arr = (self["high"] + self["low"]) / 2.0
        elif source == "hlc3":
            arr = (self["high"] + self["low"] + self["close"]) / 3.0
        elif source == "ohlc4":
            arr = (self["open"] + self["high"] + self["low"] + self["close"]) / 4.0
        else:
            if source not in self._prices.columns:
                raise IndicatorError(f"price data has no {source!r} column")
            arr = np.ascontiguousarray(self._prices[source].to_numpy(dtype=np.float64))
        self._cache[source] = arr
        return arr


Outputs = tuple[np.ndarray, ...]
ComputeFn = Callable[[PriceArrays, Mapping[str, Any]], Outputs]


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    name: str
    params: Mapping[str, Param]
    compute: ComputeFn
    outputs: tuple[str, ...] = ()  # empty: a single output, column `<id>`
    primary: str | None = None  # the output `<id>` aliases (multi-output only)
    aliases: tuple[str, ...] = ()
    # Cross-parameter rule (e.g. MACD fast < slow): returns an error message or None.
    rule: Callable[[Mapping[str, Any]], str | None] | None = field(default=None)


def _period(default: int, low: int = 2) -> Param:
    return Param("int", default, low, _MAX_PERIOD)


_SOURCE = Param("source", "close")


def _single(fn: Callable[..., np.ndarray]) -> ComputeFn:
    """A one-input, one-period TA-Lib function on the `source` column."""

    def compute(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
        return (fn(p[a["source"]], timeperiod=a["period"]),)

    return compute


def _macd(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    line, signal, hist = talib.MACD(
        p[a["source"]],
        fastperiod=a["fast_period"],
        slowperiod=a["slow_period"],
        signalperiod=a["signal_period"],
    )
    return line, signal, hist


def _bbands(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    upper, middle, lower = talib.BBANDS(
        p[a["source"]],
        timeperiod=a["period"],
        nbdevup=a["multiplier"],
        nbdevdn=a["multiplier"],
        matype=talib.MA_Type.SMA,
    )
    return upper, middle, lower


def _atr(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    return (talib.ATR(p["high"], p["low"], p["close"], timeperiod=a["period"]),)


def _adx(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    h, lo, c, n = p["high"], p["low"], p["close"], a["period"]
    return (
        talib.ADX(h, lo, c, timeperiod=n),
        talib.PLUS_DI(h, lo, c, timeperiod=n),
        talib.MINUS_DI(h, lo, c, timeperiod=n),
    )


def _stochastic(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    k, d = talib.STOCH(
        p["high"],
        p["low"],
        p["close"],
        fastk_period=a["k_period"],
        slowk_period=a["smooth_k"],
        slowk_matype=talib.MA_Type.SMA,
        slowd_period=a["d_period"],
        slowd_matype=talib.MA_Type.SMA,
    )
    return k, d


def _hlc(fn: Callable[..., np.ndarray]) -> ComputeFn:
    def compute(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
        return (fn(p["high"], p["low"], p["close"], timeperiod=a["period"]),)

    return compute


def _mfi(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    return (talib.MFI(p["high"], p["low"], p["close"], p["volume"], timeperiod=a["period"]),)


def _obv(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    return (talib.OBV(p[a["source"]], p["volume"]),)


def _aroon(p: PriceArrays, a: Mapping[str, Any]) -> Outputs:
    down, up = talib.AROON(p["high"], p["low"], timeperiod=a["period"])
    return up, down, talib.AROONOSC(p["high"], p["low"], timeperiod=a["period"])


def _macd_rule(a: Mapping[str, Any]) -> str | None:
    if a["fast_period"] >= a["slow_period"]:
        return (
            f"fast_period ({a['fast_period']}) must be smaller than "
            f"slow_period ({a['slow_period']})"
        )
    return None


_SPECS: tuple[IndicatorSpec, ...] = (
    IndicatorSpec("rsi", {"period": _period(14), "source": _SOURCE}, _single(talib.RSI)),
    IndicatorSpec("sma", {"period": _period(20), "source": _SOURCE}, _single(talib.SMA)),
    IndicatorSpec("ema", {"period": _period(20), "source": _SOURCE}, _single(talib.EMA)),
    IndicatorSpec("wma", {"period": _period(20), "source": _SOURCE}, _single(talib.WMA)),
    IndicatorSpec(
        "macd",
        {
            "fast_period": _period(12),
            "slow_period": _period(26),
            "signal_period": _period(9, low=1),
            "source": _SOURCE,
        },
        _macd,
        outputs=("line", "signal", "histogram"),
        primary="line",
        rule=_macd_rule,
    ),
    IndicatorSpec(
        "bbands",
        {
            "period": _period(20),
            "multiplier": Param("float", 2.0, 1e-6, 100.0),
            "source": _SOURCE,
        },
        _bbands,
        outputs=("upper", "middle", "lower"),
        primary="middle",
        aliases=("bollingerbands", "bollinger_bands"),
    ),
    IndicatorSpec("atr", {"period": _period(14, low=1)}, _atr),
    IndicatorSpec(
        "adx",
        {"period": _period(14)},
        _adx,
        outputs=("adx", "plus_di", "minus_di"),
        primary="adx",
    ),
    IndicatorSpec(
        "stochastic",
        {
            "k_period": _period(14, low=1),
            "d_period": _period(3, low=1),
            "smooth_k": _period(3, low=1),
        },
        _stochastic,
        outputs=("k", "d"),
        primary="k",
        aliases=("stoch",),
    ),
    IndicatorSpec(
        "williamsr", {"period": _period(14)}, _hlc(talib.WILLR), aliases=("williams_r", "willr")
    ),
    IndicatorSpec("cci", {"period": _period(20)}, _hlc(talib.CCI)),
    IndicatorSpec("mfi", {"period": _period(14)}, _mfi),
    IndicatorSpec("roc", {"period": _period(10, low=1), "source": _SOURCE}, _single(talib.ROC)),
    IndicatorSpec(
        "momentum",
        {"period": _period(10, low=1), "source": _SOURCE},
        _single(talib.MOM),
        aliases=("mom",),
    ),
    IndicatorSpec("obv", {"source": _SOURCE}, _obv),
    IndicatorSpec(
        "aroon",
        {"period": _period(14)},
        _aroon,
        outputs=("up", "down", "oscillator"),
        primary="oscillator",
    ),
)

REGISTRY: dict[str, IndicatorSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES: dict[str, str] = {
    alias: spec.name for spec in _SPECS for alias in (spec.name, *spec.aliases)
}


def spec_of(type_name: str) -> IndicatorSpec:
    """The spec for a type name or alias (case-insensitive)."""
    canonical = _ALIASES.get(type_name.strip().lower()) if isinstance(type_name, str) else None
    if canonical is None:
        raise IndicatorError(
            f"unknown indicator type {type_name!r}; valid types: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[canonical]


def canonical_type(type_name: str) -> str:
    """`bollingerbands` -> `bbands`: the name the config keeps, so hashes and dumps are stable."""
    return spec_of(type_name).name


def resolved_params(cfg: IndicatorConfig) -> dict[str, Any]:
    """The parameters with defaults filled in, validated."""
    spec = spec_of(cfg.type)
    unknown = sorted(set(cfg.params) - set(spec.params))
    if unknown:
        valid = ", ".join(spec.params) or "(none)"
        raise IndicatorError(
            f"unknown parameter {', '.join(map(repr, unknown))} for {spec.name}; "
            f"valid parameters: {valid}"
        )
    params = {name: cfg.params.get(name, p.default) for name, p in spec.params.items()}
    problems = [msg for name, p in spec.params.items() if (msg := p.check(name, params[name]))]
    if not problems and spec.rule is not None and (msg := spec.rule(params)):
        problems.append(msg)
    if problems:
        raise IndicatorError(f"{spec.name}: " + "; ".join(problems))
    return params


def validate_indicator(indicator_id: str, cfg: IndicatorConfig) -> None:
    """Raise IndicatorError (naming the id and the valid types/params) if `cfg` is unusable."""
    try:
        resolved_params(cfg)
    except IndicatorError as exc:
        raise IndicatorError(f"{indicator_id}: {exc}") from None


def outputs_of(cfg: IndicatorConfig) -> tuple[str, ...]:
    """Output names of a multi-output indicator; empty for single-output ones (column `<id>`)."""
    return spec_of(cfg.type).outputs


def columns_of(indicator_id: str, cfg: IndicatorConfig) -> tuple[str, ...]:
    """Every column `compute_indicators` makes for this indicator (valid fuzzy-set references)."""
    return (indicator_id, *(f"{indicator_id}.{out}" for out in outputs_of(cfg)))


def compute_indicators(
    prices: pd.DataFrame, indicators: Mapping[str, IndicatorConfig]
) -> pd.DataFrame:
    """All indicators of a strategy on one price frame; index = the price index."""
    arrays = PriceArrays(prices)
    columns: dict[str, np.ndarray] = {}
    for indicator_id, cfg in indicators.items():
        spec = spec_of(cfg.type)
        params = resolved_params(cfg)
        results = spec.compute(arrays, params)
        if not spec.outputs:
            columns[indicator_id] = results[0]
            continue
        for name, values in zip(spec.outputs, results, strict=True):
            columns[f"{indicator_id}.{name}"] = values
        # A view, not the same object: pandas handles one array under two names by copying
        # it around (0.4 ms more per frame on 1M rows, and more on every column read).
        columns[indicator_id] = columns[f"{indicator_id}.{spec.primary}"].view()
    # copy=False keeps each TA-Lib result as its own block: no consolidation copy.
    return pd.DataFrame(columns, index=prices.index, copy=False)
