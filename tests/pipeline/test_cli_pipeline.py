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


def report_text(**overrides: object) -> str:
    """`_report`'s table and warnings for a stand-in result with the full evaluation."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from services.cli.pipeline import _report
    from tests.harness import evaluation

    metrics = evaluation.metrics()
    fields: dict[str, object] = {
        "strategy": "tiny", "model": SimpleNamespace(name="1h_v1", path="/m/tiny/1h_v1"),
        "history": [], "epochs_trained": 3, "best_epoch": 2, "stopped_early": False,
        "test_metrics": metrics["test"], "seed": 7, "weights_sha256": "ab" * 32,
        "duration_seconds": 1.5, "device": SimpleNamespace(device="cpu"),
        "data": SimpleNamespace(train_rows=200, val_rows=40, test_rows=30, feature_count=9),
        "warnings": metrics["warnings"], "splits": metrics["splits"],
        "walk_forward": metrics["walk_forward"],
    }
    fields.update(overrides)
    out = io.StringIO()
    _report(Console(file=out, width=160, color_system=None), SimpleNamespace(**fields))  # type: ignore[arg-type]
    return out.getvalue()


def test_the_report_shows_what_the_model_is_worth_first(capsys: pytest.CaptureFixture[str]) -> None:
    text = report_text()
    lines = [line for line in text.splitlines() if "│" in line]
    names = [line.split("│")[1].strip() for line in lines]
    assert names[:3] == ["test macro F1", "test accuracy", "baseline majority (HOLD)"]
    order = [names.index(n) for n in ("test macro F1", "baseline last confirmed",
                                      "backtest model", "backtest buy & hold",
                                      "lift vs buy & hold", "walk-forward",
                                      "train kept/purged/embargoed", "epochs trained")]
    assert order == sorted(order)
    row = {n: line.split("│")[2].strip() for n, line in zip(names, lines, strict=True)}
    assert row["baseline majority (HOLD)"].startswith("macro F1 0.1900 (lift +0.")
    assert row["backtest model"] == "net +5.80% · Sharpe 1.23 · max DD -3.90% · 12 trades"
    assert row["backtest majority"] == "net +0.00% · Sharpe - · max DD -1.00% · 0 trades"
    assert row["lift vs buy & hold"] == "+93.00%/yr · +1.50 bp/bar (95% CI -0.20 .. +3.10 bp)"
    assert row["macro F1 (mean ± std)"] == "0.6000 ± 0.0500"
    assert row["backtest Sharpe (mean ± std)"] == "1.2000 ± 0.3000"
    assert row["backtest net return (mean ± std)"] == "5.00% ± 1.00%"
    assert row["train kept/purged/embargoed"] == "200/6/10"
    assert row["test kept/purged/embargoed"] == "30/0/10"
    # The warnings come after the table, markup shown as text; the model path last.
    after = text.split("└")[-1]
    assert "warning: the test slice has only 30 rows" in after
    assert "<b>GBPUSD</b>: 12 labels purged" in after
    assert capsys.readouterr().out.strip().splitlines()[-1] == "model: /m/tiny/1h_v1"


def test_the_report_of_a_result_without_the_evaluation_sections() -> None:
    text = report_text(test_metrics={"samples": 30, "loss": 0.9, "accuracy": 0.6},
                       warnings=None, splits=None, walk_forward=None)
    assert "test accuracy" in text and "0.6000" in text
    for absent in ("baseline", "backtest", "walk-forward", "purged", "warning"):
        assert absent not in text
