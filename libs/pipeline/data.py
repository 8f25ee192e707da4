"""OHLCV price data: loading CSV/Parquet, validation, resampling, date windows, sample data.

Layout: `<data_dir>/<SYMBOL>_<TF>.parquet` or `.csv` (`TRAINBUS_DATA_DIR`, default `./data`).
Every loader returns the same shape: a UTC `DatetimeIndex` named `timestamp` (bar OPEN time,
nanosecond unit, sorted, unique) and float64 columns open, high, low, close, volume.

What a file may look like: columns in any case; the time in a `timestamp`/`datetime`/`time`/
`date` column, a `date` + `time` pair, the first unnamed column (a written index) or the Parquet
index; ISO strings (naive = UTC, offsets converted), other common date formats, or epoch numbers
(s/ms/us/ns by magnitude). Volume is optional (FX feeds often lack it): missing means 0.
A broken file is a `DataError` naming the file, the row and the problem.

Importing someone else's export into the layout is `import_price_file` (`trainbus data import`):
read as above, the bar spacing checked against the timeframe, written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import pandas as pd
from pyarrow import ArrowException

from libs.pipeline.types import TIMEFRAME_SECONDS, TIMEFRAMES

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
# Isolated missing bars happen in real exports and are dropped; a longer hole, or more than a
# small share of the file, means a broken export, which we refuse rather than paper over.
MAX_NAN_RUN = 3
MAX_NAN_FRACTION = 0.01
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$")
FileFormat = Literal["csv", "parquet"]

_TIME_COLUMNS = ("timestamp", "datetime", "date_time", "time", "date", "dt", "index", "unnamed: 0")
_RESAMPLE_RULES: dict[str, str] = {
    "1m": "1min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1h",
    "4h": "4h",
    "1d": "1D",
    "1w": "W-MON",  # weeks start on Monday 00:00 UTC, stamped at that open
}
_NS_PER_S = 1_000_000_000


class DataError(ValueError):
    """Raised when price data is missing or broken: names the file, row and problem."""


class WindowError(DataError):
    """The requested date window holds no usable bar: the request (its start/end) is wrong,
    not the file, so a trainer rejects the job instead of failing it."""


def data_dir() -> Path:
    """`TRAINBUS_DATA_DIR`, default `./data`."""
    return _env_data_dir()


def _env_data_dir() -> Path:
    # Separate name: the loaders' `data_dir` parameter shadows the public function.
    return Path(os.environ.get("TRAINBUS_DATA_DIR", "data"))


def validate_symbol(symbol: str) -> str:
    """Symbols become file names: no separators, no dot-dot, bounded length."""
    # fullmatch: `$` alone also matches before a trailing newline ("EURUSD\n").
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise DataError(f"invalid symbol {symbol!r}: must match {SYMBOL_RE.pattern}")
    return symbol


def validate_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAME_SECONDS:
        raise DataError(f"invalid timeframe {timeframe!r}; valid: {', '.join(TIMEFRAMES)}")
    return timeframe


def price_file(symbol: str, timeframe: str, directory: Path) -> Path | None:
    """The file holding this symbol and timeframe (Parquet preferred), or None. A link that
    leads out of `directory` is refused, not followed: a job's error must never show a file
    the data directory does not hold."""
    validate_symbol(symbol)
    validate_timeframe(timeframe)
    for suffix in (".parquet", ".csv"):
        path = directory / f"{symbol}_{timeframe}{suffix}"
        if path.is_file():
            if not path.resolve().is_relative_to(directory.resolve()):
                raise DataError(f"{path}: a link out of the data directory {directory}; "
                                "copy the file in (trainbus data import) instead")
            return path
    return None


# --- reading and validating ------------------------------------------------------------------


def _row_namer(path: Path) -> Callable[[int], str]:
    if path.suffix == ".csv" or path.name.lower().endswith(".csv.gz"):
        return lambda i: f"row {i + 1} (line {i + 2})"
    return lambda i: f"row {i + 1}"


def _raw_frame(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            if not isinstance(frame.index, pd.RangeIndex):
                frame = frame.reset_index()
            return frame
        return pd.read_csv(path)
    except (OSError, ValueError, ArrowException) as exc:  # pandas' parser errors are ValueErrors
        raise DataError(f"{path}: cannot read: {exc}") from None


def _find_columns(frame: pd.DataFrame, path: Path) -> dict[str, str]:
    """Lower-cased logical name -> the file's column name."""
    by_lower: dict[str, str] = {}
    for col in frame.columns:
        key = str(col).strip().lower()
        if key in by_lower:
            raise DataError(f"{path}: two columns named {key!r}")
        by_lower[key] = col
    missing = [c for c in PRICE_COLUMNS if c not in by_lower]
    if missing:
        # The columns found are not named: a header is file content, and errors never echo it.
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} among its {len(by_lower)} "
            f"column(s); expected timestamp, {', '.join(COLUMNS)}"
        )
    return by_lower


def _parse_times(
    frame: pd.DataFrame, cols: dict[str, str], path: Path, row: Callable[[int], str]
) -> pd.DatetimeIndex:
    if "date" in cols and "time" in cols and not {"timestamp", "datetime"} & cols.keys():
        raw = frame[cols["date"]].astype(str) + " " + frame[cols["time"]].astype(str)
    else:
        name = next((c for c in _TIME_COLUMNS if c in cols), None)
        if name is None:
            first = str(frame.columns[0]).strip().lower()
            if first in COLUMNS:
                raise DataError(f"{path}: no timestamp column (timestamp, datetime, time, date)")
            name = first
        raw = frame[cols[name]]
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"{path}: timestamp column holds booleans")
    if pd.api.types.is_numeric_dtype(raw):
        values = pd.to_numeric(raw, errors="coerce")
        biggest = float(np.nanmax(np.abs(values.to_numpy(dtype=np.float64)))) if len(raw) else 0
        # Epoch numbers: pick the unit by magnitude (a 2020 date is ~1.6e9 s, 1.6e18 ns).
        unit = (
            "ns" if biggest > 1e17 else "us" if biggest > 1e14 else "ms" if biggest > 1e11 else "s"
        )
        times = pd.to_datetime(values, unit=unit, utc=True, errors="coerce")
    elif isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        times = pd.to_datetime(raw, utc=True)
    else:
        text = raw.astype(str).str.strip()
        times = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        if times.isna().any():
            # Other layouts (2020.01.02 10:00, 01/02/2020, ...): pandas infers the format.
            with contextlib.suppress(ValueError, TypeError), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "could not infer format": we check
                times = pd.to_datetime(text, utc=True, errors="coerce")
    bad = np.flatnonzero(pd.isna(times).to_numpy())
    if len(bad):
        raise DataError(f"{path}: {row(int(bad[0]))}: unreadable timestamp")
    return pd.DatetimeIndex(times).as_unit("ns")


def _numeric(
    frame: pd.DataFrame, column: str, path: Path, row: Callable[[int], str], logical: str
) -> np.ndarray:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"{path}: column {logical} holds booleans")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    not_numbers = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
    if len(not_numbers):
        i = int(not_numbers[0])
        raise DataError(f"{path}: {row(i)}: {logical} is not a number")
    infinite = np.flatnonzero(np.isinf(values))
    if len(infinite):
        raise DataError(f"{path}: {row(int(infinite[0]))}: {logical} is infinite")
    return values


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(length, start) of the longest run of True."""
    if not mask.any():
        return 0, -1
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    return int(ends[longest] - starts[longest]), int(starts[longest])


def _parse(path: Path) -> tuple[Callable[[int], str], pd.DatetimeIndex,
                                 dict[str, np.ndarray], np.ndarray]:
    """A file's times, prices and volume as read, before any bar is judged (refuses what
    cannot be read at all: no rows, missing columns, unreadable stamps or numbers)."""
    row = _row_namer(path)
    frame = _raw_frame(path)
    if frame.empty:
        raise DataError(f"{path}: no rows")
    cols = _find_columns(frame, path)
    times = _parse_times(frame, cols, path, row)
    values = {c: _numeric(frame, cols[c], path, row, c) for c in PRICE_COLUMNS}
    if "volume" in cols:
        volume = _numeric(frame, cols["volume"], path, row, "volume")
    else:
        volume = np.zeros(len(frame))
    return row, times, values, volume


def _missing(values: Mapping[str, np.ndarray]) -> np.ndarray:
    missing = np.zeros(len(values["close"]), dtype=bool)
    for c in PRICE_COLUMNS:
        missing |= np.isnan(values[c])
    return missing


def read_price_file(path: Path) -> pd.DataFrame:
    """One CSV or Parquet file, validated and normalised (see the module docstring)."""
    row, times, values, volume = _parse(path)
    missing = _missing(values)
    run, start = _longest_run(missing)
    if run > MAX_NAN_RUN:
        raise DataError(
            f"{path}: {row(start)}: {run} consecutive rows without prices "
            f"(at most {MAX_NAN_RUN} are tolerated)"
        )
    if missing.sum() > max(MAX_NAN_RUN, MAX_NAN_FRACTION * len(missing)):
        raise DataError(
            f"{path}: {missing.sum()} of {len(missing)} rows lack prices "
            f"(at most {MAX_NAN_FRACTION:.0%} are tolerated)"
        )
    _check_bars(values, volume, path, row)
    result, rows = _sorted_bars(times, values, volume, ~missing)
    _check_duplicates(result, rows, path, row)
    return result[~result.index.duplicated(keep="first")]


def _sorted_bars(
    times: pd.DatetimeIndex, values: Mapping[str, np.ndarray], volume: np.ndarray,
    keep: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The kept rows as a frame sorted by time (stable) and their row numbers in the file."""
    result = pd.DataFrame(
        {c: values[c][keep] for c in PRICE_COLUMNS}
        | {"volume": np.nan_to_num(volume[keep], nan=0.0)},
        index=pd.DatetimeIndex(times[keep], name="timestamp"),
    )
    rows = np.flatnonzero(keep)
    order = np.argsort(result.index.asi8, kind="stable")
    return result.iloc[order], rows[order]


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _bar_problems(
    values: Mapping[str, np.ndarray], volume: np.ndarray
) -> tuple[tuple[np.ndarray, str], ...]:
    """Per kind of bar no market prints, the rows that are one: a price at or below 0, a high
    below the low, an open or close outside [low, high], a negative volume (rows without
    prices are in none)."""
    o, h, lo, c = (values[k] for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):  # NaN compares False: missing rows pass here
        return (
            (np.fmin.reduce([o, h, lo, c]) <= 0, "a price at or below 0"),
            (h < lo, "high is below low"),
            ((o < lo) | (o > h), "open is outside [low, high]"),
            ((c < lo) | (c > h), "close is outside [low, high]"),
            (volume < 0, "negative volume"),
        )


def _check_bars(
    values: Mapping[str, np.ndarray], volume: np.ndarray, path: Path, row: Callable[[int], str]
) -> None:
    """Refuse the bars of `_bar_problems`, naming the first row of the first kind found."""
    for mask, problem in _bar_problems(values, volume):
        i = _first(mask)
        if i is not None:
            raise DataError(f"{path}: {row(i)}: {problem} ({int(mask.sum())} such row(s))")


def _repeats(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Of a frame sorted by time: the positions whose stamp the row before already gave, and
    for each of them whether its bar differs from that row's (a conflict)."""
    at = np.flatnonzero(frame.index.duplicated(keep="first"))
    if not len(at):
        return at, np.zeros(0, dtype=bool)
    bars = frame.to_numpy()
    return at, ~(bars[at] == bars[at - 1]).all(axis=1)


def _check_duplicates(
    frame: pd.DataFrame, rows: np.ndarray, path: Path, row: Callable[[int], str]
) -> None:
    """Rows sorted by time: the same stamp twice with the same bar is a harmless repeat (kept
    once); with different prices nobody can tell which is right, so the file is refused."""
    at, conflict = _repeats(frame)
    if conflict.any():
        j = int(at[np.argmax(conflict)])
        raise DataError(
            f"{path}: {row(int(rows[j]))}: timestamp {frame.index[j]} already given by "
            f"{row(int(rows[j - 1]))} with other prices ({int(conflict.sum())} such row(s))"
        )


# --- timeframes and windows ------------------------------------------------------------------


def resample(frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Bars of `timeframe` from finer bars, stamped at their open; empty bins (gaps) dropped."""
    validate_timeframe(timeframe)
    bins = frame.resample(_RESAMPLE_RULES[timeframe], label="left", closed="left")
    out = bins.agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    out = out[out["open"].notna()]
    out.index = pd.DatetimeIndex(out.index, name="timestamp").as_unit("ns")
    return out.astype(np.float64)


def _bound(value: str | pd.Timestamp | None, *, is_end: bool) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"invalid date {value!r}; expected ISO like 2024-01-31") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if is_end and isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        # A date as the end means "through that day".
        return stamp + pd.Timedelta(days=1) - pd.Timedelta(1, unit="ns")
    return stamp


def window(
    frame: pd.DataFrame,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    *,
    history: int = 0,
) -> pd.DataFrame:
    """Bars whose open is within [start, end]; an end given as a date includes that whole day.
    `history` keeps that many extra bars before `start` (indicator warm-up)."""
    lo, hi = _bound(start, is_end=False), _bound(end, is_end=True)
    if lo is not None and hi is not None and lo > hi:
        raise WindowError(f"start {start} is after end {end}")
    index = frame.index
    first = 0 if lo is None else max(0, int(index.searchsorted(lo, side="left")) - history)
    last = len(index) if hi is None else int(index.searchsorted(hi, side="right"))
    return frame.iloc[first:last]


def available_timeframes(symbol: str, directory: Path) -> list[str]:
    return [tf for tf in TIMEFRAMES if price_file(symbol, tf, directory) is not None]


def load_price_data(
    symbol: str,
    timeframe: str,
    *,
    data_dir: Path | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Bars of one symbol and timeframe, from its file or resampled from the finest finer file."""
    validate_symbol(symbol)
    validate_timeframe(timeframe)
    directory = data_dir if data_dir is not None else _env_data_dir()
    path = price_file(symbol, timeframe, directory)
    if path is not None:
        frame = read_price_file(path)
        check_spacing(frame, timeframe, path)  # 15m bars in a _1h file are not 1h bars
        return window(frame, start, end)
    target = TIMEFRAME_SECONDS[timeframe]
    finer = [
        tf
        for tf in available_timeframes(symbol, directory)
        if TIMEFRAME_SECONDS[tf] < target and target % TIMEFRAME_SECONDS[tf] == 0
    ]
    if not finer:
        raise DataError(
            f"no data for {symbol} {timeframe} in {directory} (looked for "
            f"{symbol}_{timeframe}.parquet/.csv and finer timeframes); make sample data with "
            f"`trainbus data synth --symbols {symbol} --timeframe {timeframe}`"
        )
    source = price_file(symbol, finer[0], directory)
    assert source is not None
    frame = read_price_file(source)
    check_spacing(frame, finer[0], source)
    return window(resample(frame, timeframe), start, end)


# --- sample data -------------------------------------------------------------------------------

# (drift in units of the bar's volatility, volatility multiplier, MA(1) coefficient)
_REGIMES = np.array(
    [
        [+0.12, 0.8, 0.0],  # trending up
        [-0.12, 0.8, 0.0],  # trending down
        [0.0, 0.6, -0.35],  # ranging: negative autocorrelation pulls price back
        [0.0, 1.8, 0.0],  # volatile
    ]
)
_MEAN_REGIME_BARS = 150
_ANNUAL_VOL = 0.10  # FX-like
_TRADING_SECONDS_PER_YEAR = 252 * 86400


def _timestamps(timeframe: str, bars: int, start: str) -> np.ndarray:
    """int64 ns open times; weekends skipped below the weekly timeframe (gaps are normal)."""
    step = TIMEFRAME_SECONDS[timeframe] * _NS_PER_S
    origin = _bound(start, is_end=False)
    assert origin is not None
    first = origin.value
    if timeframe == "1w":
        if first + bars * step >= pd.Timestamp.max.value:
            raise DataError(f"{bars} bars of {timeframe} from {start} run past the year 2262")
        monday = origin.normalize() - pd.Timedelta(days=origin.day_of_week)
        return monday.value + np.arange(bars, dtype=np.int64) * step
    # Generate enough candidates for 5 of every 7 days, then drop Saturdays and Sundays.
    count = int(bars * 7 / 5) + 7 * 86400 // TIMEFRAME_SECONDS[timeframe] + 1
    if first + count * step >= pd.Timestamp.max.value:
        raise DataError(f"{bars} bars of {timeframe} from {start} run past the year 2262")
    candidates = first + np.arange(count, dtype=np.int64) * step
    weekday = (candidates // (86400 * _NS_PER_S) + 3) % 7  # 1970-01-01 was a Thursday
    return candidates[weekday < 5][:bars]


def synthesize(
    symbol: str, timeframe: str, bars: int, seed: int, start: str = "2020-01-01"
) -> pd.DataFrame:
    """Deterministic, realistic-looking OHLCV: a regime-switching random walk with volume.

    The same (symbol, timeframe, bars, seed, start) always gives the same frame; different
    symbols get different paths and price levels.
    """
    validate_symbol(symbol)
    validate_timeframe(timeframe)
    if bars < 1 or bars > 50_000_000:
        raise DataError(f"bars must be in 1..50000000, got {bars}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    symbol_key = zlib.crc32(symbol.encode())
    rng = np.random.default_rng([seed, symbol_key, TIMEFRAME_SECONDS[timeframe]])
    vol = _ANNUAL_VOL * np.sqrt(TIMEFRAME_SECONDS[timeframe] / _TRADING_SECONDS_PER_YEAR)

    # Regimes: geometric durations, each next regime different from the last.
    spans = rng.geometric(1 / _MEAN_REGIME_BARS, size=bars // 20 + 2)
    while spans.sum() < bars:
        spans = np.concatenate([spans, rng.geometric(1 / _MEAN_REGIME_BARS, size=len(spans))])
    steps = rng.integers(1, len(_REGIMES), size=len(spans))
    kinds = (rng.integers(0, len(_REGIMES)) + np.cumsum(steps)) % len(_REGIMES)
    regime = np.repeat(kinds, spans)[:bars]
    drift, scale, ma = _REGIMES[regime].T

    shocks = rng.standard_normal(bars)
    lagged = np.concatenate(([0.0], shocks[:-1]))
    returns = vol * (drift + scale * (shocks + ma * lagged))
    level = 1.0 + (symbol_key % 1000) / 1000  # 1.0 .. 2.0, like a currency pair
    close = level * np.exp(np.cumsum(returns))

    stamps = _timestamps(timeframe, bars, start)
    gap = np.diff(stamps, prepend=stamps[0]) > TIMEFRAME_SECONDS[timeframe] * _NS_PER_S
    # Opens sit near the previous close; after a weekend the gap is wider.
    open_noise = vol * rng.standard_normal(bars) * np.where(gap, 1.5, 0.1)
    open_ = np.concatenate(([level], close[:-1])) * np.exp(open_noise)
    wick = np.abs(rng.standard_normal((2, bars))) * vol * scale * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    activity = 1.0 + 3.0 * np.abs(returns) / vol
    volume = np.round(1000.0 * scale * activity * rng.lognormal(0.0, 0.3, size=bars))

    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ns", utc=True), name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index.as_unit("ns"),
    )


def write_price_file(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame in the loader's layout; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, engine="pyarrow")
    elif path.suffix == ".csv":
        frame.to_csv(path, index_label="timestamp", date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        raise DataError(f"{path}: unknown format (use .csv or .parquet)")
    return path


def write_synthetic(
    data_dir: Path,
    symbols: Sequence[str],
    timeframe: str,
    bars: int,
    seed: int,
    *,
    fmt: FileFormat = "parquet",
) -> list[Path]:
    """Sample data for each symbol as `<data_dir>/<SYMBOL>_<TF>.<fmt>`; returns the paths."""
    paths = []
    for symbol in symbols:
        frame = synthesize(symbol, timeframe, bars, seed)
        path = write_price_file(frame, data_dir / f"{symbol}_{timeframe}.{fmt}")
        # The loader prefers Parquet: a stale file of the other format would shadow this one.
        other = path.with_suffix(".csv" if fmt == "parquet" else ".parquet")
        other.unlink(missing_ok=True)
        paths.append(path)
    return paths


def ns_stamps(index: pd.Index) -> np.ndarray:
    """The index's timestamps as int64 nanoseconds (a view when the unit is already ns:
    `as_unit` copies every stamp even then)."""
    stamps = pd.DatetimeIndex(index)
    return (stamps if stamps.unit == "ns" else stamps.as_unit("ns")).asi8


def data_fingerprint(frames: Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame]) -> str:
    """sha256 over timestamps and OHLCV of the frames (a mapping is hashed in key order)."""
    digest = hashlib.sha256()
    items = sorted(frames.items()) if isinstance(frames, Mapping) else list(enumerate(frames))
    for key, frame in items:
        digest.update(f"{key}:{len(frame)}|".encode())
        digest.update(ns_stamps(frame.index).tobytes())
        for column in COLUMNS:
            digest.update(np.ascontiguousarray(frame[column].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


# --- importing a file into the layout -------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What `import_price_file` wrote: `rows` bars from `first` to `last` (open times, UTC)."""

    source: Path
    path: Path
    symbol: str
    timeframe: str
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    replaced: tuple[Path, ...] = ()  # files of this symbol and timeframe that --force replaced
    gaps: int = 0  # places where bars are skipped (weekends, holidays, a missing bar)


def _duration(seconds: float) -> str:
    """3600 -> "1h", 5400 -> "1h30m", 259200 -> "3d"; a timeframe's own name when it is one."""
    for name, size in TIMEFRAME_SECONDS.items():
        if seconds == size:
            return name
    if seconds <= 0 or seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


def check_spacing(frame: pd.DataFrame, timeframe: str, source: Path | str) -> int:
    """Refuse bars whose spacing does not fit `timeframe`: the median gap between consecutive
    bars must be the timeframe, and every gap a whole multiple of it (closed markets, weekends
    and holidays skip bars; a gap of 1.5 bars means bars of another size or off their grid).
    Returns how many gaps (skipped bars between two bars) the frame has."""
    validate_timeframe(timeframe)
    if len(frame) < 2:
        return 0
    step = TIMEFRAME_SECONDS[timeframe] * _NS_PER_S
    gaps = np.diff(ns_stamps(frame.index))
    median = float(np.median(gaps))
    if median != step:
        found = _duration(median / _NS_PER_S)
        hint = f"; is it {found} data?" if found in TIMEFRAME_SECONDS else ""
        raise DataError(
            f"{source}: bars are {found} apart (median of {len(gaps)} gaps), "
            f"not {timeframe}{hint}"
        )
    off_grid = np.flatnonzero(gaps % step)
    if len(off_grid):
        i = int(off_grid[0])
        raise DataError(
            f"{source}: bar {frame.index[i + 1]} is {_duration(gaps[i] / _NS_PER_S)} after the "
            f"one before, not a multiple of {timeframe} ({len(off_grid)} such gap(s))"
        )
    return int(np.count_nonzero(gaps > step))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def import_price_file(
    source: Path,
    symbol: str,
    timeframe: str,
    directory: Path,
    *,
    fmt: FileFormat = "parquet",
    force: bool = False,
) -> ImportSummary:
    """Read an OHLCV export (anything `read_price_file` reads, `.csv.gz` included), check that
    its bar spacing fits `timeframe`, and write it as `<directory>/<symbol>_<timeframe>.<fmt>`.

    Refuses (DataError) when a file of this symbol and timeframe exists in either format, unless
    `force` (which replaces it and removes the other format's file, which would otherwise shadow
    or be shadowed by the new one). The write is atomic: a hidden temporary file in `directory`,
    fsynced, then renamed over the target; nothing is written anywhere else.
    """
    validate_symbol(symbol)
    validate_timeframe(timeframe)
    if fmt not in ("csv", "parquet"):
        raise DataError(f"unknown format {fmt!r} (use csv or parquet)")
    source = Path(source)
    target = directory / f"{symbol}_{timeframe}.{fmt}"
    other = target.with_suffix(".csv" if fmt == "parquet" else ".parquet")

    def existing() -> list[Path]:
        return [p for p in (target, other) if p.exists()]

    if not force and existing():
        raise DataError(f"{existing()[0]} already exists (use --force to replace it)")
    frame = read_price_file(source)
    gaps = check_spacing(frame, timeframe, source)

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{directory}: cannot write: {exc}") from None
    # Hidden, and not `<symbol>_<tf>.<fmt>`: the loader never picks a half-written file up. Not
    # mkstemp: its 0600 mode would survive the rename; this one gets the umask's, like synth's.
    tmp = directory / f".{symbol}_{timeframe}.{secrets.token_hex(8)}.tmp.{fmt}"
    try:
        write_price_file(frame, tmp)
        _fsync(tmp)
        replaced = existing()
        if replaced and not force:  # appeared while we were reading
            raise DataError(f"{replaced[0]} already exists (use --force to replace it)")
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"{target}: cannot write: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    if other in replaced:
        if other.resolve() == source.resolve():
            # Converting a file of the layout in place: keep the source the caller named (the
            # new file is the same bars, and the loader prefers Parquet either way).
            replaced.remove(other)
        else:
            other.unlink(missing_ok=True)
    return ImportSummary(
        source=source,
        path=target,
        symbol=symbol,
        timeframe=timeframe,
        rows=len(frame),
        first=pd.Timestamp(frame.index[0]),
        last=pd.Timestamp(frame.index[-1]),
        replaced=tuple(replaced),
        gaps=gaps,
    )


# --- inspecting the data directory ----------------------------------------------------------


class FileInspection(msgspec.Struct, frozen=True, kw_only=True):
    """What one price file holds, and whether the loader would take it (`refused`: the
    loader's own error, verbatim; None when it loads). Times are bar open times, UTC ISO.
    The counts are of the file as read; those the loader stops at are still all counted."""

    path: str
    symbol: str
    timeframe: str
    rows: int = 0  # rows in the file
    bars: int = 0  # distinct bars the loader would keep
    first: str | None = None
    last: str | None = None
    gaps: int = 0  # places where whole bars are skipped (weekends, holidays, missing bars)
    largest_gap: str | None = None  # the longest time between two consecutive bars, e.g. "2d1h"
    duplicates: int = 0  # stamps given again with the same bar (kept once)
    conflicting_duplicates: int = 0  # stamps given again with other prices (refused)
    missing_prices: int = 0  # rows without a price (a few, isolated, are dropped)
    non_positive: int = 0  # rows with a price at or below 0
    inconsistent: int = 0  # rows with high < low, open/close outside [low, high], volume < 0
    shadowed_by: str | None = None  # a file of the same symbol/timeframe the loader prefers
    refused: str | None = None


def _price_file_name(path: Path) -> tuple[str, str] | None:
    """(symbol, timeframe) of a `<SYMBOL>_<TF>.parquet|.csv` name, else None."""
    if path.suffix not in (".parquet", ".csv") or path.name.startswith("."):
        return None
    symbol, _, timeframe = path.stem.rpartition("_")
    if timeframe not in TIMEFRAME_SECONDS or not SYMBOL_RE.fullmatch(symbol):
        return None
    return symbol, timeframe


def price_files(directory: Path, symbols: Sequence[str] = ()) -> list[tuple[str, str, Path]]:
    """The price files of `directory` (of `symbols` only, when given) as (symbol, timeframe,
    path), by symbol then timeframe, Parquet before CSV (the loader's preference)."""
    for symbol in symbols:
        validate_symbol(symbol)
    wanted = set(symbols)
    found = []
    entries = sorted(directory.iterdir()) if directory.is_dir() else []
    for path in entries:
        named = _price_file_name(path)
        if named is not None and path.is_file() and (not wanted or named[0] in wanted):
            found.append((*named, path))
    order = {tf: i for i, tf in enumerate(TIMEFRAMES)}
    return sorted(found, key=lambda f: (f[0], order[f[1]], f[2].suffix != ".parquet"))


def inspect_price_file(symbol: str, timeframe: str, path: Path, directory: Path) -> FileInspection:
    """One file as the loader sees it: its refusal (if any) comes from the loader itself
    (`price_file`, `read_price_file`, `check_spacing`), the counts from the same parse."""
    name = str(path)
    refused: str | None = None
    shadowed_by: str | None = None
    try:
        chosen = price_file(symbol, timeframe, directory)
        if chosen is not None and chosen.name != path.name:
            shadowed_by = str(chosen)
        frame = read_price_file(path)
        check_spacing(frame, timeframe, path)
    except DataError as exc:
        refused = str(exc)
    try:
        _, times, values, volume = _parse(path)
    except DataError:  # not readable at all: only the refusal to tell
        return FileInspection(path=name, symbol=symbol, timeframe=timeframe,
                              shadowed_by=shadowed_by, refused=refused)
    missing = _missing(values)
    problems = _bar_problems(values, volume)
    bad_rows = np.zeros(len(missing), dtype=bool)
    for mask, _ in problems[1:]:
        bad_rows |= mask
    frame, _ = _sorted_bars(times, values, volume, ~missing)
    at, conflict = _repeats(frame)
    index = frame.index[~frame.index.duplicated(keep="first")]
    step = TIMEFRAME_SECONDS[timeframe] * _NS_PER_S
    spacing = np.diff(index.asi8)
    return FileInspection(
        path=name, symbol=symbol, timeframe=timeframe, rows=len(missing), bars=len(index),
        first=index[0].isoformat() if len(index) else None,
        last=index[-1].isoformat() if len(index) else None,
        gaps=int(np.count_nonzero(spacing > step)),
        largest_gap=_duration(float(spacing.max()) / _NS_PER_S) if len(spacing) else None,
        duplicates=int(len(at) - conflict.sum()), conflicting_duplicates=int(conflict.sum()),
        missing_prices=int(missing.sum()), non_positive=int(problems[0][0].sum()),
        inconsistent=int(bad_rows.sum()), shadowed_by=shadowed_by, refused=refused,
    )
