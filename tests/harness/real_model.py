"""A real model to serve: `strategies/eurusd_1h_real.yaml` (tuned on real hourly EURUSD) with
two epochs and no walk-forward, trained on the real bars (tests/harness/market.py), for the
prediction tests of the HTTP API and the NATS predictor.

    workspace = real_workspace(tmp / "ws")              # real EURUSD 1h + the quick strategy
    ref = train_real_model(workspace, tmp / "models")   # eurusd_1h_real/1h_v1
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml

from libs.pipeline.storage.layout import ModelRef
from tests.harness.market import install_real_data
from tests.harness.strategies import ROOT, write_strategies
from tests.harness.workspace import Workspace

STRATEGY: Final = "eurusd_1h_real"
HISTORY: Final = 100  # its training_data.history_required


def real_strategy_yaml(epochs: int = 2) -> str:
    strategy = yaml.safe_load((ROOT / "strategies" / f"{STRATEGY}.yaml").read_text())
    training = {k: v for k, v in strategy["training"].items() if k != "walk_forward"}
    strategy["training"] = {**training, "epochs": epochs}
    return yaml.safe_dump(strategy, sort_keys=False)


def real_workspace(base: Path) -> Workspace:
    """Real EURUSD 1h bars (5000, 2017-04-19 .. 2018-02-07) and the quick real strategy."""
    data_dir = base / "data"
    install_real_data(data_dir, ("EURUSD", "1h"))
    strategies_dir = write_strategies(base / "strategies", {STRATEGY: real_strategy_yaml()})
    return Workspace(data_dir=data_dir, strategies_dir=strategies_dir)


def train_real_model(workspace: Workspace, models_dir: Path) -> ModelRef:
    """Train the quick real strategy on CPU into `models_dir` (about ten seconds)."""
    from libs.pipeline.device import DeviceManager
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
    from libs.pipeline.storage.models import ModelStorage

    pipeline = TrainingPipeline(data_dir=workspace.data_dir, storage=ModelStorage(models_dir),
                                device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    result = pipeline.run(TrainingRequest(strategy=STRATEGY,
                                          strategies_dir=str(workspace.strategies_dir)))
    return result.model
