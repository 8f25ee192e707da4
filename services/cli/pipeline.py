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

    The trainer calls back every batch; rich is updated at most every 0.1 s (and at every
    phase/epoch), so the display costs nothing measurable.
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


def _report(console: Console, result: TrainingResult) -> None:
    from rich.table import Table

    last = result.history[-1] if result.history else None
    test = result.test_metrics
    table = Table(title=f"{result.strategy} -> {result.model.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def row(name: str, value: Any) -> None:
        if value is None:
            return
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))

    row("epochs trained", result.epochs_trained)
    row("best epoch", result.best_epoch)
    row("stopped early", "yes" if result.stopped_early else "no")
    if last is not None:
        row("train loss", last.train_loss)
        row("train accuracy", last.train_accuracy)
        row("val loss", last.val_loss)
        row("val accuracy", last.val_accuracy)
    row("test samples", test.get("samples"))
    for key in (
        "loss",
        "accuracy",
        "precision",
        "recall",
        "f1_score",
        "mae",
        "rmse",
        "direction_accuracy",
    ):
        row(f"test {key.replace('_', ' ')}", test.get(key))
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
    console.print(table)
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
                result = pipeline.run(request, display, token)
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
