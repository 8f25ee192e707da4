"""Indicators: values equal TA-Lib's own functions, columns, parameter validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from libs.pipeline.data import synthesize
from libs.pipeline.indicator_specs import (
    REGISTRY,
    IndicatorError,
    canonical_type,
    columns_of,
    outputs_of,
    resolved_params,
    validate_indicator,
)
from libs.pipeline.indicators import compute_indicators
from libs.pipeline.strategy import IndicatorConfig
from tests.pipeline.test_indicators_reference import KTRDR_TYPES


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthesize("EURUSD", "1h", 600, seed=11)


def arrays(prices: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: prices[c].to_numpy(dtype=np.float64) for c in prices.columns}


# The reference: TA-Lib called directly, with the parameters each spec maps to.
REFERENCE: dict[
    str, tuple[dict[str, Any], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]
] = {
    "rsi": ({"period": 9}, lambda a: {"": talib.RSI(a["close"], 9)}),
    "sma": ({"period": 5, "source": "high"}, lambda a: {"": talib.SMA(a["high"], 5)}),
    "ema": ({"period": 12}, lambda a: {"": talib.EMA(a["close"], 12)}),
    "wma": (
        {"period": 7, "source": "hlc3"},
        lambda a: {"": talib.WMA((a["high"] + a["low"] + a["close"]) / 3, 7)},
    ),
    "macd": (
        {"fast_period": 5, "slow_period": 13, "signal_period": 4},
        lambda a: dict(
            zip(("line", "signal", "histogram"), talib.MACD(a["close"], 5, 13, 4), strict=True)
        ),
    ),
    "bbands": (
        {"period": 10, "multiplier": 1.5},
        lambda a: dict(
            zip(
                ("upper", "middle", "lower"),
                talib.BBANDS(a["close"], 10, 1.5, 1.5, talib.MA_Type.SMA),
                strict=True,
            )
        ),
    ),
    "atr": ({"period": 10}, lambda a: {"": talib.ATR(a["high"], a["low"], a["close"], 10)}),
    "adx": (
        {"period": 10},
        lambda a: {
            "adx": talib.ADX(a["high"], a["low"], a["close"], 10),
            "plus_di": talib.PLUS_DI(a["high"], a["low"], a["close"], 10),
            "minus_di": talib.MINUS_DI(a["high"], a["low"], a["close"], 10),
        },
    ),
    "stochastic": (
        {"k_period": 9, "d_period": 4, "smooth_k": 2},
        lambda a: dict(
            zip(
                ("k", "d"),
                talib.STOCH(
                    a["high"], a["low"], a["close"], 9, 2, talib.MA_Type.SMA, 4, talib.MA_Type.SMA
                ),
                strict=True,
            )
        ),
    ),
    "williamsr": ({"period": 10}, lambda a: {"": talib.WILLR(a["high"], a["low"], a["close"], 10)}),
    "cci": ({"period": 15}, lambda a: {"": talib.CCI(a["high"], a["low"], a["close"], 15)}),
    "mfi": (
        {"period": 10},
        lambda a: {"": talib.MFI(a["high"], a["low"], a["close"], a["volume"], 10)},
    ),
    "roc": ({"period": 4, "source": "open"}, lambda a: {"": talib.ROC(a["open"], 4)}),
    "momentum": ({"period": 3}, lambda a: {"": talib.MOM(a["close"], 3)}),
    "obv": ({}, lambda a: {"": talib.OBV(a["close"], a["volume"])}),
    "aroon": (
        {"period": 12},
        lambda a: {
            "up": talib.AROON(a["high"], a["low"], 12)[1],
            "down": talib.AROON(a["high"], a["low"], 12)[0],
            "oscillator": talib.AROONOSC(a["high"], a["low"], 12),
        },
    ),
}


def test_every_registered_type_has_a_reference() -> None:
    # the reference platform's 15 are checked against loops in test_indicators_reference.py
    assert set(REFERENCE) | set(KTRDR_TYPES) == set(REGISTRY)
    assert not set(REFERENCE) & set(KTRDR_TYPES)
    assert len(REGISTRY) == 31


@pytest.mark.parametrize("type_name", sorted(REFERENCE))
def test_values_match_talib(prices: pd.DataFrame, type_name: str) -> None:
    params, reference = REFERENCE[type_name]
    frame = compute_indicators(prices, {"x": IndicatorConfig(type=type_name, params=params)})
    expected = reference(arrays(prices))
    assert frame.index.equals(prices.index)
    for output, values in expected.items():
        column = f"x.{output}" if output else "x"
        np.testing.assert_array_equal(frame[column].to_numpy(), values)
        assert frame[column].dtype == np.float64
    spec = REGISTRY[type_name]
    if spec.outputs:
        # the bare id aliases the primary output
        np.testing.assert_array_equal(frame["x"].to_numpy(), frame[f"x.{spec.primary}"].to_numpy())
    assert set(frame.columns) == set(columns_of("x", IndicatorConfig(type=type_name)))


def test_sma_by_hand() -> None:
    close = np.arange(1.0, 11.0)
    prices = pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1.0}
    )
    frame = compute_indicators(prices, {"sma_3": IndicatorConfig(type="sma", params={"period": 3})})
    values = frame["sma_3"].to_numpy()
    assert np.isnan(values[:2]).all()  # warm-up: TA-Lib's lookback (period - 1) rows are NaN
    np.testing.assert_allclose(values[2:], [2, 3, 4, 5, 6, 7, 8, 9])


def test_rsi_by_hand() -> None:
    # Only gains: RSI is 100. Alternating +1/-1 with equal sizes after the seed: RSI 50.
    up = np.arange(1.0, 31.0)
    prices = pd.DataFrame({"open": up, "high": up, "low": up, "close": up, "volume": 1.0})
    rsi = compute_indicators(prices, {"r": IndicatorConfig(type="rsi", params={"period": 5})})["r"]
    assert rsi.isna().sum() == 5 and np.allclose(rsi.dropna(), 100.0)
    zigzag = np.tile([10.0, 11.0], 20)
    prices = pd.DataFrame(
        {"open": zigzag, "high": zigzag, "low": zigzag, "close": zigzag, "volume": 1.0}
    )
    rsi = compute_indicators(prices, {"r": IndicatorConfig(type="rsi", params={"period": 4})})["r"]
    assert 40 < rsi.iloc[-1] < 60


def test_multi_output_columns(prices: pd.DataFrame) -> None:
    frame = compute_indicators(
        prices,
        {
            "rsi_14": IndicatorConfig(type="rsi"),
            "m": IndicatorConfig(type="macd"),
            "bb": IndicatorConfig(type="bollingerbands"),
        },
    )
    assert list(frame.columns) == [
        "rsi_14",
        "m.line",
        "m.signal",
        "m.histogram",
        "m",
        "bb.upper",
        "bb.middle",
        "bb.lower",
        "bb",
    ]
    assert frame["m.histogram"].isna().sum() == 26 + 9 - 2  # TA-Lib's MACD lookback
    np.testing.assert_allclose(
        (frame["m.line"] - frame["m.signal"]).dropna(), frame["m.histogram"].dropna(), atol=1e-12
    )


def test_outputs_and_aliases() -> None:
    assert outputs_of(IndicatorConfig(type="rsi")) == ()
    assert outputs_of(IndicatorConfig(type="macd")) == ("line", "signal", "histogram")
    assert outputs_of(IndicatorConfig(type="aroon")) == ("up", "down", "oscillator")
    assert canonical_type("BBands") == "bbands" and canonical_type("stoch") == "stochastic"
    assert canonical_type("Williams_R") == "williamsr" and canonical_type("mom") == "momentum"
    assert columns_of("s", IndicatorConfig(type="stochastic")) == ("s", "s.k", "s.d")
    assert resolved_params(IndicatorConfig(type="stoch", params={"k_period": 5})) == {
        "k_period": 5,
        "d_period": 3,
        "smooth_k": 3,
    }


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            IndicatorConfig(type="rsx"),
            "x: unknown indicator type 'rsx'; valid types: ad, adx, aroon, atr, bbands, "
            "bollingerbandwidth, cci, cmf, distancefromma, donchian, ema, fisher, ichimoku, "
            "keltner, macd, mfi, momentum, obv, psar, roc, rsi, rvi, sma, squeeze, stochastic, "
            "supertrend, volumeratio, vwap, williamsr, wma, zigzag",
        ),
        (
            IndicatorConfig(type="rsi", params={"length": 3}),
            "x: unknown parameter 'length' for rsi; valid parameters: period, source",
        ),
        (IndicatorConfig(type="obv", params={"period": 3}), "valid parameters: source"),
        (IndicatorConfig(type="rsi", params={"period": 1}), "period must be >= 2, got 1"),
        (IndicatorConfig(type="rsi", params={"period": 10**6}), "period must be <= 100000"),
        (IndicatorConfig(type="rsi", params={"period": True}), "period must be a number, got True"),
        (IndicatorConfig(type="rsi", params={"period": "14"}), "period must be a number, got '14'"),
        (
            IndicatorConfig(type="rsi", params={"period": 14.0}),
            "period must be an integer, got 14.0",
        ),
        (
            IndicatorConfig(type="rsi", params={"source": "vwap"}),
            "source must be one of open, high, low, close, volume, hl2, hlc3, ohlc4",
        ),
        (IndicatorConfig(type="bbands", params={"multiplier": 0}), "multiplier must be >= 1e-06"),
        (
            IndicatorConfig(type="bbands", params={"multiplier": float("nan")}),
            "multiplier must be finite",
        ),
        (
            IndicatorConfig(type="macd", params={"fast_period": 26}),
            "fast_period (26) must be smaller than slow_period (26)",
        ),
        (
            IndicatorConfig(type="distancefromma", params={"ma_type": "wma"}),
            "ma_type must be one of sma, ema, got 'wma'",
        ),
        (
            IndicatorConfig(type="distancefromma", params={"ma_type": 1}),
            "ma_type must be one of sma, ema, got 1",
        ),
        (
            IndicatorConfig(type="psar", params={"initial_af": 0.3}),
            "initial_af (0.3) must not exceed max_af (0.2)",
        ),
        (IndicatorConfig(type="zigzag", params={"threshold": 1.0}), "threshold must be <= 0.99"),
        (IndicatorConfig(type="donchian", params={"period": 1}), "period must be >= 2, got 1"),
        (
            IndicatorConfig(type="aroon", params={"window": 14}),
            "window must be one of period_plus_one, period, got 14",
        ),
        (
            IndicatorConfig(type="squeeze", params={"std": "ddof1"}),
            "std must be one of population, sample, got 'ddof1'",
        ),
        (IndicatorConfig(type="obv", params={"start": 0}), "start must be one of first_volume"),
        (
            IndicatorConfig(type="vwap", params={"use_typical_price": True}),
            "unknown parameter 'use_typical_price' for vwap; valid parameters: period, source",
        ),
    ],
)
def test_invalid_indicators_list_what_is_valid(cfg: IndicatorConfig, message: str) -> None:
    with pytest.raises(IndicatorError) as info:
        validate_indicator("x", cfg)
    assert message in str(info.value)
    with pytest.raises(IndicatorError):
        compute_indicators(synthesize("EURUSD", "1h", 50, seed=1), {"x": cfg})


def test_missing_volume_column_is_a_clear_error() -> None:
    prices = synthesize("EURUSD", "1h", 50, seed=1).drop(columns=["volume"])
    with pytest.raises(IndicatorError, match="price data has no 'volume' column"):
        compute_indicators(prices, {"m": IndicatorConfig(type="mfi")})


def test_read_only_inputs_and_empty_frames(prices: pd.DataFrame) -> None:
    # pandas 3 hands out read-only views (copy-on-write); TA-Lib must accept them.
    frame = compute_indicators(prices.iloc[:0], {"r": IndicatorConfig(type="rsi")})
    assert frame.empty and list(frame.columns) == ["r"]
    short = compute_indicators(prices.iloc[:5], {"r": IndicatorConfig(type="rsi")})
    assert short["r"].isna().all()
