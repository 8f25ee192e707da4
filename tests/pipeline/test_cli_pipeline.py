"""`trainbus pipeline run` through the real console script, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.processes import TRAINBUS

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path(TRAINBUS).exists(), reason="console script not installed")


def trainbus(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAINBUS_DEVICE": "cpu", "COLUMNS": "120"}
    return subprocess.run(
        [TRAINBUS, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_run_trains_and_saves(
    tmp_path: Path, tiny_data_dir: Path, tiny_strategies_dir: Path
) -> None:
    models = tmp_path / "models"
    proc = trainbus(
        "pipeline",
        "run",
        "tiny",
        "--epochs",
        "2",
        "--symbols",
        "EURUSD",
        "--data-dir",
        tiny_data_dir,
        "--models-dir",
        models,
        "--strategies-dir",
        tiny_strategies_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # not a TTY: plain lines, one per phase and per epoch, then the table and the path
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert "[training]" in proc.stdout and "test accuracy" in proc.stdout
    assert lines[-1] == f"model: {models / 'tiny' / '1h_v1'}"
    assert (models / "tiny" / "1h_v1" / "model.safetensors").is_file()


def test_bad_strategy_exits_2_and_writes_nothing(
    tmp_path: Path, tiny_data_dir: Path, tiny_strategies_dir: Path
) -> None:
    models = tmp_path / "models"
    proc = trainbus(
        "pipeline",
        "run",
        "nosuch",
        "--data-dir",
        tiny_data_dir,
        "--models-dir",
        models,
        "--strategies-dir",
        tiny_strategies_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "nosuch" in proc.stderr and "not found" in proc.stderr
    assert not models.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nindicators: 3\n")
    proc = trainbus(
        "pipeline", "run", broken, "--data-dir", tiny_data_dir, "--models-dir", models, cwd=tmp_path
    )
    assert proc.returncode == 2 and "broken" in proc.stderr
    assert not models.exists()


def test_missing_data_exits_2(tmp_path: Path, tiny_strategies_dir: Path) -> None:
    proc = trainbus(
        "pipeline",
        "run",
        "tiny",
        "--data-dir",
        tmp_path / "empty",
        "--models-dir",
        tmp_path / "models",
        "--strategies-dir",
        tiny_strategies_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "no data for EURUSD" in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_cancels_cleanly_with_130(tmp_path: Path, tiny_data_dir: Path) -> None:
    # a strategy file given by path, and enough epochs to still be training when Ctrl-C comes
    from .conftest import TINY_STRATEGY_YAML

    path = tmp_path / "long.yaml"
    path.write_text(TINY_STRATEGY_YAML.replace("epochs: 3", "epochs: 5000"))
    models = tmp_path / "models"
    env = {**os.environ, "TRAINBUS_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [
            TRAINBUS,
            "pipeline",
            "run",
            str(path),
            "--data-dir",
            str(tiny_data_dir),
            "--models-dir",
            str(models),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until the first epoch has finished
        if line.startswith("epoch 1/"):
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert not models.exists() or not any(models.rglob("*_v*"))
