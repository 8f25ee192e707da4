"""Workspaces: synthetic price data and a strategies directory, written once and read by the
trainers, the API and the CLI under test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.strategies import example_variant, write_strategies

API_BARS = 2000  # seed 42: two classes in every slice of the example after purge


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    strategies_dir: Path


def write_workspace(
    data_dir: Path,
    strategies_dir: Path,
    *,
    symbols: Sequence[str],
    bars: int,
    seed: int,
    strategies: Mapping[str, str],
) -> Workspace:
    """`bars` synthetic 1h bars of each symbol (seeded) and the strategies (name -> YAML)."""
    from libs.pipeline.data import write_synthetic

    write_synthetic(data_dir, symbols, "1h", bars, seed)
    write_strategies(strategies_dir, strategies)
    return Workspace(data_dir=data_dir, strategies_dir=strategies_dir)


def api_workspace(base: Path) -> Workspace:
    """Sample data (EURUSD 1h) and three variants of the example strategy:
    `tiny` (2 epochs), `medium` (10 small-batch epochs: runs long enough to stream) and `long`
    (thousands of epochs, no early stopping: only a cancel ends it)."""
    return write_workspace(base / "data", base / "strategies", symbols=["EURUSD"],
                           bars=API_BARS, seed=42, strategies={
        "tiny": example_variant("tiny", {"epochs": 2}),
        "medium": example_variant("medium", {"epochs": 10, "batch_size": 32,
                                             "early_stopping": None}),
        "long": example_variant("long", {"epochs": 20000, "batch_size": 16,
                                         "early_stopping": None}),
    })
