"""The table at the end of a followed job: the headline numbers of its `completed` event in the
order they matter, labelled in words, and the run's warnings after it."""

from __future__ import annotations

import io

from rich.console import Console

from libs.events.fold import JobState
from services.cli.client import headline_rows, report
from tests.harness.evaluation import headline_metrics


def rendered(state: JobState) -> str:
    out = io.StringIO()
    report(Console(file=out, width=120, color_system=None), state)
    return out.getvalue()


def test_the_headline_comes_first_baselines_and_backtest_labelled() -> None:
    metrics = headline_metrics()
    labels = [label for label, _ in headline_rows(metrics)]
    assert labels[:6] == ["test macro F1", "test accuracy", "baseline majority macro F1",
                          "baseline majority accuracy", "macro F1 lift vs majority",
                          "accuracy lift vs majority"]
    assert labels.index("backtest net return") < labels.index("buy & hold net return") < (
        labels.index("test weighted F1"))
    assert labels[-2:] == ["test loss", "test samples"]
    assert len(labels) == len(metrics)  # every number shown once
    values = dict(headline_rows(metrics))
    assert values["backtest net return"] == "+5.80%"
    assert values["backtest lift vs buy & hold (annualised)"] == "+93.00%"
    assert values["macro F1 lift vs majority"].startswith("+0.38")


def test_regression_and_unknown_keys() -> None:
    rows = headline_rows({"samples": 4.0, "rmse": 0.01, "lift_rmse_vs_train_mean": 0.002,
                          "baseline_train_mean_direction_accuracy": 0.5,
                          "baseline_train_mean_rmse": 0.012, "other": 1.5})
    assert [label for label, _ in rows] == [
        "test RMSE", "baseline train mean RMSE", "baseline train mean direction accuracy",
        "RMSE lift vs train mean", "test samples", "test other"]


def test_the_job_table_and_its_warnings() -> None:
    metrics: dict[str, float | None] = dict(headline_metrics())
    state = JobState(job_id="job-1", status="completed", command_seq=1, last_seq=9,
                     strategy="tiny", test_metrics=metrics,
                     warnings=("only <30> test rows",))
    text = rendered(state)
    assert text.index("test macro F1") < text.index("backtest Sharpe") < text.index("test loss")
    assert "+5.80%" in text and "test samples" in text and " 30 " in text
    assert text.rstrip().splitlines()[-1] == "warning: only <30> test rows"
