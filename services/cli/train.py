"""`trainbus train`: submit a training job over NATS (no HTTP needed), optionally follow it.

    trainbus train rsi_macd_zigzag [--symbols EURUSD,GBPUSD] [--timeframes 1h,4h]
        [--start 2024-01-01] [--end 2024-06-30] [--seed 7] [--epochs 5]
        [--pool auto|any|container|host] [--experiment NAME] [--tag k=v ...] [--note TEXT]
        [--key IDEMPOTENCY_KEY [--retry]] [--follow] [--json]

STRATEGY is a strategy name the trainers know, or a path to a .yaml file (sent inline).
Symbols and timeframes default to the strategy's own when it can be read here.
Pool `auto` (default) routes like the backend: USE_TRAINING_HOST_SERVICE=true|false forces
host|container; otherwise a free trainer by the heartbeats (a host trainer with a free slot,
else a container trainer with one; all busy: `any`, which both kinds pull).

The same --key always names the same job, a failed one too: after fixing the cause, `--key K
--retry` starts the next job of the key's chain (a new job id, `derived_from` the ended job)
when the key's newest job ended failed, cancelled or rejected, and returns that newest job
otherwise (so a retried command sent twice still makes one job). `trainbus rerun JOB` re-runs
any job under a new id.

Without --follow: prints the job id and exits 0 once the command is stored.
With --follow: a live progress bar (phase, epoch x/y, batch, loss, val accuracy, ETA), then the
metrics table and the model path. Ctrl-C asks whether to cancel the job or stop watching (stop
watching when stdin is not a terminal). --json: the submission as JSON; with --follow, JSON
lines: the submission, one line per event, then the final state.

Exit codes: 0 submitted / completed, 1 failed or NATS unreachable, 2 bad input (or the job was
rejected), 130 cancelled or stopped watching.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.cli.args import add_organising, csv_list, positive_int


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="submit a training job over NATS (--follow: live progress)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("strategy", metavar="STRATEGY", help="strategy name, or a .yaml path")
    parser.add_argument("--symbols", type=csv_list, default=None, help="comma-separated")
    parser.add_argument("--timeframes", type=csv_list, default=None, help="comma-separated")
    parser.add_argument("--start", default=None, help="ISO date; default the strategy's")
    parser.add_argument("--end", default=None, help="ISO date; default the strategy's")
    parser.add_argument("--seed", type=int, default=None,
                        help="default: the strategy's training.seed")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="default: the strategy's training.epochs")
    parser.add_argument("--pool", choices=("auto", "any", "container", "host"), default="auto")
    parser.add_argument("--key", dest="idempotency_key", default=None,
                        help="idempotency key: the same key always names the same job")
    parser.add_argument("--retry", action="store_true",
                        help="with --key: when the key's job ended failed/cancelled/rejected, "
                             "start a new one (the next of the key's chain)")
    add_organising(parser)
    parser.add_argument("--follow", "-f", action="store_true", help="follow until it ends")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strategies-dir", type=Path, default=None,
                        help="where to read STRATEGY's defaults (default $TRAINBUS_STRATEGIES_DIR"
                             " or ./strategies)")
    parser.set_defaults(handler=run_train)


def build_request(args: argparse.Namespace) -> Any:
    """The API's request type (the CLI and HTTP share one submit path)."""
    import msgspec

    from libs.events.errors import InvalidRequest
    from libs.events.job_types import TrainingRequest

    values: dict[str, Any] = {
        "symbols": args.symbols, "timeframes": args.timeframes, "start": args.start,
        "end": args.end, "seed": args.seed, "epochs": args.epochs, "pool": args.pool,
        "idempotency_key": args.idempotency_key, "requested_by": "cli",
        "experiment": args.experiment, "tags": dict(args.tags) or None, "note": args.note,
        "retry": args.retry or None,
    }
    strategy: str = args.strategy
    if strategy.endswith((".yaml", ".yml")) or "/" in strategy:
        path = Path(strategy)
        try:
            values["strategy_yaml"] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequest(f"cannot read {path}: {exc.strerror}", field="strategy") from None
    else:
        values["strategy"] = strategy
    try:
        return msgspec.convert({k: v for k, v in values.items() if v is not None},
                               TrainingRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: _train(args))


async def _train(args: argparse.Namespace) -> int:
    from libs.events.jobs import JobService
    from services.cli.client import open_bus
    from services.settings import SharedSettings
    from services.strategy_defaults import strategy_defaults

    if args.retry and args.idempotency_key is None:
        from libs.events.errors import InvalidRequest

        raise InvalidRequest("--retry retries the job of an idempotency key: give --key",
                             field="retry")
    request = build_request(args)
    settings = SharedSettings.from_env()  # routing and strategies as the backend reads them
    strategies_dir = args.strategies_dir or settings.strategies_dir
    async with open_bus() as bus:
        service = JobService(bus, routing=settings.routing,
                             strategy_defaults=strategy_defaults(strategies_dir))
        accepted = await service.submit(request)
        return await after_submit(bus, service, accepted, follow=args.follow,
                                  json_output=args.json)


async def after_submit(bus: Any, service: Any, accepted: Any, *, follow: bool,
                       json_output: bool) -> int:
    """Print a submission (train, rerun) and, with `follow`, follow the job to its end."""
    from libs.events.follow import read_job_state, state_from_command
    from services.cli.client import (
        EXIT_OK,
        follow_to_exit,
        print_json,
        print_json_line,
        stdout_console,
    )

    console = stdout_console()
    if json_output and not follow:
        print_json(accepted)
        return EXIT_OK
    if json_output:  # --follow --json: JSON lines (the submission, each event, the end)
        print_json_line(accepted)
    if not json_output:
        note = ""
        if accepted.duplicate:
            ended = accepted.status in ("failed", "cancelled", "rejected")
            note = (f" (existing job for this key, {accepted.status}: --retry starts a new one)"
                    if ended else " (existing job for this key)")
        console.print(f"job [bold]{accepted.job_id}[/bold] queued on pool {accepted.pool} "
                      f"({accepted.routing}){note}", highlight=False)
    if not follow:
        print(f"follow it: trainbus watch {accepted.job_id}", flush=True)
        return EXIT_OK
    # Follow from the command itself, not from KV: no projector needed, nothing missed.
    state = (await read_job_state(bus, accepted.job_id) if accepted.duplicate
             else await state_from_command(bus, accepted.seq))
    if state is None:
        state = await service.get(accepted.job_id)
    return await follow_to_exit(bus, console, state, json_output=json_output)
