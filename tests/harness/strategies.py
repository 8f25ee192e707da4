"""The strategies the tests train, as YAML text, and the writer of a strategies directory.

- `strategy_yaml`: the tiny two-symbol strategy (EURUSD + GBPUSD 1h, RSI + MACD, an MLP of
  one hidden layer of 16): a few epochs train in well under a second.
- `example_variant`: the shipped example (`strategies/rsi_macd_zigzag.yaml`) with its
  training section changed (the API, CLI and dashboard tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "strategies" / "rsi_macd_zigzag.yaml"
TINY_SEED = 11  # training.seed of `strategy_yaml`'s strategies

_TINY = """
name: {name}
description: {description}
training_data:
  symbols: {{mode: multi_symbol, list: [EURUSD, GBPUSD]}}
  timeframes: {{mode: single, timeframe: 1h}}
  history_required: 50
indicators:
  rsi_14: {{type: rsi, period: 14}}
  macd_12_26_9: {{type: macd, fast_period: 12, slow_period: 26, signal_period: 9}}
fuzzy_sets:
  rsi_zone:
    indicator: rsi_14
    oversold: [0, 25, 45]
    neutral: [35, 50, 65]
    overbought: [55, 75, 100]
  macd_momentum:
    indicator: macd_12_26_9.histogram
    bearish: {{type: trapezoidal, parameters: [-1.0, -1.0, -0.0015, 0.0]}}
    flat: {{type: gaussian, parameters: [0.0, 0.0006]}}
    bullish: {{type: trapezoidal, parameters: [0.0, 0.0015, 1.0, 1.0]}}
nn_inputs:
  - {{fuzzy_set: rsi_zone, timeframes: all}}
  - {{fuzzy_set: macd_momentum, timeframes: all}}
model:
  type: mlp
  architecture: {{hidden_layers: [{hidden_layers}], activation: relu, dropout: 0.2}}
  features: {{lookback_periods: 1}}
training:
  epochs: {epochs}
  batch_size: {batch_size}
  learning_rate: 0.005
  optimizer: adam
  labels: {{source: zigzag, zigzag_threshold: 0.01}}
  data_split: {{train: 0.7, validation: 0.15, test: 0.15}}
  seed: {seed}
"""


def strategy_yaml(
    name: str,
    *,
    epochs: int,
    batch_size: int = 64,
    hidden_layers: Sequence[int] = (16,),
    seed: int = TINY_SEED,
    description: str = "tiny strategy for the trainer tests",
) -> str:
    """The tiny strategy named `name`, as YAML text."""
    return _TINY.format(name=name, description=description, epochs=epochs,
                        batch_size=batch_size, seed=seed,
                        hidden_layers=", ".join(str(n) for n in hidden_layers))


def example_variant(name: str, training: Mapping[str, Any], **fields: Any) -> str:
    """The example strategy renamed `name`, as YAML text: `training` changes its training
    section (a value of None drops that key), `fields` replace top-level keys."""
    import yaml

    source = yaml.safe_load(EXAMPLE.read_text())
    strategy = dict(source, name=name, **fields)
    merged = dict(source["training"])
    for key, value in training.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    strategy["training"] = merged
    return yaml.safe_dump(strategy, sort_keys=False)


def write_strategies(directory: Path, strategies: Mapping[str, str]) -> Path:
    """`<name>.yaml` in `directory` (created) for each name -> YAML text."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in strategies.items():
        (directory / f"{name}.yaml").write_text(text)
    return directory
