"""`trainbus data import`: real exports into the data dir, checked, atomic, and refusals.

In-process through `services.cli.main.main` (the whole argparse tree, as `trainbus` runs it),
plus one run of the installed console script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.data import (
    DataError,
    check_spacing,
    import_price_file,
    load_price_data,
    synthesize,
    write_price_file,
)
from libs.pipeline.types import TIMEFRAME_SECONDS
from services.cli.main import main
from tests.harness.market import REAL_DATA, REAL_FILES, install_real_data, load_real

Captured = pytest.CaptureFixture[str]


def run(*argv: str | Path) -> int:
    return main(["data", "import", *map(str, argv)])


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (hidden ones too): relative path -> (size, mtime_ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory, so a stray relative write would land in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINBUS_DATA_DIR", raising=False)
    return tmp_path


@pytest.mark.parametrize("pair", list(REAL_DATA), ids=lambda p: f"{p[0]}_{p[1]}")
def test_imports_each_real_file_as_is(
    pair: tuple[str, str], workdir: Path, capsys: Captured
) -> None:
    symbol, tf = pair
    expected = REAL_DATA[pair]
    data = workdir / "nested" / "data"  # created by the import
    assert run(REAL_FILES[pair], "--symbol", symbol, "--timeframe", tf, "--data-dir", data) == 0

    target = data / f"{symbol}_{tf}.parquet"
    out = capsys.readouterr().out
    first, last = f"{expected.first:%Y-%m-%d %H:%M}", f"{expected.last:%Y-%m-%d %H:%M}"
    step = pd.Timedelta(TIMEFRAME_SECONDS[tf], unit="s")
    gaps = int((load_real(symbol, tf).index.to_series().diff() > step).sum())
    assert gaps > 0  # weekends at least
    assert out == (
        f"wrote {target} ({expected.rows} bars of {symbol} {tf}, {first} .. {last} UTC, "
        f"{gaps} gap(s), from {REAL_FILES[pair]})\n"
    )
    assert [p.name for p in data.iterdir()] == [target.name]  # no temp file left behind
    assert sorted(tree(workdir)) == [f"nested/data/{target.name}"]  # nothing else written

    loaded = load_price_data(symbol, tf, data_dir=data)
    assert len(loaded) == expected.rows
    assert (loaded.index[0], loaded.index[-1]) == (expected.first, expected.last)
    pd.testing.assert_frame_equal(loaded, load_real(symbol, tf), check_exact=True)
    # The columns are the file's own, untouched (Close, not arch's Adj Close; volume kept).
    raw = pd.read_csv(REAL_FILES[pair])
    for column in ("Open", "High", "Low", "Close", "Volume"):
        np.testing.assert_array_equal(loaded[column.lower()].to_numpy(), raw[column].to_numpy())


def test_csv_format_round_trips_exactly(workdir: Path, capsys: Captured) -> None:
    data = workdir / "data"
    argv = ("--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", data, "--format", "csv")
    assert run(REAL_FILES[("EURUSD", "1h")], *argv) == 0
    assert [p.name for p in data.iterdir()] == ["EURUSD_1h.csv"]
    loaded = load_price_data("EURUSD", "1h", data_dir=data)
    pd.testing.assert_frame_equal(loaded, load_real("EURUSD", "1h"), check_exact=True)
    # The 4h the loader resamples from the imported 1h: real bars, weekends dropped.
    four = load_price_data("EURUSD", "4h", data_dir=data)
    assert 1250 < len(four) < 1300 and four.index.day_of_week.isin([0, 1, 2, 3, 4, 6]).all()


def test_console_script_imports(workdir: Path) -> None:
    script = Path(sys.executable).with_name("trainbus")
    if not script.is_file():
        pytest.skip("the trainbus console script is not installed in this environment")
    env = dict(os.environ, TRAINBUS_DATA_DIR=str(workdir / "env-data"))
    argv = [str(script), "data", "import", str(REAL_FILES[("GOOG", "1d")]), "--symbol", "GOOG",
            "--timeframe", "1d"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {workdir / 'env-data' / 'GOOG_1d.parquet'} (2148 bars")
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert again.stderr.startswith("error: ") and "already exists" in again.stderr


# --- spacing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "timeframe", "message"),
    [
        (("GOOG", "1d"), "1h", "bars are 1d apart (median of 2147 gaps), not 1h; is it 1d data?"),
        (("EURUSD", "1h"), "4h", "bars are 1h apart (median of 4999 gaps), not 4h; is it 1h data?"),
        (("EURUSD", "1h"), "1d", "bars are 1h apart (median of 4999 gaps), not 1d"),
        (("SP500", "1d"), "1w", "bars are 1d apart"),
    ],
)
def test_refuses_spacing_other_than_the_timeframe(
    pair: tuple[str, str], timeframe: str, message: str, workdir: Path, capsys: Captured
) -> None:
    data = workdir / "data"
    source = REAL_FILES[pair]
    assert run(source, "--symbol", "X", "--timeframe", timeframe, "--data-dir", data) == 2
    err = capsys.readouterr().err
    assert err == f"error: {source}: {message}" + err.split(message, 1)[1]
    assert err.count("\n") == 1
    assert not data.exists()


def test_refuses_half_hour_bars_as_hourly(workdir: Path, capsys: Captured) -> None:
    frame = synthesize("EURUSD", "30m", 400, seed=3)
    source = write_price_file(frame, workdir / "exports" / "eurusd_30m.csv")
    assert run(source, "--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", "data") == 2
    assert f"error: {source}: bars are 30m apart (median of 399 gaps), not 1h; is it 30m data?\n" \
        == capsys.readouterr().err
    assert not (workdir / "data").exists()


def test_refuses_a_bar_off_the_grid(workdir: Path, capsys: Captured) -> None:
    frame = synthesize("EURUSD", "1h", 200, seed=3)
    stamps = frame.index.to_numpy().copy()
    stamps[50] += np.timedelta64(30, "m")  # one bar at hh:30 among whole hours
    frame.index = pd.DatetimeIndex(stamps, name="timestamp")
    source = write_price_file(frame, workdir / "odd.csv")
    assert run(source, "--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", "data") == 2
    err = capsys.readouterr().err
    assert f"error: {source}: bar {frame.index[50]} is 1h30m after the one before" in err
    assert "not a multiple of 1h (2 such gap(s))" in err


def test_spacing_accepts_weekend_and_holiday_gaps() -> None:
    daily = load_real("GOOG", "1d")
    gaps = np.diff(daily.index.asi8) // (86400 * 10**9)
    assert {1, 3, 4} <= set(gaps.tolist())  # weekends and long weekends are in the file
    check_spacing(daily, "1d", "GOOG.csv")
    check_spacing(daily.iloc[:1], "1d", "one bar")  # nothing to check


# --- existing files -----------------------------------------------------------------------------


def test_existing_file_is_refused_and_left_unchanged(workdir: Path, capsys: Captured) -> None:
    data = workdir / "data"
    euro = REAL_FILES[("EURUSD", "1h")]
    synth = write_price_file(synthesize("EURUSD", "1h", 300, seed=1), workdir / "synth.csv")
    assert run(synth, "--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", data) == 0
    target = data / "EURUSD_1h.parquet"
    before, content = tree(workdir), target.read_bytes()
    capsys.readouterr()

    for fmt in ("parquet", "csv"):  # the other format's file would be shadowed: also refused
        code = run(euro, "--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", data,
                   "--format", fmt)
        assert code == 2
        assert capsys.readouterr().err == (
            f"error: {target} already exists (use --force to replace it)\n"
        )
    assert tree(workdir) == before and target.read_bytes() == content

    # --force replaces it, and removes the other format's file that would shadow the new one
    argv = ("--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", data)
    assert run(euro, *argv, "--format", "csv", "--force") == 0
    assert f", replacing {target})" in capsys.readouterr().out
    assert [p.name for p in data.iterdir()] == ["EURUSD_1h.csv"]
    assert len(load_price_data("EURUSD", "1h", data_dir=data)) == 5000


def test_converting_a_layout_file_in_place_keeps_the_source(tmp_path: Path) -> None:
    csv = write_price_file(synthesize("GBPUSD", "4h", 100, seed=2), tmp_path / "GBPUSD_4h.csv")
    summary = import_price_file(csv, "GBPUSD", "4h", tmp_path, force=True)
    assert summary.replaced == () and csv.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["GBPUSD_4h.csv", "GBPUSD_4h.parquet"]
    pd.testing.assert_frame_equal(
        load_price_data("GBPUSD", "4h", data_dir=tmp_path), synthesize("GBPUSD", "4h", 100, 2)
    )


def test_a_failed_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import libs.pipeline.data as data_module

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_module.os, "replace", broken_replace)
    with pytest.raises(DataError, match=r"EURUSD_1h.parquet: cannot write: .*No space left"):
        import_price_file(REAL_FILES[("EURUSD", "1h")], "EURUSD", "1h", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


# --- broken input -------------------------------------------------------------------------------


def test_broken_csv_is_refused_naming_the_row(workdir: Path, capsys: Captured) -> None:
    lines = REAL_FILES[("EURUSD", "1h")].read_text().splitlines()[:40]
    fields = lines[7].split(",")  # row 7 of the data (line 8 of the file)
    fields[4] = "1.07x"  # its close
    lines[7] = ",".join(fields)
    source = workdir / "broken.csv"
    source.write_text("\n".join(lines) + "\n")
    before = tree(workdir)

    assert run(source, "--symbol", "EURUSD", "--timeframe", "1h", "--data-dir", "data") == 2
    assert capsys.readouterr().err == (
        f"error: {source}: row 7 (line 8): close is not a number\n"
    )
    assert tree(workdir) == before


def test_gzipped_csv_errors_name_the_line(tmp_path: Path) -> None:
    import gzip

    text = "Date,Open,High,Low,Close\n1/4/1999,1,2,0.5,1.5\n1/5/1999,1,2,0.5,oops\n"
    source = tmp_path / "x.csv.gz"
    source.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"x\.csv\.gz: row 2 \(line 3\): close is not a number"):
        import_price_file(source, "X", "1d", tmp_path / "data")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--symbol", "../evil", "--timeframe", "1h"], "error: invalid symbol '../evil'"),
        (["--symbol", "EURUSD\n", "--timeframe", "1h"], "error: invalid symbol 'EURUSD\\n'"),
        (["--symbol", "EURUSD", "--timeframe", "2h"], "error: invalid timeframe '2h'; valid: "),
    ],
)
def test_bad_symbol_or_timeframe_exits_2(
    argv: list[str], message: str, workdir: Path, capsys: Captured
) -> None:
    assert run(REAL_FILES[("EURUSD", "1h")], *argv, "--data-dir", "data") == 2
    assert capsys.readouterr().err.startswith(message)
    assert tree(workdir) == {}


def test_missing_source_exits_2(workdir: Path, capsys: Captured) -> None:
    assert run(workdir / "nope.csv", "--symbol", "A", "--timeframe", "1h") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {workdir / 'nope.csv'}: cannot read: ") and err.count("\n") == 1
    assert tree(workdir) == {}


def test_missing_required_options_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        run(REAL_FILES[("EURUSD", "1h")], "--symbol", "EURUSD")
    assert exc.value.code == 2


def test_install_real_data_uses_the_import(tmp_path: Path) -> None:
    summaries = install_real_data(tmp_path, ("EURUSD", "1h"), ("SP500", "1d"))
    assert {pair: s.rows for pair, s in summaries.items()} == {
        ("EURUSD", "1h"): 5000,
        ("SP500", "1d"): 5031,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EURUSD_1h.parquet", "SP500_1d.parquet"]
    with pytest.raises(DataError, match="already exists"):
        install_real_data(tmp_path, ("EURUSD", "1h"))
    assert install_real_data(tmp_path, ("EURUSD", "1h"), force=True)[("EURUSD", "1h")].replaced
