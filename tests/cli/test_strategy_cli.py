"""`trainbus strategy check|list`, in process (no bus): every problem of every file in one
pass, exit 2 when any file has problems, `--json`; the list of a strategies directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "strategies" / "rsi_macd_zigzag.yaml"
LEGACY = ROOT / "strategies" / "legacy_v2_example.yaml"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    text = GOOD.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("epochs: 20", "epochs: ten\n  method: rl")
                   .replace("activation: relu", "activaton: relu"))
    warned = tmp_path / "warned.yaml"
    warned.write_text(text.replace("epochs: 20", "epochs: 20\n  method: supervised"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [")
    good = tmp_path / "good.yaml"
    shutil.copy(GOOD, good)
    return {"bad": bad, "warned": warned, "broken": broken, "good": good}


def test_check_reports_every_problem_of_every_file_and_exits_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["strategy", "check", str(files["bad"]), str(files["broken"]), str(files["good"])])
    out = capsys.readouterr().out
    assert rc == 2
    assert "training.epochs: expected int" in out
    assert "training.method: only supervised" in out
    assert "model.architecture.activaton: unknown key" in out
    assert "did you mean activation?" in out
    assert "broken.yaml: 1 problem(s)" in out and "invalid YAML" in out
    assert "good.yaml: ok" in out


def test_check_json_and_warnings_exit_0(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["strategy", "check", "--json", str(files["warned"]), str(files["good"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    warned = report["files"][0]
    assert warned["problems"] == []
    assert [w["path"] for w in warned["warnings"]] == ["training.method"]
    assert main(["strategy", "check", "--json", str(files["bad"])]) == 2
    bad = json.loads(capsys.readouterr().out)["files"][0]
    assert {p["path"] for p in bad["problems"]} >= {
        "training.epochs", "training.method", "model.architecture.activaton"}


def test_list_shows_each_strategy_or_its_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(LEGACY, tmp_path / "legacy.yaml")
    assert main(["strategy", "list", "--strategies-dir", str(tmp_path), "--json"]) == 0
    rows = {row["file"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["good.yaml"]["symbols"] == ["EURUSD"]
    assert rows["good.yaml"]["timeframes"] == ["1h"]
    assert rows["good.yaml"]["labels"] == "zigzag" and rows["good.yaml"]["model"] == "mlp"
    assert "training.epochs" in rows["bad.yaml"]["error"]
    assert rows["legacy.yaml"]["warnings"] > 0
    assert main(["strategy", "list", "--strategies-dir", str(tmp_path)]) == 0
    assert "rsi_macd_zigzag: EURUSD 1h labels=zigzag model=mlp" in capsys.readouterr().out
    assert main(["strategy", "list", "--strategies-dir", str(tmp_path / "none")]) == 2


def test_follow_prints_the_accepted_events_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from libs.events.fold import fold_all
    from libs.events.follow import JobUpdate
    from services.cli.client import JobDisplay
    from tests.events.builders import make_event, msg, train_command

    accepted = msg(2, make_event("accepted", warnings=["training.method: supervised is the "
                                                       "only method; the key changes nothing"]))
    state = fold_all([msg(1, train_command()), accepted])["job-a"]
    assert state.warnings == ("training.method: supervised is the only method; the key "
                              "changes nothing",)
    with JobDisplay(Console(), mode="plain") as display:
        display.show(JobUpdate(state=state, message=accepted))
    assert "warning: training.method: supervised is the only method" in capsys.readouterr().out


def test_the_job_state_keeps_the_accepted_warnings_before_the_runs() -> None:
    from libs.events.fold import fold_all
    from tests.events.builders import make_event, msg, train_command

    log = [msg(1, train_command()), msg(2, make_event("accepted", warnings=["a: ignored"])),
           msg(3, make_event("completed", warnings=["b: run warning", "a: ignored"]))]
    assert fold_all(log)["job-a"].warnings == ("a: ignored", "b: run warning")
