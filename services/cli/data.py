"""`trainbus data ...`: sample data, real data imported, what the data dir holds, and a look at
a strategy's features.

    trainbus data synth --symbols EURUSD,GBPUSD --timeframe 1h --bars 5000 --seed 42
    trainbus data import prices.csv --symbol EURUSD --timeframe 1h [--format csv] [--force]
    trainbus data inspect [SYMBOL ...] [--json | --plain]
    trainbus data features rsi_macd_zigzag [--symbols ..] [--timeframes ..] [--start ..] [--end ..]

`data inspect`: per price file (docs/data.md has the format) its symbol, timeframe, first and
last bar, bar count, gaps (how many, the largest), repeated stamps, rows without prices,
non-positive and inconsistent bars, and the loader's own error for a file it would refuse.

Exit codes: 0 done, 2 bad input (unknown strategy, missing or broken data, bad arguments; for
inspect: a file the loader would refuse, or no price file at all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from libs.pipeline.types import TIMEFRAMES
from services.cli.args import EXIT_BAD_INPUT, EXIT_OK, csv_list, positive_int


def register(subparsers: Any) -> None:
    data = subparsers.add_parser(
        "data",
        help="sample data and feature inspection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(handler=lambda _args: _usage(data))

    synth = commands.add_parser(
        "synth",
        help="write deterministic sample OHLCV data (regime-switching random walk)",
    )
    synth.add_argument("--symbols", type=csv_list, default=["EURUSD"], help="comma-separated")
    synth.add_argument("--timeframe", choices=TIMEFRAMES, default="1h")
    synth.add_argument("--bars", type=positive_int, default=5000)
    synth.add_argument("--seed", type=int, default=42)
    synth.add_argument(
        "--data-dir", type=Path, default=None, help="default $TRAINBUS_DATA_DIR or ./data"
    )
    synth.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    synth.set_defaults(handler=_synth)

    imp = commands.add_parser(
        "import",
        help="copy an OHLCV CSV/Parquet export into the data dir as <SYMBOL>_<TF>.<format>",
        description=(
            "Read an OHLCV file (CSV, .csv.gz or Parquet; columns open/high/low/close[/volume] "
            "in any case, the time in a timestamp/datetime/date column or the first column), "
            "check that its bars are --timeframe apart (gaps of whole bars, like weekends, are "
            "fine) and write it into the data dir. Exit 0 written, 2 bad input."
        ),
    )
    imp.add_argument("file", type=Path, help="the CSV, .csv.gz or Parquet file to import")
    imp.add_argument("--symbol", required=True, help="the name to file it under, e.g. EURUSD")
    imp.add_argument(
        "--timeframe", required=True, help=f"the bars' size: one of {', '.join(TIMEFRAMES)}"
    )
    imp.add_argument(
        "--data-dir", type=Path, default=None, help="default $TRAINBUS_DATA_DIR or ./data"
    )
    imp.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    imp.add_argument(
        "--force", action="store_true", help="replace an existing file of this symbol and timeframe"
    )
    imp.set_defaults(handler=_import)

    inspect = commands.add_parser(
        "inspect", help="what the data dir holds: per file its bars, gaps, duplicates and "
        "bad bars; exit 2 when the loader would refuse a file")
    inspect.add_argument("symbols", metavar="SYMBOL", nargs="*",
                         help="only these symbols (default: every price file)")
    inspect.add_argument(
        "--data-dir", type=Path, default=None, help="default $TRAINBUS_DATA_DIR or ./data"
    )
    formats = inspect.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="machine-readable output")
    formats.add_argument("--plain", action="store_true", help="TSV: a header line, one per file")
    inspect.set_defaults(handler=_inspect)

    features = commands.add_parser(
        "features", help="build a strategy's features and labels on the data dir and describe them"
    )
    features.add_argument("strategy", help="a name in the strategies dir, or a .yaml path")
    default = "default: the strategy's"
    features.add_argument("--symbols", type=csv_list, default=None, help=default)
    features.add_argument("--timeframes", type=csv_list, default=None, help=default)
    features.add_argument("--start", default=None, help="ISO date; default the strategy's")
    features.add_argument(
        "--end", default=None, help="ISO date (inclusive); default the strategy's"
    )
    features.add_argument(
        "--data-dir", type=Path, default=None, help="default $TRAINBUS_DATA_DIR or ./data"
    )
    features.add_argument(
        "--strategies-dir",
        type=Path,
        default=None,
        help="default $TRAINBUS_STRATEGIES_DIR or ./strategies",
    )
    features.set_defaults(handler=_features)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_BAD_INPUT


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _synth(args: argparse.Namespace) -> int:
    from libs.pipeline.data import DataError, data_dir, write_synthetic

    directory = args.data_dir if args.data_dir is not None else data_dir()
    try:
        paths = write_synthetic(
            directory, args.symbols, args.timeframe, args.bars, args.seed, fmt=args.format
        )
    except DataError as exc:
        return _fail(str(exc))
    for path in paths:
        print(f"wrote {path} ({args.bars} bars, seed {args.seed})")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from libs.pipeline.data import DataError, data_dir, import_price_file

    directory = args.data_dir if args.data_dir is not None else data_dir()
    try:
        summary = import_price_file(
            args.file, args.symbol, args.timeframe, directory, fmt=args.format, force=args.force
        )
    except DataError as exc:
        return _fail(str(exc))
    replaced = f", replacing {', '.join(map(str, summary.replaced))}" if summary.replaced else ""
    print(
        f"wrote {summary.path} ({summary.rows} bars of {summary.symbol} {summary.timeframe}, "
        f"{summary.first:%Y-%m-%d %H:%M} .. {summary.last:%Y-%m-%d %H:%M} UTC, "
        f"{summary.gaps} gap(s), from {summary.source}{replaced})"
    )
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from libs.pipeline.data import DataError, data_dir, inspect_price_file, price_files
    from services.cli.client import print_json, print_table

    directory = args.data_dir if args.data_dir is not None else data_dir()
    try:
        files = price_files(directory, args.symbols)
    except DataError as exc:
        return _fail(str(exc))
    reports = [inspect_price_file(symbol, tf, path, directory) for symbol, tf, path in files]
    # A shadowed file is never read (the loader takes the Parquet file): it cannot break a job.
    refused = [r for r in reports if r.refused is not None and r.shadowed_by is None]
    missing = [s for s in args.symbols if not any(r.symbol == s for r in reports)]
    if args.json:
        print_json(reports)
    else:
        table = Table(title=f"price files in {directory} ({len(reports)})")
        for column in ("symbol", "tf", "first bar (UTC)", "last bar (UTC)", "bars", "gaps",
                       "largest gap", "duplicates", "no price", "non-positive",
                       "inconsistent", "verdict", "file"):
            table.add_column(column)
        for r in reports:
            verdict = ("refused" if r in refused else
                       f"shadowed by {Path(r.shadowed_by).name}" if r.shadowed_by else "ok")
            duplicates = str(r.duplicates) + (f" (+{r.conflicting_duplicates} conflicting)"
                                              if r.conflicting_duplicates else "")
            table.add_row(r.symbol, r.timeframe, _stamp(r.first), _stamp(r.last), str(r.bars),
                          str(r.gaps), r.largest_gap or "-", duplicates, str(r.missing_prices),
                          str(r.non_positive), str(r.inconsistent), verdict,
                          escape(Path(r.path).name))
        print_table(table, plain=args.plain)
        if not args.plain:
            for r in refused:
                print(f"refused: {r.refused}", flush=True)
    for symbol in missing:
        print(f"error: no price file for {symbol} in {directory} (looked for {symbol}_<TF>"
              ".parquet/.csv)", file=sys.stderr)
    if not reports and not missing:
        print(f"error: no price files in {directory} (<SYMBOL>_<TF>.parquet or .csv; "
              "see docs/data.md)", file=sys.stderr)
    for r in refused:
        if args.json or args.plain:  # the table's notes went to stdout otherwise
            print(f"refused: {r.refused}", file=sys.stderr)
    return EXIT_BAD_INPUT if refused or missing or not reports else EXIT_OK


def _stamp(iso: str | None) -> str:
    """`2020-01-02T10:00:00+00:00` -> `2020-01-02 10:00` (the table says UTC)."""
    return "-" if iso is None else iso[:16].replace("T", " ")


def _features(args: argparse.Namespace) -> int:
    import numpy as np

    from libs.pipeline.data import DataError
    from libs.pipeline.dataset import build_symbol_data, combine_multi_symbol_data
    from libs.pipeline.features import FeatureError, feature_names
    from libs.pipeline.indicators import IndicatorError
    from libs.pipeline.labels import class_names, is_regression
    from libs.pipeline.strategy import (
        StrategyError,
        base_timeframe,
        embargo_of,
        load_strategy,
        strategy_hash,
        symbols_of,
        timeframes_of,
    )

    try:
        strategy = load_strategy(args.strategy, args.strategies_dir)
        symbols = args.symbols or symbols_of(strategy)
        timeframes = args.timeframes or timeframes_of(strategy)
        unknown = [tf for tf in timeframes if tf not in TIMEFRAMES]
        if unknown:
            return _fail(
                f"unknown timeframe(s) {', '.join(unknown)}; valid: {', '.join(TIMEFRAMES)}"
            )
        base = base_timeframe(strategy, timeframes)
        names = feature_names(strategy, timeframes)
        per_symbol = [
            build_symbol_data(
                strategy, symbol, timeframes, data_dir=args.data_dir, start=args.start, end=args.end
            )
            for symbol in symbols
        ]
    except (StrategyError, DataError, FeatureError, IndicatorError) as exc:
        return _fail(str(exc))

    print(
        f"strategy {strategy.name} (sha256 {strategy_hash(strategy)[:12]}) · "
        f"timeframes {', '.join(timeframes)} (base {base}) · {len(names)} features"
    )
    for i, name in enumerate(names, start=1):
        print(f"  {i:3d}  {name}")
    regression = is_regression(strategy.training.labels)
    for data in per_symbol:
        index = data.features.index
        rows, width = data.features.shape
        if regression:
            target = f"target mean {np.mean(data.labels):+.5f} std {np.std(data.labels):.5f}"
        else:
            names = class_names(strategy.training.labels)
            counts = np.bincount(data.labels, minlength=len(names)) / max(rows, 1)
            target = "labels " + " ".join(
                f"{name} {share:.1%}" for name, share in zip(names, counts, strict=True)
            )
        print(
            f"{data.symbol}: {rows} rows x {width} features, "
            f"{index[0]:%Y-%m-%d %H:%M} .. {index[-1]:%Y-%m-%d %H:%M} UTC, {target}"
        )
    splits = combine_multi_symbol_data(per_symbol, strategy.training.data_split,
                                       embargo=embargo_of(strategy.training))
    print(
        f"split train/validation/test: {splits.n_train} / {splits.n_val} / {splits.n_test} rows "
        f"(x_train {' x '.join(map(str, splits.x_train.shape))} float32)"
    )
    for symbol, counts in splits.report["per_symbol"].items():
        dropped = " · ".join(
            f"{name} purged {counts[name]['purged']} embargoed {counts[name]['embargoed']}"
            for name in ("train", "validation", "test")
        )
        print(f"{symbol}: {dropped} · no label yet {counts['unconfirmed']}")
    return EXIT_OK
