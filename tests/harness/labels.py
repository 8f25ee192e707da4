"""Label look-ahead checks shared by the label tests: a seeded random walk and the truncation
test (a label claimed known by bar T must be the same computed on the prices up to T)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from libs.pipeline.labels import generate_labels, label_known_at
from libs.pipeline.strategy import LabelsConfig

# A one-indicator strategy on real EURUSD 1h for label tests: `DOC % (labels, decisions)`,
# e.g. DOC % ("{source: regime}", "num_classes: 4").
DOC = """
name: s
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: single, timeframe: 1h}
  history_required: 50
indicators: {rsi_14: {type: rsi, period: 14}}
fuzzy_sets: {rsi: {indicator: rsi_14, low: [0, 30, 50], high: [50, 70, 100]}}
nn_inputs: [{fuzzy_set: rsi}]
model: {type: mlp, architecture: {hidden_layers: [8]}}
training:
  epochs: 2
  batch_size: 64
  labels: %s
decisions: {%s}
"""


def random_walk(n: int, seed: int) -> pd.DataFrame:
    """`n` hourly OHLCV bars of a seeded log-normal walk (high/low a random spread around)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    index = pd.date_range("2021-01-04", periods=n, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": close, "high": close + spread, "low": close - spread,
                         "close": close, "volume": 1.0}, index=index)


def leaks(prices: pd.DataFrame, cfg: LabelsConfig, cuts: list[int],
          known: np.ndarray | None = None) -> int:
    """Rows whose label, claimed known by the cut T (`known`, default `label_known_at`),
    differs when computed on prices[:T + 1]."""
    full = generate_labels(prices, cfg).to_numpy()
    known = label_known_at(prices, cfg) if known is None else known
    bad = 0
    for cut in cuts:
        short = generate_labels(prices.iloc[: cut + 1], cfg).to_numpy()
        claimed = np.flatnonzero((known >= 0) & (known <= cut))
        assert len(claimed), "the test checks nothing at this cut"
        bad += int((short[claimed] != full[claimed]).sum())  # NaN != x counts too
    return bad
