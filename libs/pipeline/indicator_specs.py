"""What each indicator type is, without computing it: its parameters (defaults and bounds), its
outputs, its aliases and cross-parameter rules. No TA-Lib, no pandas, no numpy: validating a
strategy (libs/pipeline/strategy/) reads only this; libs/pipeline/indicators.py computes them.

Parameter names follow the strategy grammar we descend from (`period`, `fast_period`,
`multiplier`, `k_period`, ...), not TA-Lib's, so strategy files keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from libs.pipeline.strategy import IndicatorConfig

# TA-Lib refuses periods above this (TA_INTEGER_MAX is larger, but every period has this bound).
_MAX_PERIOD = 100_000

SOURCES: tuple[str, ...] = ("open", "high", "low", "close", "volume", "hl2", "hlc3", "ohlc4")


class IndicatorError(ValueError):
    """Raised when an indicator type or parameter is unknown or invalid; names the valid ones."""


@dataclass(frozen=True, slots=True)
class Param:
    kind: Literal["int", "float", "source", "choice"]
    default: int | float | str
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    choices: tuple[str, ...] = ()  # kind "choice": the lower-case names (matched ignoring case)

    def check(self, name: str, value: Any) -> str | None:
        """An error message for `value`, or None when it is acceptable."""
        if self.kind == "source":
            if value not in SOURCES:
                return f"{name} must be one of {', '.join(SOURCES)}, got {value!r}"
            return None
        if self.kind == "choice":
            if not isinstance(value, str) or value.lower() not in self.choices:
                return f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
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


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    name: str
    params: Mapping[str, Param]
    outputs: tuple[str, ...] = ()  # empty: a single output, column `<id>`
    primary: str | None = None  # the output `<id>` aliases (multi-output only)
    aliases: tuple[str, ...] = ()
    # Cross-parameter rule (e.g. MACD fast < slow): returns an error message or None.
    rule: Callable[[Mapping[str, Any]], str | None] | None = field(default=None)


def _period(default: int, low: int = 2) -> Param:
    return Param("int", default, low, _MAX_PERIOD)


_SOURCE = Param("source", "close")


def _float(default: float, low: float = 1e-6, high: float = 100.0) -> Param:
    return Param("float", default, low, high)


def _psar_rule(a: Mapping[str, Any]) -> str | None:
    for name in ("initial_af", "step_af"):
        if a[name] > a["max_af"]:
            return f"{name} ({a[name]:g}) must not exceed max_af ({a['max_af']:g})"
    return None


# Conventions where the reference platform (KTRDR), whose fuzzy thresholds a strategy may carry,
# differs from TA-Lib; the default is TA-Lib's (docs/indicators.md, "Conventions").
_ATR_SMOOTHING = Param("choice", "wilder", choices=("wilder", "mean"))
_BB_STD = Param("choice", "population", choices=("population", "sample"))
_OBV_START = Param("choice", "first_volume", choices=("first_volume", "zero"))


def _macd_rule(a: Mapping[str, Any]) -> str | None:
    if a["fast_period"] >= a["slow_period"]:
        return (
            f"fast_period ({a['fast_period']}) must be smaller than "
            f"slow_period ({a['slow_period']})"
        )
    return None


_SPECS: tuple[IndicatorSpec, ...] = (
    IndicatorSpec("rsi", {"period": _period(14), "source": _SOURCE}),
    IndicatorSpec("sma", {"period": _period(20), "source": _SOURCE}),
    IndicatorSpec("ema", {"period": _period(20), "source": _SOURCE}),
    IndicatorSpec("wma", {"period": _period(20), "source": _SOURCE}),
    IndicatorSpec(
        "macd",
        {
            "fast_period": _period(12),
            "slow_period": _period(26),
            "signal_period": _period(9, low=1),
            "source": _SOURCE,
        },
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
            "std": _BB_STD,
        },
        outputs=("upper", "middle", "lower"),
        primary="middle",
        aliases=("bollingerbands", "bollinger_bands"),
    ),
    IndicatorSpec("atr", {"period": _period(14, low=1), "smoothing": _ATR_SMOOTHING}),
    IndicatorSpec(
        "adx",
        {"period": _period(14)},
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
        outputs=("k", "d"),
        primary="k",
        aliases=("stoch",),
    ),
    IndicatorSpec("williamsr", {"period": _period(14)}, aliases=("williams_r", "willr")),
    IndicatorSpec("cci", {"period": _period(20)}),
    IndicatorSpec("mfi", {"period": _period(14)}),
    IndicatorSpec("roc", {"period": _period(10, low=1), "source": _SOURCE}),
    IndicatorSpec(
        "momentum",
        {"period": _period(10, low=1), "source": _SOURCE},
        aliases=("mom",),
    ),
    IndicatorSpec(
        "obv",
        {"source": _SOURCE, "start": _OBV_START},
    ),
    IndicatorSpec(
        "aroon",
        {
            "period": _period(14),
            "window": Param("choice", "period_plus_one", choices=("period_plus_one", "period")),
        },
        outputs=("up", "down", "oscillator"),
        primary="oscillator",
    ),
    # --- the reference platform's (KTRDR) indicators; parameter names are its own ---
    IndicatorSpec("ad", {}, aliases=("adline", "ad_line", "adlineindicator")),
    IndicatorSpec(
        "bollingerbandwidth",
        {"period": _period(20), "multiplier": _float(2.0), "source": _SOURCE, "std": _BB_STD},
        aliases=("bollinger_band_width", "bbwidth", "bollingerbandwidthindicator"),
    ),
    IndicatorSpec(
        "cmf", {"period": _period(20)}, aliases=("chaikinmoneyflow", "chaikinmoneyflowindicator")
    ),
    IndicatorSpec(
        "distancefromma",
        {
            "period": _period(20),
            "ma_type": Param("choice", "sma", choices=("sma", "ema")),
            "source": _SOURCE,
        },
        aliases=("distance_from_ma", "distancefrommaindicator"),
    ),
    IndicatorSpec(
        "donchian",
        {"period": _period(20)},
        outputs=("upper", "middle", "lower"),
        primary="middle",
        aliases=("donchianchannels", "donchian_channels", "donchianchannelsindicator"),
    ),
    IndicatorSpec(
        "fisher",
        {"period": _period(10), "smoothing": _period(3, low=1)},
        outputs=("fisher", "signal"),
        primary="fisher",
        aliases=("fishertransform", "fisher_transform", "fishertransformindicator"),
    ),
    IndicatorSpec(
        "ichimoku",
        {
            "tenkan_period": _period(9, low=1),
            "kijun_period": _period(26, low=1),
            "senkou_b_period": _period(52, low=1),
            "displacement": Param("int", 26, 0, _MAX_PERIOD),
        },
        outputs=("tenkan", "kijun", "senkou_a", "senkou_b"),
        primary="tenkan",
        aliases=("ichimokuindicator",),
    ),
    IndicatorSpec(
        "keltner",
        {
            "period": _period(20),
            "atr_period": _period(10, low=1),
            "multiplier": _float(2.0),
            "smoothing": _ATR_SMOOTHING,
        },
        outputs=("upper", "middle", "lower"),
        primary="middle",
        aliases=("keltnerchannels", "keltner_channels", "keltnerchannelsindicator"),
    ),
    IndicatorSpec(
        "psar",
        {
            "initial_af": _float(0.02, high=10.0),
            "step_af": _float(0.02, high=10.0),
            "max_af": _float(0.2, high=10.0),
        },
        aliases=("sar", "parabolicsar", "parabolic_sar", "parabolicsarindicator"),
        rule=_psar_rule,
    ),
    IndicatorSpec(
        "rvi",
        {"period": _period(10, low=1), "signal_period": _period(4, low=1)},
        outputs=("rvi", "signal"),
        primary="rvi",
        aliases=("relativevigorindex", "rviindicator"),
    ),
    IndicatorSpec(
        "squeeze",
        {
            "bb_period": _period(20),
            "bb_multiplier": _float(2.0),
            "kc_period": _period(20, low=1),
            "kc_multiplier": _float(1.5),
            "source": _SOURCE,
            "std": _BB_STD,
            "smoothing": _ATR_SMOOTHING,
        },
        aliases=("squeezeintensity", "squeeze_intensity", "squeezeintensityindicator"),
    ),
    IndicatorSpec(
        "supertrend",
        {"period": _period(10, low=1), "multiplier": _float(3.0), "smoothing": _ATR_SMOOTHING},
        outputs=("value", "direction"),
        primary="value",
        aliases=("super_trend", "supertrendindicator"),
    ),
    IndicatorSpec(
        "volumeratio",
        {"period": _period(20, low=1)},
        aliases=("volume_ratio", "volumeratioindicator"),
    ),
    IndicatorSpec(
        "vwap",
        {"period": _period(20, low=1), "source": Param("source", "hlc3")},
        aliases=("vwapindicator",),
    ),
    IndicatorSpec(
        "zigzag",
        {"threshold": Param("float", 0.05, 1e-6, 0.99), "source": _SOURCE},
        aliases=("zig_zag", "zigzagindicator"),
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
