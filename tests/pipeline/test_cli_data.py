"""`trainbus data synth` and `trainbus data features`, through their argparse handlers."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
import pytest

from libs.pipeline.data import load_price_data, synthesize
from services.cli import data as data_cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="trainbus")
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_synth_writes_deterministic_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "data",
        "synth",
        "--symbols",
        "EURUSD,GBPUSD",
        "--timeframe",
        "4h",
        "--bars",
        "120",
        "--seed",
        "9",
        "--data-dir",
        str(tmp_path),
        "--format",
        "csv",
    ]
    assert run(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EURUSD_4h.csv", "GBPUSD_4h.csv"]
    assert f"wrote {tmp_path / 'EURUSD_4h.csv'} (120 bars, seed 9)" in capsys.readouterr().out
    loaded = load_price_data("GBPUSD", "4h", data_dir=tmp_path)
    pd.testing.assert_frame_equal(loaded, synthesize("GBPUSD", "4h", 120, seed=9))


def test_synth_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "synth", "--symbols", "../evil", "--data-dir", str(tmp_path)]) == 2
    assert "error: invalid symbol '../evil'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["data", "synth", "--bars", "0"])
    with pytest.raises(SystemExit):
        run(["data", "synth", "--timeframe", "2h"])


def test_features_prints_names_and_shape(
    sample_data_dir: Path, strategies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "data",
        "features",
        "rsi_macd_zigzag",
        "--data-dir",
        str(sample_data_dir),
        "--strategies-dir",
        str(strategies_dir),
    ]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "strategy rsi_macd_zigzag" in out and "· 18 features" in out
    assert "    1  1h_rsi_zone_oversold\n" in out and "1h_macd_momentum_bullish_lag_2" in out
    rows = int(re.search(r"EURUSD: (\d+) rows x 18 features", out).group(1))  # type: ignore[union-attr]
    split = re.search(r"split train/validation/test: (\d+) / (\d+) / (\d+) rows", out)
    dropped = re.findall(r"(?:purged|embargoed) (\d+)", out)
    assert split is not None and len(dropped) == 6
    # Every usable row is in one slice, or was purged or embargoed at a boundary.
    assert sum(map(int, split.groups())) + sum(map(int, dropped)) == rows
    assert int(split.group(3)) > 0 and "no label yet" in out


def test_features_with_overrides(
    sample_data_dir: Path, strategies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "data",
        "features",
        str(strategies_dir / "multi_symbol_triple_barrier.yaml"),
        "--symbols",
        "GBPUSD",
        "--timeframes",
        "4h",
        "--start",
        "2020-02-01",
        "--end",
        "2020-03-31",
        "--data-dir",
        str(sample_data_dir),
    ]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "timeframes 4h (base 4h) · 10 features" in out
    assert "GBPUSD: " in out and "EURUSD" not in out.split("features\n", 1)[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "error: strategy 'nope' not found"),
        (["rsi_macd_zigzag", "--symbols", "AUDUSD"], "error: no data for AUDUSD 1h"),
        (["rsi_macd_zigzag", "--timeframes", "2h"], "error: unknown timeframe(s) 2h"),
        (["rsi_macd_zigzag", "--start", "2031-01-01"], "no usable rows"),
    ],
)
def test_features_bad_input_exits_2(
    argv: list[str],
    message: str,
    sample_data_dir: Path,
    strategies_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "data",
        "features",
        *argv,
        "--data-dir",
        str(sample_data_dir),
        "--strategies-dir",
        str(strategies_dir),
    ]
    assert run(base) == 2
    assert message in capsys.readouterr().err


def test_bare_data_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data"]) == 2
    assert "synth" in capsys.readouterr().out
