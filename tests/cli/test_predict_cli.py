"""`trainbus predict` and `trainbus backtest` on real hourly EURUSD (the `backtesting` wheel's
file, imported into a data dir): the CLI's rows are the prediction API's, the backtest writes its
report with the equity curve, and bad input exits 2 with one line naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import yaml

from libs.events import registry
from libs.events.config import BusConfig
from libs.pipeline.device import DeviceManager
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.predict import load_model, predict_window
from libs.pipeline.storage.models import ModelStorage
from services.cli.main import main
from tests.cli.conftest import run_cli
from tests.harness.bus import open_bus
from tests.harness.market import install_real_data
from tests.harness.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("predict-cli")
    install_real_data(base / "data", ("EURUSD", "1h"))
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    strategy["training"] = {**strategy["training"], "epochs": 2}
    strategy["training"].pop("walk_forward")
    result = TrainingPipeline(
        data_dir=base / "data", storage=ModelStorage(base / "models"),
        device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}),
    ).run(TrainingRequest(strategy_yaml=yaml.safe_dump(strategy)))
    return base / "data", base / "models", result.model.name  # strategy/<tf>_v<N>


def test_predict_prints_the_prediction_apis_rows(
    trained: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, models, model = trained
    args = [model, "--data-dir", str(data), "--models-dir", str(models),
            "--start", "2018-02-01", "--end", "2018-02-05"]
    assert main(["predict", *args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    loaded = load_model(model, models)
    [expected] = predict_window(loaded, data_dir=data, start="2018-02-01", end="2018-02-05")
    assert rows == expected.rows() and rows
    assert main(["predict", *args, "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "time,symbol,p_buy,p_hold,p_sell,signal" and len(lines) == len(rows) + 1
    # The model's directory works as MODEL, and `latest` too.
    version_dir = str(models / model)
    assert main(["predict", version_dir, "--data-dir", str(data), "--start", "2018-02-05",
                 "--json"]) == 0
    assert main(["predict", model.split("/")[0] + "/latest", "--models-dir", str(models),
                 "--data-dir", str(data), "--start", "2018-02-05", "--json"]) == 0


def test_backtest_prints_figures_and_writes_the_report(
    trained: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, models, model = trained
    report = tmp_path / "backtest.html"
    assert main(["backtest", model, "--data-dir", str(data), "--models-dir", str(models),
                 "--start", "2018-01-02", "--end", "2018-02-07", "--costs", "0.0002",
                 "--report", str(report), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["settings"]["cost_per_turnover"] == 0.0002
    assert {"model", "buy_and_hold"} <= set(figures["strategies"])
    page = report.read_text()
    assert "equity" in page.lower() and model.split("/")[0] in page


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "nope/1h_v1"], "no saved model nope/1h_v1"),
        (["predict", "{model}", "--start", "2019-01-01"], "no bar to predict"),
        (["predict", "{strategy}/one"], "expected strategy/<tf>_v<N>"),
        (["backtest", "{model}", "--symbols", "GBPUSD"], "GBPUSD"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    trained: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str,
) -> None:
    data, models, model = trained
    argv = [a.format(model=model, strategy=model.split("/")[0]) for a in argv]
    assert main([*argv, "--data-dir", str(data), "--models-dir", str(models)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.anyio
async def test_predict_and_backtest_through_an_alias_and_an_expired_one_refused(
    trained: tuple[Path, Path, str], config: BusConfig, tmp_path: Path
) -> None:
    data, models, model = trained
    strategy, version = model.split("/")
    env = clean_env(NATS_URL=",".join(config.urls), TRAINBUS_SUBJECT_PREFIX=config.prefix,
                    TRAINBUS_MODELS_DIR=str(models), TRAINBUS_DATA_DIR=str(data),
                    TRAINBUS_STREAM_MAX_BYTES=str(config.stream_max_bytes))
    async with open_bus(config) as bus:
        await registry.set_alias(bus, strategy, "champion", version, by="test",
                                 expires_after=None, reason="the real-data model",
                                 models_dir=models)
        await registry.set_alias(bus, strategy, "stale", version, by="test",
                                 expires_after=0.05, reason=None, models_dir=models)
    by_alias = await run_cli("predict", f"{strategy}@champion", "--start", "2018-02-05",
                             "--json", env=env)
    assert by_alias.rc == 0, by_alias.stderr
    direct = await run_cli("predict", model, "--start", "2018-02-05", "--json", env=env)
    assert by_alias.stdout == direct.stdout and by_alias.stdout
    backtest = await run_cli("backtest", f"{strategy}@champion", "--start", "2018-01-02",
                             "--json", env=env)
    assert backtest.rc == 0 and json.loads(backtest.stdout)["bars"] > 0
    await anyio.sleep(0.1)  # past the 50 ms expiry: the clock is what is tested
    expired = await run_cli("predict", f"{strategy}@stale", "--start", "2018-02-05", env=env)
    assert expired.rc == 2 and "expired at" in expired.stderr, expired.stderr
