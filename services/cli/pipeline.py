"""`trainbus pipeline run`: train a strategy in this process, with a progress bar.

    trainbus pipeline run rsi_macd_zigzag [--symbols EURUSD,GBPUSD] [--timeframes 1h,4h]
        [--start 2020-01-01] [--end 2020-06-30] [--seed 7] [--epochs 5]
        [--data-dir data] [--models-dir models] [--strategies-dir strategies] [--device cpu]

On a terminal: a live bar (phase, epoch x/y, batch, loss, val accuracy, ETA). Otherwise (pipes,
CI logs): one plain line per phase and per epoch. Ends with a metrics table and the model path.
Ctrl-C cancels cleanly (nothing is written; a second Ctrl-C aborts at once).

Exit codes: 0 done, 1 failed, 2 bad input (strategy, data, arguments), 130 cancelled.
"""

from __future__ import annotations

import argparse
import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.args import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    csv_list,
    positive_int,
)

if TYPE_CHECKING:  # heavy imports (torch, pandas) happen inside the handler
    from rich.console import Console

    from libs.pipeline.pipeline import TrainingResult
    from libs.pipeline.progress import ProgressUpdate





def register(subparsers: Any) -> None:
    pipeline = subparsers.add_parser(
        "pipeline",
        help="run the training pipeline in this process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = pipeline.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    pipeline.set_defaults(handler=lambda _args: _usage(pipeline))

    run = commands.add_parser("run", help="train, evaluate and save a strategy's model")
    run.add_argument("strategy", help="a name in the strategies dir, or a .yaml path")
    run.add_argument(
        "--symbols", type=csv_list, default=None, help="comma-separated; default: the strategy's"
    )
    run.add_argument(
        "--timeframes", type=csv_list, default=None, help="comma-separated; default: the strategy's"
    )
    run.add_argument("--start", default=None, help="ISO date; default the strategy's")
    run.add_argument("--end", default=None, help="ISO date (inclusive); default the strategy's")
    run.add_argument("--seed", type=int, default=None, help="default: training.seed")
    run.add_argument("--epochs", type=positive_int, default=None, help="default: training.epochs")
    run.add_argument(
        "--data-dir", type=Path, default=None, help="default $TRAINBUS_DATA_DIR or ./data"
    )
    run.add_argument(
        "--models-dir", type=Path, default=None, help="default $TRAINBUS_MODELS_DIR or ./models"
    )
    run.add_argument(
        "--strategies-dir",
        type=Path,
        default=None,
        help="default $TRAINBUS_STRATEGIES_DIR or ./strategies",
    )
    run.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:N or mps (default $TRAINBUS_DEVICE or auto)",
    )
    run.set_defaults(handler=_run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_BAD_INPUT


# --- progress display -----------------------------------------------------------------------


class _PlainProgress:
    """Non-TTY output: a line per phase and per epoch, nothing per batch."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, u: ProgressUpdate) -> None:
        if u.kind == "phase":
            print(f"[{u.phase}] {u.message or ''}", flush=True)
        elif u.kind == "epoch":
            val = (
                f" val_loss {u.val_loss:.4f} val_acc {u.val_accuracy:.3f}"
                if u.val_loss is not None and u.val_accuracy is not None
                else ""
            )
            print(
                f"epoch {u.epoch}/{u.total_epochs} train_loss {u.train_loss:.4f} "
                f"train_acc {u.train_accuracy:.3f}{val} lr {u.learning_rate:.2e} "
                f"{u.epoch_duration:.2f}s eta {_seconds(u.eta_seconds)}",
                flush=True,
            )


class _RichProgress:
    """TTY output: one rich bar over the training run, a status line for the rest.

    The trainer calls back with the batches whose running numbers it refreshed (a few dozen a
    second); rich is updated at most every 0.1 s (and at every phase/epoch).
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<10}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=100.0, phase="start", info="", eta="-")
        self.last = 0.0
        self.val = ""

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, u: ProgressUpdate) -> None:
        now = time.monotonic()
        if u.kind == "batch" and now - self.last < 0.1:
            return
        self.last = now
        if u.kind == "phase":
            self.progress.update(
                self.task, phase=u.phase, info=u.message or "", completed=u.percent
            )
            return
        if u.kind == "epoch" and u.val_accuracy is not None:
            self.val = f" val_acc {u.val_accuracy:.3f}"
        loss = f"loss {u.train_loss:.4f}" if u.train_loss is not None else ""
        info = (
            f"epoch {u.epoch}/{u.total_epochs} batch {u.batch}/{u.total_batches} {loss}{self.val}"
        )
        self.progress.update(
            self.task, phase="training", completed=u.percent, info=info, eta=_seconds(u.eta_seconds)
        )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"


class _Rows:
    """The rows of the end-of-run table, in sections; None values are skipped."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.count = 0

    def __call__(self, name: str, value: Any) -> None:
        if value is None:
            return
        self.table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
        self.count += 1

    def section(self) -> None:
        if self.count:
            self.table.add_section()
        self.count = 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    number = _number(value)
    return "-" if number is None else f"{number * scale:{spec}}{suffix}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(strategy: str) -> str:
    return "buy & hold" if strategy == "buy_and_hold" else strategy.replace("_", " ")


def _label(key: str) -> str:
    return key.replace("_", " ").replace("f1", "F1").replace("sharpe", "Sharpe")


def _headline_rows(row: _Rows, test: dict[str, Any]) -> None:
    """Macro F1 and accuracy (regression: RMSE, direction), then the baselines and lifts."""
    for key in ("macro_f1", "accuracy", "rmse", "mae", "direction_accuracy"):
        row(f"test {_label(key)}", test.get(key))
    lift = _mapping(test.get("lift"))
    regression = "rmse" in test
    for name, scores in _mapping(test.get("baselines")).items():
        scores, gains = _mapping(scores), _mapping(lift.get(name))
        label = f"{_name(name)} ({scores['class']})" if scores.get("class") else _name(name)
        if regression:
            text = (f"RMSE {_fmt(scores.get('rmse'), '.4g')} (lift "
                    f"{_fmt(gains.get('rmse'), '+.4g')}) · direction "
                    f"{_fmt(scores.get('direction_accuracy'), '.4f')} (lift "
                    f"{_fmt(gains.get('direction_accuracy'), '+.4f')})")
        else:
            text = (f"macro F1 {_fmt(scores.get('macro_f1'), '.4f')} (lift "
                    f"{_fmt(gains.get('macro_f1'), '+.4f')}) · accuracy "
                    f"{_fmt(scores.get('accuracy'), '.4f')} (lift "
                    f"{_fmt(gains.get('accuracy'), '+.4f')})")
        row(f"baseline {label}", text)


def _stats_text(stats: dict[str, Any]) -> str:
    return (f"net {_fmt(stats.get('net_return'), '+.2f', 100, '%')} · Sharpe "
            f"{_fmt(stats.get('sharpe'), '.2f')} · max DD "
            f"{_fmt(stats.get('max_drawdown'), '.2f', 100, '%')} · "
            f"{_fmt(stats.get('trades'), '.0f')} trades")


def _backtest_rows(row: _Rows, backtest: dict[str, Any]) -> None:
    """Each strategy's net return, Sharpe, drawdown and trades; the lift vs buy-and-hold."""
    if not backtest:
        return
    strategies = _mapping(backtest.get("strategies"))
    if not strategies:
        row("backtest", str(backtest.get("note") or "no strategy traded"))
        return
    first = [n for n in ("model", "buy_and_hold") if n in strategies]
    for name in first + [n for n in strategies if n not in first]:
        row(f"backtest {_name(name)}", _stats_text(_mapping(strategies[name])))
    for name, gain in _mapping(backtest.get("lift")).items():
        gain = _mapping(gain)
        ci = gain.get("ci95")
        interval = (f" (95% CI {_fmt(ci[0], '+.2f', 1e4)} .. {_fmt(ci[1], '+.2f', 1e4)} bp)"
                    if isinstance(ci, list) and len(ci) == 2 else "")
        row(f"lift vs {_name(name)}",
            f"{_fmt(gain.get('annualised'), '+.2f', 100, '%')}/yr · "
            f"{_fmt(gain.get('mean_bar_return'), '+.2f', 1e4)} bp/bar{interval}")


# Of the fold summary (the mean and std of each headline number over the folds), the table
# shows these; report.html has them all.
_FOLD_KEYS = ("macro_f1", "accuracy", "rmse", "direction_accuracy", "backtest_net_return",
              "backtest_sharpe", "backtest_lift_vs_buy_and_hold")


def _walk_forward_rows(row: _Rows, wf: dict[str, Any]) -> None:
    if not wf:
        return
    folds = wf.get("folds")
    count = len(folds) if isinstance(folds, list) else 0
    row("walk-forward", f"{wf.get('mode') or '?'}, {count} folds")
    summary = _mapping(wf.get("summary"))
    lifts = [k for k in summary if k.startswith(("lift_macro_f1_vs_", "lift_rmse_vs_"))]
    for key in [k for k in _FOLD_KEYS if k in summary] + lifts:
        stats = _mapping(summary[key])
        percent = "return" in key or key.startswith("backtest_lift")
        spec, scale, suffix = (".2f", 100.0, "%") if percent else (".4f", 1.0, "")
        row(f"  {_label(key).replace('buy and hold', 'buy & hold')} (mean ± std)",
            f"{_fmt(stats.get('mean'), spec, scale, suffix)} ± "
            f"{_fmt(stats.get('std'), spec, scale, suffix)}")


def _split_rows(row: _Rows, splits: dict[str, Any]) -> None:
    """Rows purged and embargoed per split, summed over the symbols."""
    if not splits:
        return
    per_symbol = _mapping(splits.get("per_symbol"))
    for split in ("train", "validation", "test"):
        counts = [_mapping(_mapping(entry).get(split)) for entry in per_symbol.values()]
        if not counts:
            continue
        kept, purged, embargoed = (sum(int(_number(c.get(k)) or 0) for c in counts)
                                   for k in ("kept", "purged", "embargoed"))
        row(f"{split} kept/purged/embargoed", f"{kept}/{purged}/{embargoed}")
    unconfirmed = sum(int(_number(_mapping(e).get("unconfirmed")) or 0)
                      for e in per_symbol.values())
    if per_symbol:
        row("unconfirmed (unlabelled) rows", unconfirmed)
    row("embargo (bars)", splits.get("embargo"))
    bounds = _mapping(splits.get("boundaries"))
    row("test starts", bounds.get("test_start"))


def _training_rows(row: _Rows, result: TrainingResult) -> None:
    last = result.history[-1] if result.history else None
    test = result.test_metrics
    row("epochs trained", result.epochs_trained)
    row("best epoch", result.best_epoch)
    row("stopped early", "yes" if result.stopped_early else "no")
    if last is not None:
        row("train loss", last.train_loss)
        row("train accuracy", last.train_accuracy)
        row("val loss", last.val_loss)
        row("val accuracy", last.val_accuracy)
    row("test samples", test.get("samples"))
    for key in ("loss", "weighted_f1", "weighted_precision", "weighted_recall",
                "macro_precision", "macro_recall"):
        row(f"test {_label(key)}", test.get(key))
    if test.get("note"):
        row("test", test["note"])
    row(
        "rows train/val/test",
        f"{result.data.train_rows}/{result.data.val_rows}/{result.data.test_rows}",
    )
    row("features", result.data.feature_count)
    row("device", result.device.device)
    row("seed", result.seed)
    row("weights sha256", result.weights_sha256[:16])
    row("duration (s)", round(result.duration_seconds, 2))


def _report(console: Console, result: TrainingResult) -> None:
    """The end of a run: what the model is worth first (macro F1, baselines, backtest,
    walk-forward, purging), then the training run; the warnings after the table."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{result.strategy} -> {result.model.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    row = _Rows(table)
    test = result.test_metrics or {}
    _headline_rows(row, test)
    row.section()
    _backtest_rows(row, _mapping(test.get("backtest")))
    row.section()
    _walk_forward_rows(row, _mapping(getattr(result, "walk_forward", None)))
    row.section()
    _split_rows(row, _mapping(getattr(result, "splits", None)))
    row.section()
    _training_rows(row, result)
    console.print(table)
    for warning in getattr(result, "warnings", None) or []:
        console.print(f"[yellow]warning:[/yellow] {escape(str(warning))}", highlight=False)
    print(f"model: {result.model.path}", flush=True)


# --- the command ----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from libs.pipeline import strategy as strategy_config
    from libs.pipeline.cancel import CancelToken, TrainingCancelled
    from libs.pipeline.types import is_strategy_name

    err = Console(stderr=True)
    # Validate the strategy before importing torch and pandas: a typo answers in a blink.
    try:
        if is_strategy_name(args.strategy):
            strategy_config.load_strategy_by_name(args.strategy, args.strategies_dir)
            request_strategy: dict[str, str] = {"strategy": args.strategy}
        else:  # a path, for people at a shell
            strategy_config.load_strategy(args.strategy, args.strategies_dir)
            request_strategy = {"strategy_yaml": Path(args.strategy).read_text(encoding="utf-8")}
    except strategy_config.StrategyError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_BAD_INPUT

    from libs.pipeline.device import DeviceManager
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest, is_bad_input
    from libs.pipeline.storage.models import ModelStorage

    console = Console()
    token = CancelToken()

    def on_sigint(_signum: int, _frame: Any) -> None:
        # First Ctrl-C: ask for a clean stop (the trainer checks before every batch).
        # Second: the default handler, i.e. KeyboardInterrupt -> exit 130 from main().
        token.cancel("interrupted")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        err.print("cancelling... (Ctrl-C again to abort)")

    try:
        request = TrainingRequest(
            **request_strategy,
            symbols=args.symbols,
            timeframes=args.timeframes,
            start=args.start,
            end=args.end,
            seed=args.seed,
            epochs=args.epochs,
        )
        env = {"TRAINBUS_DEVICE": args.device} if args.device else None
        pipeline = TrainingPipeline(
            data_dir=args.data_dir,
            strategies_dir=args.strategies_dir,
            storage=ModelStorage(args.models_dir),
            device_manager=DeviceManager(env=env),
        )
        display = _RichProgress(console) if console.is_terminal else _PlainProgress(console)
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            with display:
                result = pipeline.run(request, display, token, every_batch=False)
        finally:
            signal.signal(signal.SIGINT, previous)
    except TrainingCancelled as exc:
        err.print(f"cancelled: {escape(str(exc))}; nothing was saved", highlight=False)
        return EXIT_CANCELLED
    except Exception as exc:
        if is_bad_input(exc):
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            return EXIT_BAD_INPUT
        err.print(f"[red]failed:[/red] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        if args.verbose:
            err.print_exception()
        return EXIT_FAILED
    _report(console, result)
    return EXIT_OK
