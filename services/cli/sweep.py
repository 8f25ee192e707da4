"""`trainbus sweep`: search a strategy's keys with Optuna, each trial an ordinary job on the bus.

    trainbus sweep STRATEGY --param training.learning_rate=loguniform(1e-4,1e-2)
        --param model.architecture.hidden_layers=choice([32],[64,32]) --trials 20
        --parallel 4 --objective test.macro_f1 [--direction maximize|minimize] [--seeds 3]
        [--sampler tpe|random|grid] [--pruner median|none] [--seed S] [--follow]
    trainbus sweep --file sweep.yaml [--follow]      # the same options as YAML keys
    trainbus sweep resume ID [--follow]              # continue a sweep from the log
    trainbus sweep cancel ID                         # the sweep and its running trials
    trainbus sweep show ID [--json]                  # the leaderboard
    trainbus sweep list [--json]
    trainbus sweep promote ID --alias candidate      # the best trial's model

This command is the sweep's coordinator: it runs until every trial is told (killed, `sweep
resume ID` continues from the log without running a finished trial again). Distributions:
loguniform(a,b), uniform(a,b), int(a,b), choice(x,y,...). Every key is checked against the
strategy grammar (its extremes, or each choice) and the objective against what the trials
report, before anything is submitted. docs/sweeps.md has the whole story.

Exit codes: 0 finished (or shown), 1 failed or NATS unreachable, 2 bad input, 130 cancelled.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from services.cli.args import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_OK,
    non_negative_int,
    positive_int,
)

if TYPE_CHECKING:
    from libs.events.sweep_fold import SweepState
    from libs.events.sweep_schema import SweepSpec
    from libs.events.sweep_service import SweepView

ACTIONS: Final = ("resume", "cancel", "show", "list", "promote")


class _Words(argparse.Action):
    """`sweep ACTION ID` or `sweep STRATEGY`: sets `sweep_action` (the CLI's role table reads
    it: `promote` sets an alias) and `target`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        words = list(values or [])
        action = "start"
        if words and words[0] in ACTIONS and (len(words) == 2 or words == ["list"]):
            action = words.pop(0)
        elif words and words[0] in ACTIONS and len(words) == 1:
            parser.error(f"sweep {words[0]} needs a sweep id: trainbus sweep {words[0]} ID")
        if len(words) > 1:
            parser.error(f"expected one STRATEGY (or ACTION ID), got {' '.join(words)}")
        namespace.sweep_action = action
        namespace.target = words[0] if words else None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep", help="search strategy keys with Optuna (trials are jobs on the bus)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", nargs="*", action=_Words, metavar="STRATEGY | ACTION ID",
                        help="a strategy name or .yaml path; or resume|cancel|show|promote ID; "
                             "or list")
    parser.add_argument("--file", type=Path, default=None, help="a YAML sweep file")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=DIST",
                        help="repeatable: training.learning_rate=loguniform(1e-4,1e-2)")
    parser.add_argument("--trials", type=non_negative_int, default=None, help="how many trials")
    parser.add_argument("--parallel", type=positive_int, default=None,
                        help="trials running at once (default 1)")
    parser.add_argument("--objective", default=None,
                        help="test.<metric> or walkforward.<metric> (e.g. test.macro_f1)")
    parser.add_argument("--direction", choices=("maximize", "minimize"), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="runs per configuration, ranked by the mean (default 1)")
    parser.add_argument("--sampler", choices=("tpe", "random", "grid"), default=None)
    parser.add_argument("--pruner", choices=("median", "none"), default=None)
    parser.add_argument("--pool", choices=("auto", "any", "container", "host"), default=None)
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="default: the strategy's training.epochs")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="the sweep's seed (sampler and training seeds; default random)")
    parser.add_argument("--alias", default="candidate", help="promote: the alias to set")
    parser.add_argument("--reason", default=None, help="cancel: why")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="print each trial as it is asked and told")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strategies-dir", type=Path, default=None,
                        help="where STRATEGY is read (default $TRAINBUS_STRATEGIES_DIR or "
                             "./strategies)")
    parser.set_defaults(handler=run_sweep, sweep_action="start", target=None)


def run_sweep(args: argparse.Namespace) -> int:
    from libs.events.errors import InvalidRequest
    from services.cli.client import error, run

    action = args.sweep_action
    if action == "start":
        try:
            spec, seed = build_spec(args)
        except InvalidRequest as exc:
            error(f"{exc.field}: {exc.detail}" if exc.field else exc.detail)
            return EXIT_BAD_INPUT
        return run(lambda: _start(args, spec, seed))
    if action == "list":
        return run(lambda: _list(args))
    return run(lambda: _by_id(args, action))


# --- checking the sweep before anything is submitted -----------------------------------------


def build_spec(args: argparse.Namespace) -> tuple[SweepSpec, int]:
    """The checked spec and the sweep's seed. Raises InvalidRequest naming the problem."""
    import msgspec

    from libs.events.errors import InvalidRequest
    from libs.events.sweep_schema import SweepSpec
    from libs.events.sweep_spec import (
        check_spec,
        new_sweep_seed,
        parse_param,
        read_sweep_file,
    )
    from libs.pipeline.types import Seed

    values: dict[str, Any] = {}
    texts: list[str] = list(args.param)
    target = args.target
    if args.file is not None:
        try:
            source = args.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequest(f"cannot read {args.file}: {exc.strerror}",
                                 field="file") from None
        sweep_file = read_sweep_file(source, str(args.file))
        values = {k: v for k, v in msgspec.to_builtins(sweep_file).items()
                  if k not in ("params", "strategy", "seed") and v is not None}
        texts = [f"{k}={v}" for k, v in sweep_file.params.items()] + texts
        target = target or sweep_file.strategy
        if args.seed is None and sweep_file.seed is not None:
            args.seed = sweep_file.seed
    for name in ("trials", "parallel", "objective", "direction", "seeds", "sampler", "pruner",
                 "pool", "epochs"):
        given = getattr(args, name)
        if given is not None:
            values[name] = given
    if target is None:
        raise InvalidRequest("give a STRATEGY (or --file with a strategy key)",
                             field="strategy")
    if values.get("trials") is None:
        raise InvalidRequest("give --trials N", field="trials")
    if values["trials"] < 1:
        raise InvalidRequest(f"{values['trials']} trials: a sweep needs at least one",
                             field="trials")
    if not values.get("objective"):
        raise InvalidRequest("give --objective (e.g. test.macro_f1)", field="objective")
    params = [parse_param(text) for text in texts]
    name, base_yaml, symbols, timeframes = _strategy(target, args.strategies_dir)
    direction = values.get("direction", "maximize")
    values.setdefault("prune_on", "val_accuracy" if direction == "maximize" else "val_loss")
    try:
        spec = msgspec.convert({
            **values, "strategy": name, "strategy_yaml": base_yaml, "symbols": symbols,
            "timeframes": timeframes, "params": [msgspec.to_builtins(p) for p in params],
        }, SweepSpec)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None
    check_spec(spec)
    _check_against_strategy(spec)
    if args.seed is not None:
        # Stored as is, read back validated: an out-of-range seed would make the sweep unreadable.
        try:
            msgspec.convert(args.seed, Seed)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"--seed {args.seed}: {exc}", field="seed") from None
    return spec, args.seed if args.seed is not None else new_sweep_seed()


def _strategy(target: str, strategies_dir: Path | None
              ) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """(name, YAML text, symbols, timeframes) of the base strategy."""
    from libs.events.errors import InvalidRequest
    from libs.pipeline import strategy as strategy_config
    from services.settings import SharedSettings

    if target.endswith((".yaml", ".yml")) or "/" in target:
        path = Path(target)
    else:
        directory = strategies_dir or SharedSettings.from_env().strategies_dir
        try:
            path = strategy_config.resolve_strategy_path(target, directory)
        except strategy_config.StrategyError as exc:
            raise InvalidRequest(str(exc), field="strategy") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}", field="strategy") from None
    try:
        config = strategy_config.parse_strategy(text, source=str(path))
    except strategy_config.StrategyError as exc:
        raise InvalidRequest(str(exc), field="strategy") from None
    return (config.name, text, tuple(strategy_config.symbols_of(config)),
            tuple(strategy_config.timeframes_of(config)))


def _check_against_strategy(spec: SweepSpec) -> None:
    from libs.events.errors import InvalidRequest
    from libs.events.sweep_spec import candidates, split_objective, trial_yaml
    from libs.pipeline.sweep_check import Candidate, check_candidates, check_objective

    source, metric = split_objective(spec.objective)
    problem = check_objective(spec.strategy_yaml, source, metric)
    if problem is not None:
        raise InvalidRequest(problem.message, field=problem.key)
    checks = [Candidate(p.key, value, trial_yaml(spec.strategy_yaml, {p.key: value},
                                                 name=f"{spec.strategy}-check"))
              for p in spec.params for value in candidates(p)]
    problems = check_candidates(checks)
    if problems:
        first = problems[0]
        more = "; ".join(str(p) for p in problems[1:4])
        raise InvalidRequest(first.message + (f" (also: {more})" if more else ""),
                             field=f"param {first.key}")


# --- running ---------------------------------------------------------------------------------


async def _start(args: argparse.Namespace, spec: SweepSpec, seed: int) -> int:
    import time

    from libs.events.sweep_log import publish_sweep_event
    from libs.events.sweep_schema import SweepStarted
    from libs.events.sweep_spec import new_sweep_id
    from services.cli.client import open_bus, print_json_line

    sweep_id = new_sweep_id()
    async with open_bus() as bus:
        await publish_sweep_event(bus, SweepStarted(sweep_id=sweep_id, time=time.time(),
                                                    by="cli", spec=spec, seed=seed))
        if args.json:  # JSON lines: this one, then the leaderboard at the end
            print_json_line({"sweep_id": sweep_id, "status": "started", "seed": seed})
        else:
            print(f"sweep {sweep_id} started: {spec.trials} trials of {spec.strategy}, "
                  f"{spec.direction} {spec.objective} (seed {seed})", flush=True)
            print(f"resume it: trainbus sweep resume {sweep_id}", flush=True)
        return await _coordinate(args, bus, sweep_id)


async def _coordinate(args: argparse.Namespace, bus: Any, sweep_id: str) -> int:
    from libs.events.sweep_coordinator import SweepCoordinator
    from libs.events.sweep_service import SweepService
    from services.settings import SharedSettings

    settings = SharedSettings.from_env()

    def notify(state: SweepState, text: str) -> None:
        if args.follow and not args.json:
            print(f"[{state.told}/{state.spec.trials}] {text}", flush=True)

    coordinator = SweepCoordinator(bus, sweep_id, routing=settings.routing, notify=notify)
    state = await coordinator.run()
    view = await SweepService(bus).get(sweep_id)
    _show(args, view)
    return EXIT_CANCELLED if state.status == "cancelled" else EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from libs.events.sweep_service import SweepService
    from services.cli.client import open_bus, print_json, print_table

    async with open_bus() as bus:
        sweeps = await SweepService(bus).list()
    if args.json:
        print_json(sweeps)
        return EXIT_OK
    table = Table(title=f"sweeps ({len(sweeps)})")
    for column in ("sweep", "status", "strategy", "objective", "trials", "best"):
        table.add_column(column)
    for s in sweeps:
        best = "-" if s.best_value is None else f"{s.best_value:.4f} (trial {s.best_trial})"
        table.add_row(s.sweep_id, s.status, s.strategy, f"{s.direction} {s.objective}",
                      f"{s.told}/{s.trials} ({s.running} running)", best)
    print_table(table)
    return EXIT_OK


async def _by_id(args: argparse.Namespace, action: str) -> int:
    from libs.events.sweep_coordinator import cancel_sweep
    from libs.events.sweep_log import check_sweep_id
    from libs.events.sweep_service import SweepService
    from services.cli.client import open_bus, print_json

    sweep_id = check_sweep_id(args.target)
    async with open_bus() as bus:
        service = SweepService(bus)
        if action == "resume":
            return await _coordinate(args, bus, sweep_id)
        if action == "cancel":
            state = await cancel_sweep(bus, sweep_id, reason=args.reason, by="cli")
            print(f"sweep {sweep_id} {state.status}", flush=True)
            return EXIT_OK
        if action == "promote":
            record = await service.promote(sweep_id, args.alias, by="cli")
            if args.json:
                print_json(record)
            else:
                print(f"{record.ref} -> {record.version} (job {record.job_id})", flush=True)
            return EXIT_OK
        _show(args, await service.get(sweep_id))
        return EXIT_OK


def _show(args: argparse.Namespace, view: SweepView) -> None:
    from rich.table import Table

    from services.cli.client import print_json, print_table, stdout_console

    if args.json:
        print_json(view)
        return
    console = stdout_console()
    console.print(f"sweep [bold]{view.sweep_id}[/bold] {view.status}: {view.strategy}, "
                  f"{view.direction} {view.objective}, {view.told}/{view.trials_total} told, "
                  f"{view.running} running (sampler {view.sampler}, pruner {view.pruner}, "
                  f"{view.seeds} seed(s), seed {view.seed})", highlight=False)
    table = Table(title="leaderboard")
    keys = list(view.params)
    for column in ("rank", "trial", "state", view.objective, *keys, "jobs", "model"):
        table.add_column(column)
    for row in view.trials:
        value = "-" if row.value is None else f"{row.value:.4f}"
        if row.value is not None and view.seeds > 1 and row.std is not None:
            value += f" ± {row.std:.4f}"
        jobs = ", ".join(f"{j.job_id} {j.status}" for j in row.jobs)
        model = f"{row.model.strategy}/{row.model.version}" if row.model else "-"
        table.add_row(str(row.rank or "-"), str(row.n), row.status, value,
                      *(_cell(row.params.get(k)) for k in keys), jobs, model)
    print_table(table, console=console)
    if view.importance:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in view.importance.items())
        console.print(f"parameter importance: {shown}", highlight=False)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
