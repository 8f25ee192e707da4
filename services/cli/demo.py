"""`trainbus demo`: the README's main job, in about a minute on a laptop CPU.

    trainbus demo [--epochs N] [--bars N] [--seed N] [--insecure]

1. writes deterministic sample data (EURUSD 1h, `trainbus data synth`) into ./data if missing;
2. brings up the stack in this process: a private embedded nats-server on a free port (store
   ./.trainbus/demo), secured as `trainbus up`'s is (a user per role, nkeys in
   ./.trainbus/demo/credentials; `--insecure`: none), the API with the projector (writes need
   the token in ./.trainbus/demo/credentials/api-token), a container trainer and a host trainer;
3. submits the example strategy `rsi_macd_zigzag` over NATS, shows the live progress bar,
   then the metrics table and where the model is (./models and the NATS object store);
4. shuts everything down.

--epochs overrides the strategy's `training.epochs` (the demo trains a copy of the strategy
kept in ./.trainbus/demo/strategies). Exit codes as `trainbus train --follow`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from services.cli.client import positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from services.stack import Stack

STRATEGY: Final = "rsi_macd_zigzag"
SYMBOL: Final = "EURUSD"
TIMEFRAME: Final = "1h"
DEMO_DIR: Final = Path(".trainbus") / "demo"
# The repository's example strategies, for a demo run outside the checkout (editable install).
_REPO_STRATEGIES: Final = Path(__file__).resolve().parents[2] / "strategies"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="train the example strategy on an embedded stack, with live progress",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="training epochs (default: the strategy's, 20 with early stopping)")
    parser.add_argument("--bars", type=positive_int, default=5000,
                        help="sample bars to write when ./data has none (default 5000)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed (default: the strategy's training.seed)")
    parser.add_argument("--insecure", action="store_true",
                        help="run the embedded NATS without authentication and the API "
                             "without a token")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: _demo(args))


def _source_strategy() -> Path | None:
    configured = os.environ.get("TRAINBUS_STRATEGIES_DIR", "").strip()
    for base in (Path(configured) if configured else Path("strategies"), _REPO_STRATEGIES):
        for suffix in (".yaml", ".yml"):
            candidate = base / f"{STRATEGY}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _prepare_strategy(source: Path, target_dir: Path, epochs: int | None) -> None:
    """A copy of the strategy for the demo's trainers; --epochs patches training.epochs."""
    import yaml

    text = source.read_text(encoding="utf-8")
    if epochs is not None:
        data = yaml.safe_load(text)
        data.setdefault("training", {})["epochs"] = epochs
        text = f"# copy of {source} with training.epochs = {epochs}\n" + yaml.safe_dump(
            data, sort_keys=False
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / f"{STRATEGY}.yaml").write_text(text, encoding="utf-8")


def _ensure_data(data_dir: Path, bars: int, say: Any) -> None:
    from libs.pipeline.data import price_file, write_synthetic

    if price_file(SYMBOL, TIMEFRAME, data_dir) is not None:
        say(f"using the sample data in {data_dir}/")
        return
    paths = write_synthetic(data_dir, [SYMBOL], TIMEFRAME, bars, seed=42)
    say(f"wrote sample data: {', '.join(str(p) for p in paths)} ({bars} bars)")


async def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from libs.events.embedded import free_port
    from services.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, error
    from services.stack import Stack, StackError, StackOptions

    console = Console()

    def say(text: str) -> None:
        console.print(f"[dim]demo:[/dim] {text}", highlight=False)

    source = _source_strategy()
    if source is None:
        error(f"strategy {STRATEGY} not found in $TRAINBUS_STRATEGIES_DIR, ./strategies or "
              f"{_REPO_STRATEGIES}")
        return EXIT_BAD_INPUT
    data_dir = Path(os.environ.get("TRAINBUS_DATA_DIR", "").strip() or "data")
    models_dir = Path(os.environ.get("TRAINBUS_MODELS_DIR", "").strip() or "models")
    strategies_dir = DEMO_DIR / "strategies"
    # pandas/TA-Lib load in a thread: the habit of never blocking the loop is cheap.
    await asyncio.to_thread(_ensure_data, data_dir, args.bars, say)
    _prepare_strategy(source, strategies_dir, args.epochs)

    stack = Stack(StackOptions(
        store_dir=DEMO_DIR,
        private_nats=True,
        api_port=free_port(),
        data_dir=data_dir,
        models_dir=models_dir,
        strategies_dir=strategies_dir,
        shutdown_timeout=5.0,
        drain_timeout=10.0,
        secure=not args.insecure,
    ))
    if args.insecure:
        say("[bold red]WARNING: --insecure: NATS has no authentication and the API takes "
            "writes without a token[/bold red]")
    say("starting NATS, the API and two trainers in this process ...")
    # From here on Ctrl-C stops cleanly, while starting and while shutting down (then it skips
    # the drain); while the job is followed, follow's own SIGINT handler takes over.
    with stack.stop_on_signals(say):
        try:
            return await _train_on(stack, args, console, say, strategies_dir)
        except StackError as exc:
            error(str(exc))
            return EXIT_FAILED


async def _train_on(stack: Stack, args: argparse.Namespace, console: Console,
                    say: Callable[[str], None], strategies_dir: Path) -> int:
    """Start the stack, train the example strategy with live progress, shut down."""
    from libs.events.follow import state_from_command
    from libs.events.job_types import TrainingRequest
    from libs.events.jobs import JobService
    from services.cli.client import (
        EXIT_CANCELLED,
        OUTCOME_EXIT,
        JobDisplay,
        display_mode,
        follow,
        report,
    )
    from services.strategy_defaults import strategy_defaults

    async with stack:
        await stack.trainers_ready()
        secured = (f"secured, nkeys in {stack.credentials.folder}" if stack.credentials
                   else "NO AUTHENTICATION")
        say(f"NATS {stack.nats_url} (store {DEMO_DIR}/nats, {secured}), API {stack.api_url} "
            f"(OpenAPI {stack.api_url}/schema), trainers: "
            + ", ".join(f"{k} on {r.info.device if r.info else '?'}"
                        for k, r in sorted(stack.trainers.items())))
        assert stack.bus is not None
        service = JobService(stack.bus, strategy_defaults=strategy_defaults(strategies_dir))
        accepted = await service.submit(
            TrainingRequest(strategy=STRATEGY, seed=args.seed, requested_by="demo")
        )
        say(f"job {accepted.job_id} -> pool {accepted.pool} ({accepted.routing})")
        state = await state_from_command(stack.bus, accepted.seq)
        assert state is not None
        # While following, Ctrl-C asks: cancel the job or stop watching (follow's handler).
        with JobDisplay(console, mode=display_mode(console, json_output=False)) as display:
            final, terminal = await follow(stack.bus, state, display,
                                           interactive=sys.stdin.isatty())
        if terminal:
            report(console, final)
        say("shutting down")
    return OUTCOME_EXIT.get(final.status, EXIT_CANCELLED) if terminal else EXIT_CANCELLED
