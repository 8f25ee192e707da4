"""Real OHLCV data for the tests, from files that ship inside installed wheels (never downloaded).

- (EURUSD, 1h): `backtesting`, `test/EURUSD.csv`: EUR/USD hourly forex bars, 5000 of them,
  2017-04-19 09:00 .. 2018-02-07 15:00 (weekends skipped). AGPL-3.0.
- (GOOG, 1d): `backtesting`, `test/GOOG.csv`: NASDAQ:GOOG daily stock bars, 2148,
  2004-08-19 .. 2013-03-01 (trading days). AGPL-3.0.
- (SP500, 1d): `arch`, `data/sp500/sp500.csv.gz`: S&P 500 index daily bars, 5031,
  1999-01-04 .. 2018-12-31 (its Adj Close column is ignored). NCSA.
- (NASDAQ, 1d): `arch`, `data/nasdaq/nasdaq.csv.gz`: NASDAQ Composite daily bars, 5031,
  1999-01-04 .. 2018-12-31. NCSA.

`backtesting` (kernc/backtesting.py) is a dev dependency under the AGPL: its data is for tests
and local use only, never shipped or bundled. `arch` (bashtage/arch) is a runtime dependency
(the backtest's bootstrap) under the NCSA license; its sample data are the files its examples
load with `arch.data.sp500.load()` / `arch.data.nasdaq.load()`. Both packages' CSVs have naive
timestamps, which the loader reads as UTC (EURUSD's are the feed's own clock; the daily files
are dates, stamped 00:00). The files are read as they are, with `libs.pipeline.data`'s own
reader: `backtesting`'s have an unnamed first column of datetimes and Open/High/Low/Close/Volume,
`arch`'s have Date (m/d/yyyy), Open, High, Low, Close, Adj Close, Volume.

The packages are located with `importlib.util.find_spec` (their folder, without importing them:
importing `backtesting.test` would parse every CSV, `arch` pulls in scipy).

    from tests.harness.market import REAL_FILES, REAL_DATA, install_real_data, load_real
    summaries = install_real_data(tmp_path, ("EURUSD", "1h"))   # tmp_path/EURUSD_1h.parquet
    prices = load_real("EURUSD", "1h")                          # the normalised frame, no files
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from libs.pipeline.data import FileFormat, ImportSummary, import_price_file, read_price_file

Pair = tuple[str, str]  # (symbol, timeframe)


@dataclass(frozen=True)
class RealData:
    """One real file and what it holds once read (open times, UTC)."""

    symbol: str
    timeframe: str
    package: str
    resource: str  # path inside the package
    license: str
    description: str
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp

    @property
    def path(self) -> Path:
        return package_dir(self.package) / self.resource


def package_dir(package: str) -> Path:
    """The installed folder of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed: the real-data tests need it "
            f"(`pip install -e '.[dev]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _real(symbol: str, timeframe: str, package: str, resource: str, license: str,
          description: str, rows: int, first: str, last: str) -> tuple[Pair, RealData]:
    data = RealData(symbol, timeframe, package, resource, license, description, rows,
                    pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC"))
    return (symbol, timeframe), data


REAL_DATA: dict[Pair, RealData] = dict([
    _real("EURUSD", "1h", "backtesting", "test/EURUSD.csv", "AGPL-3.0",
          "EUR/USD hourly forex bars", 5000, "2017-04-19 09:00", "2018-02-07 15:00"),
    _real("GOOG", "1d", "backtesting", "test/GOOG.csv", "AGPL-3.0",
          "NASDAQ:GOOG daily stock bars", 2148, "2004-08-19", "2013-03-01"),
    _real("SP500", "1d", "arch", "data/sp500/sp500.csv.gz", "NCSA",
          "S&P 500 index daily bars", 5031, "1999-01-04", "2018-12-31"),
    _real("NASDAQ", "1d", "arch", "data/nasdaq/nasdaq.csv.gz", "NCSA",
          "NASDAQ Composite daily bars", 5031, "1999-01-04", "2018-12-31"),
])

# (symbol, timeframe) -> the file inside the installed package.
REAL_FILES: dict[Pair, Path] = {pair: data.path for pair, data in REAL_DATA.items()}


def real_file(symbol: str, timeframe: str) -> Path:
    """The file of a pair in REAL_FILES; FileNotFoundError when its package lacks it."""
    try:
        path = REAL_FILES[(symbol, timeframe)]
    except KeyError:
        known = ", ".join(f"{s} {tf}" for s, tf in REAL_FILES)
        raise KeyError(f"no real data for {symbol} {timeframe}; have {known}") from None
    if not path.is_file():
        package = REAL_DATA[(symbol, timeframe)].package
        raise FileNotFoundError(f"{path} is missing from the installed {package}")
    return path


def install_real_data(
    data_dir: Path, *pairs: Pair, fmt: FileFormat = "parquet", force: bool = False
) -> dict[Pair, ImportSummary]:
    """Import real files into `data_dir` as `<SYMBOL>_<TF>.<fmt>`, with the function behind
    `trainbus data import` (same checks, same atomic write); no pairs means all of REAL_FILES."""
    chosen = pairs or tuple(REAL_FILES)
    return {
        (symbol, tf): import_price_file(
            real_file(symbol, tf), symbol, tf, data_dir, fmt=fmt, force=force
        )
        for symbol, tf in chosen
    }


@cache
def _load(symbol: str, timeframe: str) -> pd.DataFrame:
    return read_price_file(real_file(symbol, timeframe))


def load_real(symbol: str, timeframe: str) -> pd.DataFrame:
    """The pair's bars as the loader returns them (UTC `timestamp` index, float64 OHLCV); read
    once per process, a fresh copy each call (callers may change it)."""
    return _load(symbol, timeframe).copy()
