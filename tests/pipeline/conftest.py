"""Fixtures for the pipeline tests: real sample files on disk, the repo's strategies.

`sample_data_dir` is shared by the whole session: treat it as read-only (a test that writes
files makes its own directory with `tmp_path` or `make_data_dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from libs.pipeline.data import write_synthetic
from libs.pipeline.model import build_model
from libs.pipeline.strategy import StrategyConfig, TrainingConfig, load_strategy
from libs.pipeline.trainer import seed_everything, train
from tests.harness.strategies import strategy_yaml, write_strategies

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SYMBOLS = ("EURUSD", "GBPUSD")
SAMPLE_TIMEFRAME = "1h"
SAMPLE_BARS = 3000  # ~4 months of weekday hours: enough for 1d warm-up, fast to build
SAMPLE_SEED = 7


@pytest.fixture(scope="session")
def strategies_dir() -> Path:
    """The repository's `strategies/` folder (the shipped examples)."""
    return REPO_ROOT / "strategies"


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic EURUSD and GBPUSD 1h bars as Parquet, written once per session (read-only)."""
    directory = tmp_path_factory.mktemp("sample-data")
    write_synthetic(directory, SAMPLE_SYMBOLS, SAMPLE_TIMEFRAME, SAMPLE_BARS, SAMPLE_SEED)
    return directory


@pytest.fixture
def make_data_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write synthetic data into a fresh directory: `make_data_dir(["EURUSD"], "1h", 500)`."""

    def make(
        symbols: Sequence[str] = SAMPLE_SYMBOLS,
        timeframe: str = SAMPLE_TIMEFRAME,
        bars: int = 500,
        seed: int = SAMPLE_SEED,
        fmt: str = "parquet",
    ) -> Path:
        directory = tmp_path / f"data-{timeframe}-{bars}-{seed}-{fmt}"
        write_synthetic(directory, symbols, timeframe, bars, seed, fmt=fmt)  # type: ignore[arg-type]
        return directory

    return make


@pytest.fixture(scope="session")
def example_strategy(strategies_dir: Path) -> StrategyConfig:
    """`rsi_macd_zigzag`: the README's example (EURUSD 1h, RSI + MACD, zigzag labels)."""
    return load_strategy("rsi_macd_zigzag", strategies_dir)


@pytest.fixture(scope="session")
def load_example(strategies_dir: Path) -> Callable[[str], StrategyConfig]:
    """Load any shipped strategy by name."""

    def load(name: str) -> StrategyConfig:
        return load_strategy(name, strategies_dir)

    return load


# --- training half (model, trainer, evaluate, storage, pipeline, CLI tests) --------------------

TINY_BARS = 1500
TINY_STRATEGY_YAML = strategy_yaml(
    "tiny", epochs=3, hidden_layers=(16, 8),
    description="a small, fast strategy for the training tests")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EURUSD and GBPUSD, 1500 synthetic 1h bars each (read-only: copy before writing)."""
    directory = tmp_path_factory.mktemp("tiny-data")
    write_synthetic(directory, SAMPLE_SYMBOLS, SAMPLE_TIMEFRAME, TINY_BARS, SAMPLE_SEED)
    return directory


@pytest.fixture(scope="session")
def tiny_strategies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strategies dir holding `tiny.yaml` (TINY_STRATEGY_YAML)."""
    return write_strategies(tmp_path_factory.mktemp("tiny-strategies"),
                            {"tiny": TINY_STRATEGY_YAML})


@pytest.fixture(scope="session")
def tiny_strategy() -> StrategyConfig:
    from libs.pipeline.strategy import parse_strategy

    return parse_strategy(TINY_STRATEGY_YAML, source="tiny.yaml")


@pytest.fixture(scope="session")
def tiny_splits(tiny_strategy: StrategyConfig, tiny_data_dir: Path):  # -> DataSplits
    """Both symbols through the per-symbol chain, split and concatenated (~2k train rows)."""
    from libs.pipeline.dataset import build_symbol_data
    from libs.pipeline.pipeline import TrainingPipeline

    per_symbol = [build_symbol_data(tiny_strategy, symbol, [SAMPLE_TIMEFRAME],
                                    data_dir=tiny_data_dir) for symbol in SAMPLE_SYMBOLS]
    return TrainingPipeline().combine_multi_symbol_data(tiny_strategy, per_symbol)


def fresh_model(strategy: StrategyConfig, input_dim: int, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model(input_dim, 3, strategy.model)


def run(
    strategy: StrategyConfig,
    splits: Any,
    cfg: TrainingConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    **kwargs: Any,
) -> tuple[torch.nn.Module, Any]:
    """Train `model` (default: a fresh one, seed 0) on the splits; kwargs go to `train`."""
    model = model or fresh_model(strategy, splits.x_train.shape[1])
    outcome = train(
        model,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        cfg or strategy.training,
        **kwargs,
    )
    return model, outcome
