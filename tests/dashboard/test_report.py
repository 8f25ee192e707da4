"""report.html: the pure renderer, and ModelStorage writing it beside every saved model without
touching the manifest's tamper checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.pipeline.report import REPORT_FILE, asset_text, render_report
from tests.harness.strategies import EXAMPLE

DATA = re.compile(r'<script type="application/json" id="trainbus-data">(.*?)</script>', re.S)


def sample() -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = {
        "format": "trainbus-model", "format_version": 1, "strategy": "demo", "timeframe": "1h",
        "symbols": ["EURUSD"], "timeframes": ["1h"], "seed": 7, "device": "cpu",
        "created_at": "2026-01-02T03:04:05+00:00", "weights_sha256": "ab" * 32,
        "model": {"type": "mlp", "hidden_layers": [8, 4], "parameters": 123},
        "files": {"model.safetensors": {"sha256": "cd" * 32, "bytes": 1234}},
        "versions": {"trainbus": "0.1.0", "torch": "2.13.0"},
    }
    metrics = {
        "history": [
            {"epoch": 1, "train_loss": 1.1, "train_accuracy": 0.4, "val_loss": 1.0,
             "val_accuracy": 0.45, "learning_rate": 1e-3, "duration": 0.2},
            {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.5, "val_loss": float("nan"),
             "val_accuracy": 0.5, "learning_rate": 1e-3, "duration": 0.2},
        ],
        "best_epoch": 1, "epochs_trained": 2, "stopped_early": False, "training_seconds": 0.4,
        "test": {
            "samples": 10, "accuracy": 0.6, "f1_score": 0.55, "loss": 0.9,
            "confusion_matrix": [[3, 1, 0], [1, 2, 0], [0, 2, 1]],
            "class_names": ["BUY", "HOLD", "SELL"],
            "per_class": {"BUY": {"precision": 0.75, "recall": 0.75, "f1_score": 0.75,
                                  "support": 4}},
        },
    }
    return metadata, metrics


def embedded(page: str) -> dict[str, Any]:
    match = DATA.search(page)
    assert match is not None
    return json.loads(match.group(1))


def test_the_report_embeds_the_curves_and_confusion_matrix_as_json_and_the_chart_code() -> None:
    metadata, metrics = sample()
    page = render_report(metadata, metrics)
    data = embedded(page)
    # Check the data the shared chart code draws: every epoch, NaN as null, the matrix.
    assert [h["epoch"] for h in data["history"]] == [1, 2]
    assert data["history"][1]["val_loss"] is None
    assert data["confusion"] == {"matrix": [[3, 1, 0], [1, 2, 0], [0, 2, 1]],
                                 "labels": ["BUY", "HOLD", "SELL"]}
    # Check the same chart code as the dashboard is inlined, with the report's bootstrap.
    assert asset_text("charts.js") in page and asset_text("report.js") in page
    for slot in ("chart-loss", "chart-accuracy", "chart-lr", "confusion", "manifest"):
        assert f'id="{slot}"' in page
    # Check the manifest is readable without scripts: file hashes, versions, the JSON.
    assert "cd" * 32 in page and "torch 2.13.0" in page and "metadata.json" in page
    assert "60.0%" in page  # test accuracy card


def test_the_report_is_self_contained_and_deterministic() -> None:
    metadata, metrics = sample()
    page = render_report(metadata, metrics)
    assert page == render_report(metadata, metrics)
    # Nothing is fetched: no external scripts, styles, images or links to load.
    assert not re.search(r"<(script|img|link|iframe)[^>]*\b(src|href)=", page)
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert "NaN" not in DATA.search(page).group(1)  # type: ignore[union-attr]


def test_hostile_names_cannot_break_out_of_the_page() -> None:
    metadata, metrics = sample()
    metadata["strategy"] = "</script><script>alert(1)</script>"
    metrics["test"]["class_names"] = ["<b>BUY</b>", "</script>", "&amp;"]
    page = render_report(metadata, metrics)
    assert "<script>alert(1)" not in page
    # The JSON island holds no markup at all; the tables escape it.
    assert "<" not in DATA.search(page).group(1)  # type: ignore[union-attr]
    assert embedded(page)["confusion"]["labels"] == ["<b>BUY</b>", "</script>", "&amp;"]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_missing_or_odd_metrics_still_render() -> None:
    page = render_report({"strategy": "x"}, {})
    assert "No test metrics" in page and embedded(page)["confusion"] is None
    regression = render_report({"strategy": "r"}, {"test": {"samples": 5, "rmse": math.inf,
                                                            "mae": 0.1}})
    assert embedded(regression)["confusion"] is None and "mae" in regression


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """One real (tiny) training run saved by the pipeline: the model's version directory."""
    from libs.pipeline.data import write_synthetic
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest

    write_synthetic(tmp_path / "data", ["EURUSD"], "1h", 1500, seed=42)
    strategy = yaml.safe_load(EXAMPLE.read_text())
    strategy["training"].update(epochs=2)
    result = TrainingPipeline().run(TrainingRequest(
        strategy_yaml=yaml.safe_dump(strategy), data_dir=str(tmp_path / "data"),
        models_dir=str(tmp_path / "models")))
    return Path(result.model.path)


def test_every_saved_model_gets_a_report_outside_the_hashed_manifest(trained: Path,
                                                                      tmp_path: Path) -> None:
    from libs.pipeline.storage.models import HASHED_FILES, ModelStorage

    report = trained / REPORT_FILE
    assert report.is_file()
    metadata = json.loads((trained / "metadata.json").read_text())
    metrics = json.loads((trained / "metrics.json").read_text())
    # Check the report is the pure rendering of the saved JSON, and not among the hashed files.
    assert report.read_text() == render_report(metadata, metrics)
    assert REPORT_FILE not in metadata["files"] and set(metadata["files"]) == set(HASHED_FILES)
    assert [h["epoch"] for h in embedded(report.read_text())["history"]] == [1, 2]

    # Check the tamper checks are untouched: the model loads, and an edited report (a view,
    # re-rendered on install) neither breaks loading nor travels in the archive.
    storage = ModelStorage(trained.parent.parent)
    strategy, version = trained.parent.name, int(trained.name.split("_v")[1])
    storage.load(strategy, version, "1h")
    report.write_text("tampered")
    storage.load(strategy, version, "1h")
    archive = storage.to_archive(storage.resolve(strategy, version, "1h"))
    other = ModelStorage(tmp_path / "elsewhere")
    installed = other.from_archive(archive)
    assert (Path(installed.path) / REPORT_FILE).read_text() == render_report(metadata, metrics)
