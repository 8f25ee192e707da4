"""`context_data`: external series that indicators read with `data_source`, served from local
price files. Real files: EURUSD hours traded, the S&P 500's daily bars as the context.

The schema refuses what it cannot serve (network providers, unknown names) by path; an
indicator on a context series is aligned so that each row sees only context bars closed by its
own close (checked against an independent as-of join, and by changing the context after a row:
the row does not move); a strategy with context trains end to end, and predicting its test
window from the raw files reproduces the training's predictions bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib
import yaml

from libs.pipeline.context import indicators_with_context, load_context_prices, split_context
from libs.pipeline.data import DataError, write_price_file
from libs.pipeline.dataset import load_symbol_prices, symbol_features
from libs.pipeline.device import DeviceManager
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.predict import predict_symbol
from libs.pipeline.storage.models import ModelStorage, predict
from libs.pipeline.strategy import StrategyError, check_strategy, dump_yaml, parse_strategy
from tests.harness.market import install_real_data, load_real

ROOT = Path(__file__).resolve().parents[2]

CONTEXT = [{"provider": "local", "symbol": "SP500", "timeframe": "1d",
            "instrument_type": "INDEX", "alignment": "forward_fill"}]


def strategy_text(**changes: Any) -> str:
    """The real EURUSD strategy with the S&P 500's RSI as a fourth input; 2 epochs."""
    strategy = yaml.safe_load((ROOT / "strategies" / "eurusd_1h_real.yaml").read_text())
    strategy["training"] = {k: v for k, v in strategy["training"].items() if k != "walk_forward"}
    strategy["training"]["epochs"] = 2
    strategy["context_data"] = CONTEXT
    strategy["indicators"]["spx_rsi_14"] = {"type": "rsi", "period": 14, "data_source": "SP500"}
    strategy["fuzzy_sets"]["spx_zone"] = {"indicator": "spx_rsi_14", "weak": [0, 30, 50],
                                          "neutral": [30, 50, 70], "strong": [50, 70, 100]}
    strategy["nn_inputs"].append({"fuzzy_set": "spx_zone", "timeframes": "all"})
    strategy.update(changes)
    return yaml.safe_dump(strategy, sort_keys=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("real")
    install_real_data(directory, ("EURUSD", "1h"), ("SP500", "1d"))
    return directory


# --- the schema -------------------------------------------------------------------------------


def test_context_data_and_data_source_are_decoded() -> None:
    config = parse_strategy(strategy_text())
    [series] = config.context_data
    assert (series.provider, series.symbol, series.timeframe) == ("local", "SP500", "1d")
    assert series.source_name == "SP500"
    assert config.indicators["spx_rsi_14"].data_source == "SP500"
    assert config.indicators["spx_rsi_14"].params == {"period": 14, "source": "close"}
    assert config.indicators["rsi_14"].data_source is None


def problems_of(text: str) -> dict[str, str]:
    check = check_strategy(text)
    assert check.config is None
    return {issue.path: issue.message for issue in check.problems}


def test_network_providers_are_refused_by_path() -> None:
    fred = {"provider": "fred", "series": ["DGS2", "IRLTLT01DEM156N"], "frequency": "daily",
            "alignment": "forward_fill"}
    found = problems_of(strategy_text(context_data=[*CONTEXT, fred]))
    assert list(found) == ["context_data[1].provider"]
    assert "network" in found["context_data[1].provider"]
    check = check_strategy(strategy_text(context_data=[*CONTEXT, fred]))
    assert "trainbus data import" in (check.problems[0].hint or "")
    cot = problems_of(strategy_text(context_data=[{"provider": "cftc_cot", "symbol": "EUR"}]))
    assert "network" in cot["context_data[0].provider"]


def test_unknown_data_source_and_bad_entries_name_their_path() -> None:
    text = strategy_text()
    found = problems_of(text.replace("data_source: SP500", "data_source: GBPUSD"))
    assert list(found) == ["indicators.spx_rsi_14.data_source"]
    assert "unknown context series 'GBPUSD'; defined: SP500" in found[
        "indicators.spx_rsi_14.data_source"]
    missing_tf = problems_of(strategy_text(context_data=[{"provider": "local",
                                                           "symbol": "SP500"}]))
    assert any(path.startswith("context_data[0]") and "timeframe" in message + path
               for path, message in missing_tf.items())
    twice = problems_of(strategy_text(context_data=[*CONTEXT, *CONTEXT]))
    assert "context_data[1].name" in twice
    with pytest.raises(StrategyError, match=r"context_data: expected a list"):
        parse_strategy(strategy_text(context_data={"SP500": CONTEXT[0]}))


def test_ib_reads_the_local_file_with_a_warning() -> None:
    ib = {"provider": "ib", "symbol": "SP500", "timeframe": "1d", "instrument_type": "IND"}
    check = check_strategy(strategy_text(context_data=[ib]))
    assert check.config is not None
    [warning] = [w for w in check.warnings if w.path == "context_data[0].provider"]
    assert "never calls a broker" in warning.message


# --- alignment: no look-ahead -----------------------------------------------------------------


def as_of_reference(base: pd.DataFrame, context: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    """Per 1h bar, the value of the latest 1d bar whose close (open + 1 day) is at or before the
    hour's close (open + 1 hour): an as-of join on close times, independent of the code."""
    left = pd.DataFrame({"close_at": base.index + pd.Timedelta(hours=1)})
    right = pd.DataFrame({"close_at": context.index + pd.Timedelta(days=1), "value": values})
    joined = pd.merge_asof(left, right, on="close_at", direction="backward")
    return joined["value"].to_numpy()


def test_context_values_are_those_of_bars_closed_by_each_row() -> None:
    config = parse_strategy(strategy_text())
    base, context = load_real("EURUSD", "1h"), load_real("SP500", "1d")
    frame = indicators_with_context(base, "1h", config, {"SP500": context})
    rsi = talib.RSI(context["close"].to_numpy(float), timeperiod=14)
    expected = as_of_reference(base, context, rsi)
    np.testing.assert_array_equal(frame["spx_rsi_14"].to_numpy(), expected)
    assert np.isfinite(expected).all()  # the index's history covers every hour
    # The traded symbol's own indicators are untouched.
    np.testing.assert_array_equal(frame["rsi_14"].to_numpy(),
                                  talib.RSI(base["close"].to_numpy(float), timeperiod=14))
    # A daily bar stamped D is first seen by the hour that closes at D + 1 day, not before.
    day = context.index[context.index.get_indexer([pd.Timestamp("2017-06-06", tz="UTC")])[0]]
    seen = frame["spx_rsi_14"]
    assert seen.loc[day + pd.Timedelta(hours=23)] == rsi[context.index.get_loc(day)]
    assert seen.loc[day + pd.Timedelta(hours=22)] == rsi[context.index.get_loc(day) - 1]


def test_changing_the_context_after_a_row_does_not_change_that_row(
    data_dir: Path, tmp_path: Path
) -> None:
    config = parse_strategy(strategy_text())
    prices = load_symbol_prices(config, "EURUSD", ["1h"], data_dir=data_dir)
    before = symbol_features(config, "EURUSD", prices, "1h").to_frame()
    row = before.index[len(before) // 2]
    # Every context bar that closes after this row's close gets another price path.
    changed_dir = tmp_path / "changed"
    install_real_data(changed_dir, ("EURUSD", "1h"), ("SP500", "1d"))
    context = load_real("SP500", "1d")
    later = context.index + pd.Timedelta(days=1) > row + pd.Timedelta(hours=1)
    scale = np.where(later, np.linspace(0.7, 1.3, len(context)), 1.0)
    for column in ("open", "high", "low", "close"):
        context[column] = context[column] * scale
    write_price_file(context, changed_dir / "SP500_1d.parquet")
    after = symbol_features(config, "EURUSD",
                            load_symbol_prices(config, "EURUSD", ["1h"], data_dir=changed_dir),
                            "1h").to_frame()
    pd.testing.assert_frame_equal(after.loc[:row], before.loc[:row])
    # ... and the change does reach the rows that close after those context bars.
    spx = [c for c in before.columns if "spx_zone" in c]
    assert not np.allclose(after.loc[row:, spx].to_numpy(), before.loc[row:, spx].to_numpy())


def test_a_missing_context_file_names_the_series_and_the_file(tmp_path: Path) -> None:
    install_real_data(tmp_path, ("EURUSD", "1h"))
    config = parse_strategy(strategy_text())
    with pytest.raises(DataError, match=r"context_data\[0\] \(SP500: local SP500 1d\).*"
                                        r"SP500_1d\.parquet"):
        load_symbol_prices(config, "EURUSD", ["1h"], data_dir=tmp_path)
    with pytest.raises(DataError, match="whose bars were not loaded"):
        symbol_features(config, "EURUSD", {"1h": load_real("EURUSD", "1h")}, "1h")


def test_context_frames_travel_beside_the_timeframes(data_dir: Path) -> None:
    config = parse_strategy(strategy_text())
    prices = load_symbol_prices(config, "EURUSD", ["1h"], data_dir=data_dir, start="2018-01-02")
    by_tf, context = split_context(prices)
    assert list(by_tf) == ["1h"] and list(context) == ["SP500"]
    # Read whole, not from the run's start: context indicators do not depend on the window.
    assert context["SP500"].index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert load_context_prices(parse_strategy(strategy_text(context_data=[]).replace(
        "data_source: SP500", "")), data_dir=data_dir) == {}


# --- end to end ---------------------------------------------------------------------------------


def test_trains_end_to_end_and_predicts_its_test_window_from_raw_bars(
    data_dir: Path, tmp_path: Path
) -> None:
    text = strategy_text()
    pipeline = TrainingPipeline(data_dir=data_dir, storage=ModelStorage(tmp_path / "models"),
                                device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    request = TrainingRequest(strategy_yaml=text)
    result = pipeline.run(request)
    prepared = pipeline.prepare(request)
    splits = prepared.splits
    assert sum("spx_zone" in name for name in splits.feature_names) == 3 * 3  # with 2 lags
    loaded = ModelStorage(tmp_path / "models").load(result.model.strategy, result.model.version)
    assert loaded.config.context_data == parse_strategy(text).context_data
    times = pd.DatetimeIndex(pd.to_datetime(splits.test_times, utc=True))
    trained = predict(loaded, splits.x_test)
    from_files = predict_symbol(loaded, "EURUSD", data_dir=data_dir, start=times[0])
    bars = load_real("EURUSD", "1h")
    from_bars = predict_symbol(loaded, "EURUSD", bars=bars, data_dir=data_dir, start=times[0])
    for served in (from_files, from_bars):
        at = served.times.get_indexer(times)
        assert (at >= 0).all(), "every test bar is predicted"
        np.testing.assert_array_equal(served.outputs[at], trained)

    # The fingerprint covers the context: another S&P 500 file is other data.
    other = tmp_path / "other"
    install_real_data(other, ("EURUSD", "1h"), ("SP500", "1d"))
    spx = load_real("SP500", "1d")
    spx["close"] = spx["close"] * 1.01
    spx["high"] = spx["high"] * 1.01
    write_price_file(spx, other / "SP500_1d.parquet")
    elsewhere = TrainingPipeline(data_dir=other, storage=ModelStorage(tmp_path / "m2"),
                                 device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}))
    assert elsewhere.prepare(request).fingerprint != prepared.fingerprint


def test_a_series_no_indicator_reads_is_a_warning() -> None:
    check = check_strategy(strategy_text().replace("data_source: SP500", ""))
    assert check.config is not None
    assert [w.path for w in check.warnings if w.path.startswith("context_data")] == [
        "context_data[0]"]


def test_the_saved_yaml_reads_back_the_same_context() -> None:
    config = parse_strategy(strategy_text())
    again = parse_strategy(dump_yaml(config))
    assert again.context_data == config.context_data
    assert again.indicators == config.indicators
    assert "context_data" not in dump_yaml(parse_strategy(strategy_text(context_data=[]).replace(
        "data_source: SP500", "")))
