"""`trainbus predict` and `trainbus backtest`: use a saved model on raw bars.

    trainbus predict MODEL [--start ISO] [--end ISO] [--symbols A,B] [--data-dir DIR | --file PATH]
                     [--json | --csv]
    trainbus backtest MODEL [--start ISO] [--end ISO] [--symbols A,B] [--costs FRACTION]
                      [--report PATH] [--json]

MODEL is `strategy/<tf>_v<N>`, `strategy/latest`, `strategy@alias` (an alias needs NATS) or
the path of a model's version directory. The features are rebuilt from the raw bars by the
training's own code (libs/pipeline/predict.py). Exit codes: 0 done, 1 NATS unreachable for an
alias, 2 bad input (unknown model, no bars in the window, too little warm-up history, a model
whose features its code no longer builds, an expired alias).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from services.cli.args import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, csv_list


def register(subparsers: Any) -> None:
    predict = subparsers.add_parser(
        "predict", help="signals of a saved model from raw bars", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(predict)
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, default=None,
                        help="an OHLCV file of the base timeframe (with its own warm-up bars)")
    out = predict.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON lines, one bar a line")
    out.add_argument("--csv", action="store_true", help="CSV with a header")
    predict.set_defaults(handler=_predict)

    backtest = subparsers.add_parser(
        "backtest", help="the costs-aware backtest of a saved model on any window",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(backtest)
    backtest.add_argument("--costs", type=float, default=None,
                          help="costs per unit of turnover, a fraction (default: the "
                               "strategy's backtesting.transaction_costs + slippage)")
    backtest.add_argument("--report", type=Path, default=None,
                          help="write an HTML report with the equity curve here")
    backtest.add_argument("--json", action="store_true", help="the figures as JSON")
    backtest.set_defaults(handler=_backtest)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="strategy/<tf>_v<N>, strategy/latest, strategy@alias "
                                      "or a model directory")
    parser.add_argument("--start", default=None, help="first bar to predict (ISO)")
    parser.add_argument("--end", default=None, help="last bar (ISO; a bare date includes it)")
    parser.add_argument("--symbols", type=csv_list, default=None,
                        help="default: the model's symbols")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="default $TRAINBUS_DATA_DIR or ./data")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="default $TRAINBUS_MODELS_DIR or ./models")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _resolve(args: argparse.Namespace) -> str:
    """`strategy@alias` to `strategy/<version>` through the registry (NATS); else as given."""
    if "@" not in args.model:
        return str(args.model)
    import asyncio

    from libs.events import registry
    from services.cli.client import open_bus

    async def lookup() -> str:
        async with open_bus() as bus:
            strategy, version = await registry.resolve(bus, args.model, args.models_dir)
            return f"{strategy}/{version}"

    return asyncio.run(lookup())


def _predictions(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from libs.pipeline.data import read_price_file
    from libs.pipeline.predict import load_model, predict_symbol, predict_window

    loaded = load_model(_resolve(args), args.models_dir)
    file = getattr(args, "file", None)
    if file is not None:
        symbols = args.symbols or loaded.metadata.get("symbols") or ["?"]
        bars = read_price_file(file)
        return loaded, [predict_symbol(loaded, symbols[0], bars=bars, start=args.start,
                                       end=args.end)]
    return loaded, predict_window(loaded, symbols=args.symbols, data_dir=args.data_dir,
                                  start=args.start, end=args.end)


def _guarded(run: Any, args: argparse.Namespace) -> int:
    import nats.errors

    from libs.events.errors import ServiceError, TrainbusBusError
    from libs.pipeline.data import DataError
    from libs.pipeline.storage.layout import StorageError

    try:
        return int(run(args))
    except ServiceError as exc:  # an unknown or expired alias
        return _fail(exc.detail)
    except (DataError, StorageError, ValueError) as exc:
        return _fail(str(exc))
    except (TrainbusBusError, nats.errors.Error, TimeoutError, OSError) as exc:
        return _fail(f"NATS is not reachable: {exc or type(exc).__name__}", EXIT_FAILED)


def _predict(args: argparse.Namespace) -> int:
    return _guarded(_print_predictions, args)


def _print_predictions(args: argparse.Namespace) -> int:
    loaded, predictions = _predictions(args)
    rows = [row for p in predictions for row in p.rows()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        _table(loaded, rows)
    return EXIT_OK


def _table(loaded: Any, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{loaded.ref.name}: {len(rows)} bars")
    columns = [c for c in rows[0] if c != "symbol"] if rows else []
    table.add_column("symbol")
    for column in columns:
        table.add_column(column, justify="right" if column != "time" else "left")
    for row in rows:
        table.add_row(row["symbol"], *(f"{row[c]:.4f}" if isinstance(row[c], float)
                                       else str(row[c]) for c in columns))
    Console().print(table)


def _backtest(args: argparse.Namespace) -> int:
    return _guarded(_run_backtest, args)


def _run_backtest(args: argparse.Namespace) -> int:
    from libs.pipeline.predict import backtest_window

    loaded, predictions = _predictions(args)
    figures = backtest_window(loaded, predictions, costs=args.costs)
    if args.report is not None:
        from libs.pipeline.report import render_report

        page = render_report(loaded.metadata, {"test": {"backtest": figures}})
        args.report.write_text(page, encoding="utf-8")
    if args.json:
        print(json.dumps(figures))
        return EXIT_OK
    strategies = figures.get("strategies") or {}
    print(f"{loaded.ref.name}: backtest of {figures.get('bars', 0)} bars"
          f" at {figures['settings']['cost_per_turnover']:g} per unit of turnover")
    for name, stats in strategies.items():
        print(f"  {name:<14} net {_pct(stats.get('net_return'))} gross "
              f"{_pct(stats.get('gross_return'))} Sharpe {_num(stats.get('sharpe'))} max DD "
              f"{_pct(stats.get('max_drawdown'))} trades {stats.get('trades')}")
    lift = (figures.get("lift") or {}).get("buy_and_hold")
    if lift:
        lo, hi = lift["ci95"]
        print(f"  lift vs buy-and-hold {lift['mean_bar_return'] * 1e4:+.2f} bp a bar "
              f"(95 % interval {lo * 1e4:+.2f} .. {hi * 1e4:+.2f})")
    if args.report is not None:
        print(f"report: {args.report}")
    return EXIT_OK


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.2f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
