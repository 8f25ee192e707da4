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
from tests.dashboard.stack import Console, artifact, browser_missing, chromium
from tests.harness import evaluation
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
            "samples": 10, "accuracy": 0.6, "weighted_f1": 0.55, "macro_f1": 0.52, "loss": 0.9,
            "confusion_matrix": [[3, 1, 0], [1, 2, 0], [0, 2, 1]],
            "class_names": ["BUY", "HOLD", "SELL"],
            "per_class": {"BUY": {"precision": 0.75, "recall": 0.75, "f1": 0.75,
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


def full() -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample's manifest with a whole evaluation: baselines, backtest, folds, splits."""
    metadata, _ = sample()
    return metadata, evaluation.metrics()


def section(page: str, id_: str) -> str:
    match = re.search(rf'<section[^>]*id="{id_}".*?</section>', page, re.S)
    assert match is not None, id_
    return match.group(0)


def test_the_evaluation_comes_first_warnings_baselines_backtest_folds_splits() -> None:
    metadata, metrics = full()
    page = render_report(metadata, metrics)
    assert page == render_report(metadata, metrics)
    order = [page.index(f'id="{i}"') for i in ("warnings", "headline", "backtest",
                                                  "walk-forward", "splits", "chart-loss",
                                                  "confusion", "manifest")]
    assert order == sorted(order)
    # Warnings escaped; the headline: macro F1 first, each baseline with its lift.
    assert "&lt;b&gt;GBPUSD&lt;/b&gt;: 12 labels purged" in section(page, "warnings")
    head = section(page, "headline")
    test = metrics["test"]
    assert f"{test['macro_f1'] * 100:.1f}%" in head and "majority (HOLD)" in head
    assert f"{(test['macro_f1'] - 0.19) * 100:+.1f} pp" in head and "+20.0 pp" in head
    assert "+5.80% vs +1.20%" in head and "1.23 vs 0.31" in head
    # The backtest: every strategy (model first), the lift with its interval, per symbol.
    backtest = section(page, "backtest")
    rows = re.findall(r"<tr><th>([^<]+)</th>", backtest.split('id="backtest-lift"')[0])
    assert rows[:5] == ["strategy", "model", "buy &amp; hold", "majority", "last confirmed"]
    assert "+1.50 bp" in backtest and "-0.20 bp … +3.10 bp" in backtest
    assert "+93.00%" in backtest and 'id="chart-equity"' in backtest
    assert "-3.90%" in backtest and "EURUSD" in section(page, "backtest")
    # Walk-forward: a row per fold and mean ± std; the splits: purged and embargoed per symbol.
    folds = section(page, "walk-forward")
    assert "expanding" in folds and folds.count("<tr><th>") >= 2 + 4
    summary = re.findall(r'<td class="num">([^<]*)</td>', folds.split("walk-forward-summary")[1])
    assert summary[:8] == ["60.0%", "± 5.0%", "65.0%", "± 5.0%", "+5.00%", "± 1.00%", "1.2",
                           "± 0.3"]  # macro F1, accuracy, backtest net return, Sharpe
    splits = section(page, "splits")
    assert "embargo: 5 bars" in splits and "GBPUSD" in splits and "train purged" in splits
    # The equity curve's data, as the chart draws it.
    equity = embedded(page)["equity"]
    assert set(equity) == {"time", "model", "buy_and_hold", "majority", "last_confirmed"}
    assert len(equity["time"]) == len(equity["model"]) == 30


def test_metrics_of_older_models_render_without_the_new_sections() -> None:
    metadata, metrics = sample()
    legacy = dict(metrics["test"])
    del legacy["weighted_f1"], legacy["macro_f1"]
    legacy["f1_score"] = 0.55
    legacy["per_class"] = {"BUY": {"precision": 0.75, "recall": 0.75, "f1_score": 0.7,
                                   "support": 4}}
    page = render_report(metadata, {**metrics, "test": legacy})
    for id_ in ("warnings", "headline", "backtest", "walk-forward", "splits", "chart-equity"):
        assert f'id="{id_}"' not in page
    assert embedded(page)["equity"] is None
    assert "55.0%" in page and "70.0%" in page  # the weighted F1 card and the per-class F1
    # A backtest that traded nothing says so.
    noted = render_report(metadata, {**metrics, "test": {
        **metrics["test"], "backtest": {"note": "no test rows to trade", "bars": 0}}})
    assert "no test rows to trade" in section(noted, "backtest")
    assert embedded(noted)["equity"] is None


@pytest.mark.anyio
@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
async def test_the_equity_curve_is_drawn_in_the_browser(tmp_path: Path) -> None:
    metadata, metrics = full()
    path = tmp_path / "report.html"
    path.write_text(render_report(metadata, metrics))
    async with chromium(tmp_path) as context:
        page = await context.new_page()
        console = Console()
        console.watch(page)
        await page.goto(path.as_uri())
        chart = page.locator("#chart-equity svg.tb-chart")
        await chart.wait_for()
        assert await chart.get_attribute("data-series") == "4"
        assert await chart.get_attribute("data-points") == str(4 * 30)
        labels = await chart.locator("g.tb-series").evaluate_all(
            "gs => gs.map(g => g.dataset.label)")
        assert labels == ["model", "buy & hold", "majority", "last confirmed"]
        await page.screenshot(path=artifact("model-report-evaluation.png"), full_page=True)
        assert console.errors == []


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """One real (tiny) training run saved by the pipeline: the model's version directory."""
    from libs.pipeline.data import write_synthetic
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest

    write_synthetic(tmp_path / "data", ["EURUSD"], "1h", 4000, seed=42)
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
