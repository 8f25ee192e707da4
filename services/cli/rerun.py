"""`trainbus rerun`: a new job from an old one's command, with changes (libs/events/rerun.py).

    trainbus rerun JOB [--seed N] [--epochs N] [--set key=value ...] [--pool P]
        [--experiment NAME] [--tag k=v ...] [--note TEXT] [--key K] [--follow] [--json]

The new job (a new id) records `derived_from: JOB`, shown by `trainbus show` and the
dashboard. `--set training.learning_rate=0.01` changes a strategy key by its dotted path (the
value is read as YAML: 0.01 a number, true a boolean, [a, b] a list); the new job trains the
old one's strategy so changed, inline, checked here before anything is submitted (an error
names the key; exit 2). A changed strategy file is renamed `<name>-<hash>` (its own model
lineage) unless `--set name=...` names it. The experiment and tags carry over (`--tag` adds or
overrides), the note does not. A failed job re-run after its cause was fixed is the retry.

Exit codes: 0 submitted / completed, 1 failed (unknown job, NATS unreachable), 2 bad input (a
--set the strategy refuses), 130 cancelled or stopped watching.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.cli.args import add_organising, job_id, positive_int


def set_pair(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (a number, a boolean, a list, a string)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        parsed = value  # not YAML: the text itself
    return key.strip(), parsed


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rerun", help="a new job from an old one's command, with changes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", metavar="JOB", type=job_id)
    parser.add_argument("--seed", type=int, default=None, help="default: the old job's")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="default: the old job's")
    parser.add_argument("--set", dest="sets", type=set_pair, action="append", default=[],
                        metavar="KEY=VALUE", help="a strategy key by dotted path (repeatable)")
    parser.add_argument("--pool", choices=("auto", "any", "container", "host"), default="auto")
    add_organising(parser)
    parser.add_argument("--key", dest="idempotency_key", default=None,
                        help="idempotency key: the same key always names the same new job")
    parser.add_argument("--follow", "-f", action="store_true", help="follow until it ends")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strategies-dir", type=Path, default=None,
                        help="where the old job's strategy file is, for --set (default "
                             "$TRAINBUS_STRATEGIES_DIR or ./strategies)")
    parser.set_defaults(handler=run_rerun)


def run_rerun(args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: _rerun(args))


def build_rerun(args: argparse.Namespace) -> Any:
    import msgspec

    from libs.events.errors import InvalidRequest
    from libs.events.job_types import RerunRequest

    values: dict[str, Any] = {
        "seed": args.seed, "epochs": args.epochs, "set": dict(args.sets) or None,
        "pool": args.pool, "experiment": args.experiment, "tags": dict(args.tags) or None,
        "note": args.note, "idempotency_key": args.idempotency_key, "requested_by": "cli",
    }
    try:
        return msgspec.convert({k: v for k, v in values.items() if v is not None}, RerunRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


async def _rerun(args: argparse.Namespace) -> int:
    from libs.events.jobs import JobService
    from libs.events.rerun import rerun_request, source_command, strategy_file_text
    from services.cli.client import open_bus
    from services.cli.train import after_submit
    from services.settings import SharedSettings
    from services.strategy_defaults import strategy_defaults

    request = build_rerun(args)
    settings = SharedSettings.from_env()
    strategies_dir = args.strategies_dir or settings.strategies_dir
    async with open_bus() as bus:
        service = JobService(bus, routing=settings.routing,
                             strategy_defaults=strategy_defaults(strategies_dir))
        state = await service.get(args.job)
        command = await source_command(bus, state)
        training = rerun_request(command, state.job_id, request,
                                 strategy_text=strategy_file_text(strategies_dir))
        accepted = await service.submit(training)
        if not args.json:
            print(f"re-run of {state.job_id}", flush=True)
        return await after_submit(bus, service, accepted, follow=args.follow,
                                  json_output=args.json)
