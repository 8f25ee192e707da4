"""Price data: the sample generator, real files written by hand, validation, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.data import (
    DataError,
    data_dir,
    data_fingerprint,
    load_price_data,
    read_price_file,
    resample,
    synthesize,
    window,
    write_price_file,
    write_synthetic,
)

HEADER = "timestamp,open,high,low,close,volume\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(count: int, start: str = "2024-01-01T00:00:00Z", step: str = "1h") -> str:
    stamps = pd.date_range(start, periods=count, freq=step)
    return "".join(
        f"{t.isoformat()},{100 + i},{101 + i},{99 + i},{100.5 + i},{10 * (i + 1)}\n"
        for i, t in enumerate(stamps)
    )


# --- the sample generator ---------------------------------------------------------------------


def test_synthesize_is_deterministic_and_well_formed() -> None:
    a = synthesize("EURUSD", "1h", 2000, seed=3)
    pd.testing.assert_frame_equal(a, synthesize("EURUSD", "1h", 2000, seed=3))
    assert not a.equals(synthesize("EURUSD", "1h", 2000, seed=4))
    assert not a["close"].equals(synthesize("GBPUSD", "1h", 2000, seed=3)["close"])
    assert list(a.columns) == ["open", "high", "low", "close", "volume"]
    assert (a.dtypes == np.float64).all()
    assert isinstance(a.index, pd.DatetimeIndex) and str(a.index.tz) == "UTC"
    assert a.index.name == "timestamp" and a.index.is_monotonic_increasing and a.index.is_unique
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all()
    assert (a["low"] <= a[["open", "close"]].min(axis=1)).all()
    assert (a["volume"] > 0).all() and (a["close"] > 0).all()


def test_synthesize_skips_weekends_below_the_weekly_timeframe() -> None:
    hourly = synthesize("EURUSD", "1h", 500, seed=1)
    assert set(hourly.index.day_of_week) == {0, 1, 2, 3, 4}
    gaps = np.diff(hourly.index.asi8)
    assert gaps.max() > 24 * 3600 * 10**9  # a weekend gap exists
    weekly = synthesize("EURUSD", "1w", 10, seed=1)
    assert set(weekly.index.day_of_week) == {0}  # weeks are stamped at Monday's open
    assert len(synthesize("EURUSD", "1d", 30, seed=1)) == 30


def test_synthesize_looks_like_a_market() -> None:
    frame = synthesize("EURUSD", "1h", 20_000, seed=5)
    returns = np.diff(np.log(frame["close"].to_numpy()))
    assert 0.0005 < returns.std() < 0.005  # FX-like hourly volatility
    # regimes: rolling volatility varies (a plain random walk would be nearly flat)
    rolling = pd.Series(returns).rolling(200).std().dropna()
    assert rolling.max() / rolling.min() > 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bars": 0}, "bars must be"),
        ({"seed": -1}, "seed must be"),
        ({"symbol": "../x"}, "invalid symbol"),
        ({"timeframe": "2h"}, "invalid timeframe"),
        ({"timeframe": "1d", "bars": 1_000_000}, "run past the year 2262"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"symbol": "EURUSD", "timeframe": "1h", "bars": 10, "seed": 1} | kwargs
    with pytest.raises(DataError, match=message):
        synthesize(**args)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_written_sample_data_loads_back_exactly(tmp_path: Path, fmt: str) -> None:
    paths = write_synthetic(tmp_path, ["EURUSD", "GBPUSD"], "1h", 300, seed=2, fmt=fmt)  # type: ignore[arg-type]
    assert [p.name for p in paths] == [f"EURUSD_1h.{fmt}", f"GBPUSD_1h.{fmt}"]
    loaded = load_price_data("GBPUSD", "1h", data_dir=tmp_path)
    pd.testing.assert_frame_equal(loaded, synthesize("GBPUSD", "1h", 300, seed=2))


def test_writing_one_format_removes_the_other(tmp_path: Path) -> None:
    write_synthetic(tmp_path, ["EURUSD"], "1h", 50, seed=1, fmt="parquet")
    write_synthetic(tmp_path, ["EURUSD"], "1h", 60, seed=1, fmt="csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EURUSD_1h.csv"]
    assert len(load_price_data("EURUSD", "1h", data_dir=tmp_path)) == 60


# --- real files in the usual layouts ------------------------------------------------------------


def test_hand_written_csv(tmp_path: Path) -> None:
    write(tmp_path, "ABC_1h.csv", HEADER + rows(3))
    frame = load_price_data("ABC", "1h", data_dir=tmp_path)
    assert frame.index[0] == pd.Timestamp("2024-01-01T00:00:00Z")
    assert frame["close"].tolist() == [100.5, 101.5, 102.5]
    assert frame["volume"].tolist() == [10.0, 20.0, 30.0]
    assert frame.index.dtype == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    "text",
    [
        # upper-case names, a Date column, extra columns, no volume
        "Date,Open,High,Low,Close,Adj Close\n2024-01-01 00:00,1,2,0.5,1.5,9\n"
        "2024-01-01 01:00,1,2,0.5,1.5,9\n",
        # a written pandas index (first column without a name)
        ",open,high,low,close\n2024-01-01 00:00:00,1,2,0.5,1.5\n2024-01-01 01:00:00,1,2,0.5,1.5\n",
        # separate date and time columns (MetaTrader style)
        "date,time,open,high,low,close,volume\n2024.01.01,00:00,1,2,0.5,1.5,0\n"
        "2024.01.01,01:00,1,2,0.5,1.5,0\n",
        # epoch seconds and epoch milliseconds
        "time,open,high,low,close\n1704067200,1,2,0.5,1.5\n1704070800,1,2,0.5,1.5\n",
        "timestamp,open,high,low,close\n1704067200000,1,2,0.5,1.5\n1704070800000,1,2,0.5,1.5\n",
        # an offset: converted to UTC
        "timestamp,open,high,low,close\n2024-01-01T01:00:00+01:00,1,2,0.5,1.5\n"
        "2024-01-01T02:00:00+01:00,1,2,0.5,1.5\n",
    ],
)
def test_usual_layouts_load(tmp_path: Path, text: str) -> None:
    frame = read_price_file(write(tmp_path, "X_1h.csv", text))
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.index.tolist() == [
        pd.Timestamp("2024-01-01T00:00:00Z"),
        pd.Timestamp("2024-01-01T01:00:00Z"),
    ]
    assert frame["close"].tolist() == [1.5, 1.5]


def test_unsorted_duplicates_and_isolated_gaps(tmp_path: Path) -> None:
    text = HEADER + (
        "2024-01-01T02:00:00Z,3,4,2,3.5,1\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,1\n"
        "2024-01-01T01:00:00Z,2,3,1,2.5,1\n"
        "2024-01-01T01:00:00Z,2,3,1,2.5,1\n"  # the same bar twice: kept once
        "2024-01-01T03:00:00Z,,,,,\n"  # one missing bar: dropped
        "2024-01-01T04:00:00Z,4,5,3,4.5,\n"  # missing volume: 0
    )
    frame = read_price_file(write(tmp_path, "X_1h.csv", text))
    assert frame["close"].tolist() == [1.5, 2.5, 3.5, 4.5]
    assert frame["volume"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_parquet_with_a_datetime_index(tmp_path: Path) -> None:
    frame = synthesize("EURUSD", "1h", 20, seed=1).tz_convert("America/New_York")
    frame.to_parquet(tmp_path / "NY_1h.parquet")
    loaded = load_price_data("NY", "1h", data_dir=tmp_path)
    assert str(loaded.index.tz) == "UTC"
    assert loaded.index[0] == pd.Timestamp("2020-01-01T00:00:00Z")


# --- broken files are errors naming the file, the row and the problem --------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,open,high,close\n2024-01-01,1,2,1\n", "missing column(s) low"),
        (
            HEADER + rows(2) + "2024-01-01T02:00:00Z,1,0.5,2,1,1\n",
            "row 3 (line 4): high is below low (1 such row(s))",
        ),
        (
            HEADER + rows(2) + "2024-01-01T02:00:00Z,1,abc,0.5,1,1\n",
            "row 3 (line 4): high is not a number",
        ),
        (
            HEADER + "yesterday,1,2,0.5,1,1\n" + rows(2),
            "row 1 (line 2): unreadable timestamp",
        ),
        (
            HEADER + rows(2) + "2024-01-01T02:00:00Z,1,inf,0.5,1,1\n",
            "row 3 (line 4): high is infinite",
        ),
        (
            HEADER + rows(2) + "2024-01-01T02:00:00Z,1,2,0.5,1,-5\n",
            "row 3 (line 4): negative volume",
        ),
        (HEADER, "no rows"),
        (
            HEADER
            + rows(2)
            + "".join(f"2024-01-02T0{i}:00:00Z,,,,,\n" for i in range(4))
            + rows(400, "2024-01-03"),
            "row 3 (line 4): 4 consecutive rows without prices (at most 3 are tolerated)",
        ),
        (
            HEADER
            + "".join(
                f"2024-01-{d:02d}T00:00:00Z,1,2,0.5,1,1\n2024-01-{d:02d}T01:00:00Z,,,,,\n"
                for d in range(1, 20)
            ),
            "19 of 38 rows lack prices",
        ),
        ("open,high,low,close\n1,2,0.5,1\n", "no timestamp column"),
        (
            "timestamp,open,high,low,close,Close\n2024-01-01,1,2,0.5,1,1\n",
            "two columns named 'close'",
        ),
    ],
)
def test_broken_csv_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "BAD_1h.csv", text)
    with pytest.raises(DataError) as info:
        load_price_data("BAD", "1h", data_dir=tmp_path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_broken_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "BAD_1h.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"BAD_1h\.parquet: cannot read"):
        load_price_data("BAD", "1h", data_dir=tmp_path)
    frame = synthesize("EURUSD", "1h", 5, seed=1)
    frame.iloc[2, frame.columns.get_loc("low")] = 99.0
    write_price_file(frame, tmp_path / "INV_1h.parquet")
    with pytest.raises(DataError, match=r"INV_1h.parquet: row 3: high is below low"):
        load_price_data("INV", "1h", data_dir=tmp_path)


@pytest.mark.parametrize("symbol", ["../etc/passwd", "a/b", "", "..", ".x", "x" * 40, "a b"])
def test_symbols_cannot_escape_the_data_dir(tmp_path: Path, symbol: str) -> None:
    with pytest.raises(DataError, match="invalid symbol"):
        load_price_data(symbol, "1h", data_dir=tmp_path)


def test_missing_data_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="trainbus data synth --symbols EURUSD --timeframe 4h"):
        load_price_data("EURUSD", "4h", data_dir=tmp_path)
    with pytest.raises(DataError, match="invalid timeframe '2h'"):
        load_price_data("EURUSD", "2h", data_dir=tmp_path)


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRAINBUS_DATA_DIR", raising=False)
    assert data_dir() == Path("data")
    monkeypatch.setenv("TRAINBUS_DATA_DIR", str(tmp_path))
    write_synthetic(tmp_path, ["EURUSD"], "1h", 10, seed=1)
    assert len(load_price_data("EURUSD", "1h")) == 10


# --- resampling and windows -------------------------------------------------------------------


def test_resample_by_hand() -> None:
    index = pd.DatetimeIndex(
        [
            "2024-01-05T20:00Z",
            "2024-01-05T21:00Z",
            "2024-01-05T22:00Z",
            "2024-01-05T23:00Z",
            "2024-01-08T00:00Z",
            "2024-01-08T01:00Z",
        ],
        name="timestamp",
    )
    frame = pd.DataFrame(
        {
            "open": [1, 2, 3, 4, 5, 6],
            "high": [2, 5, 4, 5, 6, 9],
            "low": [0.5, 1, 2, 3, 4, 5],
            "close": [2, 3, 4, 5, 6, 7],
            "volume": [1, 1, 1, 1, 2, 2],
        },
        index=index,
        dtype=np.float64,
    )
    four = resample(frame, "4h")
    # 20:00-23:59 is one bar (stamped at its open); the weekend bins are empty and dropped.
    assert four.index.tolist() == [
        pd.Timestamp("2024-01-05T20:00Z"),
        pd.Timestamp("2024-01-08T00:00Z"),
    ]
    assert four.iloc[0].tolist() == [1.0, 5.0, 0.5, 5.0, 4.0]
    assert four.iloc[1].tolist() == [5.0, 9.0, 4.0, 7.0, 4.0]
    week = resample(frame, "1w")
    assert week.index.tolist() == [
        pd.Timestamp("2024-01-01T00:00Z"),
        pd.Timestamp("2024-01-08T00:00Z"),
    ]


def test_missing_timeframe_is_resampled_from_the_finest_file(tmp_path: Path) -> None:
    hourly = synthesize("EURUSD", "1h", 300, seed=1)
    write_price_file(hourly, tmp_path / "EURUSD_1h.parquet")
    write_price_file(resample(hourly, "1d").iloc[:3], tmp_path / "EURUSD_1d.csv")  # exact file wins
    four = load_price_data("EURUSD", "4h", data_dir=tmp_path)
    pd.testing.assert_frame_equal(four, resample(hourly, "4h"))
    assert len(load_price_data("EURUSD", "1d", data_dir=tmp_path)) == 3
    assert len(load_price_data("EURUSD", "1w", data_dir=tmp_path)) == 3  # from the 1h file


def test_date_windows(tmp_path: Path) -> None:
    frame = synthesize("EURUSD", "1h", 24 * 10, seed=1)
    day = window(frame, "2020-01-02", "2020-01-02")
    assert day.index[0] == pd.Timestamp("2020-01-02T00:00Z")
    assert day.index[-1] == pd.Timestamp("2020-01-02T23:00Z")  # a date as end: the whole day
    assert len(window(frame, "2020-01-02T05:00", "2020-01-02T07:00")) == 3
    assert len(window(frame, "2020-01-02", "2020-01-02", history=5)) == 29
    assert len(window(frame, "2019-01-01", None, history=5)) == len(frame)
    with pytest.raises(DataError, match="after end"):
        window(frame, "2020-02-01", "2020-01-01")
    with pytest.raises(DataError, match="invalid date"):
        window(frame, "soon")
    write_price_file(frame, tmp_path / "EURUSD_1h.parquet")
    loaded = load_price_data(
        "EURUSD", "1h", data_dir=tmp_path, start="2020-01-03", end="2020-01-03"
    )
    assert len(loaded) == 24


# --- fingerprint ---------------------------------------------------------------------------


def test_data_fingerprint() -> None:
    a, b = synthesize("EURUSD", "1h", 100, seed=1), synthesize("GBPUSD", "1h", 100, seed=1)
    fp = data_fingerprint({"EURUSD_1h": a, "GBPUSD_1h": b})
    assert fp == data_fingerprint({"GBPUSD_1h": b, "EURUSD_1h": a})  # mapping order is irrelevant
    assert len(fp) == 64
    changed = a.copy()
    changed.iloc[50, 3] += 1e-9
    assert data_fingerprint({"EURUSD_1h": changed, "GBPUSD_1h": b}) != fp
    assert data_fingerprint([a, b]) != data_fingerprint([b, a])


# --- bars no market prints, and files the data directory does not hold -------------------------


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("2024-01-01T02:00:00Z,0,2,0.5,1,1", "row 3 (line 4): a price at or below 0"),
        ("2024-01-01T02:00:00Z,1,2,-0.5,1,1", "row 3 (line 4): a price at or below 0"),
        ("2024-01-01T02:00:00Z,1,2,0.5,2.5,1", "row 3 (line 4): close is outside [low, high]"),
        ("2024-01-01T02:00:00Z,0.4,2,0.5,1,1", "row 3 (line 4): open is outside [low, high]"),
        ("2024-01-01T01:00:00Z,101,102,99,100.7,20",
         "row 3 (line 4): timestamp 2024-01-01 01:00:00+00:00 already given by row 2 (line 3) "
         "with other prices"),
    ],
)
def test_bars_no_market_prints_are_refused(tmp_path: Path, bad_row: str, message: str) -> None:
    path = write(tmp_path, "BAD_1h.csv", HEADER + rows(2) + bad_row + "\n" + rows(3, "2024-01-02"))
    with pytest.raises(DataError) as info:
        load_price_data("BAD", "1h", data_dir=tmp_path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_bars_of_another_size_in_a_timeframes_file_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "X_1h.csv", HEADER + rows(40, step="15min"))
    with pytest.raises(DataError, match=r"bars are 15m apart .* not 1h; is it 15m data\?") as info:
        load_price_data("X", "1h", data_dir=tmp_path)
    assert str(info.value).startswith(f"{path}: ")
    # Gaps of whole bars (a weekend) are fine.
    write(tmp_path, "Y_1h.csv", HEADER + rows(30) + rows(30, "2024-01-04"))
    assert len(load_price_data("Y", "1h", data_dir=tmp_path)) == 60


def test_a_link_out_of_the_data_dir_is_refused_and_nothing_of_it_is_echoed(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:hunter2:/root:/bin/bash\nmore\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "EVIL_1h.csv").symlink_to(secret)
    with pytest.raises(DataError, match="a link out of the data directory") as info:
        load_price_data("EVIL", "1h", data_dir=data)
    assert "hunter2" not in str(info.value) and "/bin/bash" not in str(info.value)
    # The same content inside the data directory: refused without echoing its header.
    (data / "INSIDE_1h.csv").write_text(secret.read_text())
    with pytest.raises(DataError, match="missing column") as inside:
        load_price_data("INSIDE", "1h", data_dir=data)
    assert "hunter2" not in str(inside.value)
    # A link that stays inside the data directory is followed.
    write_price_file(synthesize("EURUSD", "1h", 5, seed=1), data / "real_1h.parquet")
    (data / "ALIAS_1h.parquet").symlink_to(data / "real_1h.parquet")
    assert len(load_price_data("ALIAS", "1h", data_dir=data)) == 5
