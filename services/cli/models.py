"""`trainbus models`: the trained models, their aliases, the leaderboard, compare, delete, prune.

    trainbus models [--strategy S] [--sort METRIC] [--order desc|asc] [--json | --plain]
                                            newest first (or by a headline metric); works
                                            without NATS (the local models directory only)
    trainbus models show MODEL [--json]     manifest, test metrics, walk-forward, aliases
    trainbus models compare A B [C ...] [--json | --plain]
                                            side by side, the best value of each row marked *
    trainbus models promote MODEL ALIAS [--expires-after 30d] [--reason TEXT]
    trainbus models demote STRATEGY@ALIAS [--reason TEXT]
    trainbus models aliases [STRATEGY] [--history] [--json | --plain]
    trainbus models delete MODEL [--dry-run] [--json]
    trainbus models prune --keep N [--strategy S] [--dry-run] [--json]

MODEL is `strategy/<tf>_v<N>`, `strategy/<job_id>`, `strategy/latest`, `strategy@latest` or
`strategy@<alias>` (an alias needs NATS). Aliases, deleting and pruning need NATS: every alias
change is an event on the log (`trainbus audit` checks them) and the alias is in KV
`<prefix>_aliases`; a version an alias points to, or that a job names as its model, is never
deleted. `--models-dir` (default $TRAINBUS_MODELS_DIR or ./models) is the local storage.
In a pipe or a file, tables print every value whole; `--plain` prints them as TSV.

Trust: when the operator trusts at least one trainer key (`trainbus workers trust`), a model
whose job no trusted key signed is not listed (one `not listed:` line on stderr says why) and
show, promote and predict refuse it; delete still removes it.

Exit codes: 0 ok, 1 failed (NATS unreachable for what needs it, unknown model or alias, a model
that is kept or untrusted), 2 bad input (a bad alias name or reference, an unknown sort key).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.args import positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from libs.events.bus import Bus
    from libs.events.catalog import CompareRow, ModelDetail


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="local model storage (default $TRAINBUS_MODELS_DIR or ./models)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", default=None)
    parser.add_argument("--sort", default=None, metavar="METRIC",
                        help="a headline metric: macro_f1, accuracy, backtest_sharpe, "
                             "backtest_net_return, ... (default: newest first)")
    parser.add_argument("--order", choices=("desc", "asc"), default="desc")
    _common(parser)
    _plain(parser)


def _plain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plain", action="store_true",
                        help="the table as TSV: a header line, one line per row")


def register(subparsers: Any) -> None:
    models = subparsers.add_parser(
        "models", help="trained models: list, show, compare, aliases, delete, prune",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _listing(models)
    models.set_defaults(handler=lambda args: _run(_list, args))
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    listing = commands.add_parser("list", help="the models, newest first or by a metric")
    _listing(listing)
    listing.set_defaults(handler=lambda args: _run(_list, args))

    show = commands.add_parser("show", help="one model: manifest, metrics, aliases")
    show.add_argument("model", metavar="MODEL")
    _common(show)
    show.set_defaults(handler=lambda args: _run(_show, args))

    compare = commands.add_parser("compare", help="models side by side, best marked")
    compare.add_argument("models", metavar="MODEL", nargs="+")
    _common(compare)
    _plain(compare)
    compare.set_defaults(handler=lambda args: _run(_compare, args))

    promote = commands.add_parser("promote", help="point an alias at a model")
    promote.add_argument("model", metavar="MODEL")
    promote.add_argument("alias", metavar="ALIAS", help="e.g. champion, candidate")
    promote.add_argument("--expires-after", default=None, metavar="DURATION",
                         help="loading through the alias is refused after this: 30d, 12h, "
                              "90m or seconds")
    promote.add_argument("--reason", default=None)
    promote.add_argument("--by", default="cli", help="who promotes (recorded on the log)")
    _common(promote)
    promote.set_defaults(handler=lambda args: _run(_promote, args))

    demote = commands.add_parser("demote", help="remove an alias")
    demote.add_argument("ref", metavar="STRATEGY@ALIAS")
    demote.add_argument("--reason", default=None)
    demote.add_argument("--by", default="cli")
    _common(demote)
    demote.set_defaults(handler=lambda args: _run(_demote, args))

    aliases = commands.add_parser("aliases", help="the aliases (and their history)")
    aliases.add_argument("strategy", metavar="STRATEGY", nargs="?", default=None)
    aliases.add_argument("--history", action="store_true",
                         help="every change, from the log")
    _common(aliases)
    _plain(aliases)
    aliases.set_defaults(handler=lambda args: _run(_aliases, args))

    delete = commands.add_parser("delete", help="delete a model (disk and object store)")
    delete.add_argument("model", metavar="MODEL")
    delete.add_argument("--dry-run", action="store_true", help="print what would go")
    _common(delete)
    delete.set_defaults(handler=lambda args: _run(_delete, args))

    prune = commands.add_parser(
        "prune", help="keep the newest N versions (and every aliased or job-named one)")
    prune.add_argument("--keep", type=positive_int, required=True, metavar="N")
    prune.add_argument("--strategy", default=None)
    prune.add_argument("--dry-run", action="store_true", help="print what would go")
    _common(prune)
    prune.set_defaults(handler=lambda args: _run(_prune, args))


def _run(command: Any, args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: command(args))


def _models_dir(args: argparse.Namespace) -> Path:
    from services.settings import SharedSettings

    return args.models_dir or SharedSettings.from_env().models_dir


@contextlib.asynccontextmanager
async def _maybe_bus() -> AsyncIterator[Bus | None]:
    """The bus, or None (after one yellow line on stderr) when NATS is down or not set up:
    reading the local models needs no NATS."""
    from libs.events.bus import connect
    from libs.events.errors import BusUnavailable, SetupMissing
    from libs.events.setup import open_jetstream
    from services.cli.client import bus_config

    config = bus_config()
    try:
        bus = await connect(config)
    except BusUnavailable as exc:
        _offline(exc)
        yield None
        return
    try:
        try:
            await open_jetstream(bus)
        except SetupMissing as exc:
            _offline(exc)
            yield None
            return
        yield bus
    finally:
        await bus.close()


def _offline(exc: Exception) -> None:
    _warn(f"NATS was not reachable ({exc}): local models only, aliases unknown")


def _warn(text: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(text)}[/yellow]", highlight=False)


def _console() -> Console:
    from services.cli.client import stdout_console

    return stdout_console()


# --- list ---------------------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from libs.events.registry import list_models
    from services.cli.client import EXIT_OK, age, print_json, print_table

    refused: list[tuple[Any, str]] = []
    async with _maybe_bus() as bus:
        models = await list_models(bus, _models_dir(args), strategy=args.strategy,
                                   sort=args.sort, order=args.order, refused=refused)
    # Trust is configured and no trusted key signed these models' jobs (libs/events/trust.py):
    # not listed; said on stderr so the listing (and its JSON) stays the trusted models only.
    for model, why in refused:
        print(f"not listed: {model.strategy}/{model.version}: {why}", file=sys.stderr)
    if args.json:
        print_json(models)
        return EXIT_OK
    title = f"models ({len(models)})" + (f" by {args.sort} {args.order}" if args.sort else "")
    table = Table(title=title)
    shown = ["macro_f1", "accuracy", "backtest_sharpe"]
    if args.sort and args.sort not in (*shown, "created_at"):
        shown.append(args.sort)
    for column in ("strategy", "version", "aliases", "job", *(_label(k) for k in shown),
                   "where", "created"):
        table.add_column(column)
    for model in models:
        where = " + ".join(w for w, ok in (("disk", model.local), ("nats", model.object_name))
                           if ok)
        table.add_row(model.strategy, model.version, ", ".join(model.aliases),
                      model.job_id or "", *(_fmt(k, model.test_metrics.get(k)) for k in shown),
                      where, age(model.created_at))
    print_table(table, plain=args.plain)
    return EXIT_OK


# --- show ---------------------------------------------------------------------------------------


async def _show(args: argparse.Namespace) -> int:
    from libs.events.registry import model_detail
    from services.cli.client import EXIT_OK, print_json

    async with _maybe_bus() as bus:
        detail = await model_detail(bus, args.model, _models_dir(args))
    if args.json:
        print_json(detail)
        return EXIT_OK
    _print_detail(_console(), detail)
    return EXIT_OK


def network(arch: dict[str, Any]) -> str | None:
    """The manifest's model section in a line: `mlp [32, 16]` or `lstm 2 x 64 over 20 bars`."""
    if not arch:
        return None
    kind = arch.get("type")
    if kind in ("lstm", "gru"):
        shape = (f"{kind} {arch.get('num_layers')} x {arch.get('hidden_size')}"
                 f"{' bidirectional' if arch.get('bidirectional') else ''} over "
                 f"{arch.get('sequence_length')} bars")
    else:
        shape = f"{kind} {arch.get('hidden_layers')}"
    return f"{shape}, {arch.get('parameters')} parameters"


def _print_detail(console: Console, detail: ModelDetail) -> None:
    from rich.markup import escape
    from rich.table import Table

    from libs.events.catalog import data_window, headline_metrics
    from services.cli.client import headline_rows

    model, meta, metrics = detail.model, detail.metadata, detail.metrics
    arch = _dict(meta.get("model"))
    where = " + ".join(w for w, ok in ((f"disk ({model.local_path})", model.local),
                                       (f"object store ({model.object_name})",
                                        model.object_name)) if ok)
    fields = {
        "timeframe": model.timeframe,
        "aliases": ", ".join(model.aliases) or "-",
        "job": model.job_id,
        "created": meta.get("created_at"),
        "symbols": ", ".join(meta.get("symbols") or []),
        "timeframes": ", ".join(meta.get("timeframes") or []),
        "data window": data_window(meta),
        "strategy hash": str(meta.get("strategy_hash") or "")[:12] or None,
        "seed": meta.get("seed"),
        "epochs": meta.get("epochs"),
        "device": meta.get("device"),
        "network": network(arch),
        "weights sha256": str(meta.get("weights_sha256") or "")[:12] or None,
        "where": where or None,
    }
    console.print(f"[bold]model {escape(model.name)}[/bold]")
    for key, value in fields.items():
        if value not in (None, ""):
            console.print(f"  {key:<15} {escape(str(value))}", highlight=False)
    test = _dict(metrics.get("test"))
    head = {**model.test_metrics, **headline_metrics(test)}
    table = Table(title="test metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in headline_rows(head):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    summary = _dict(_dict(metrics.get("walk_forward")).get("summary"))
    for key, entry in summary.items():
        if isinstance(entry, dict) and isinstance(entry.get("mean"), int | float):
            std = entry.get("std")
            spread = f" ± {_fmt(key, std)}" if isinstance(std, int | float) else ""
            table.add_row(f"walk-forward {_label(key)}", f"{_fmt(key, entry['mean'])}{spread}")
    if table.row_count:
        console.print(table)
    for warning in metrics.get("warnings") or ():
        console.print(f"[yellow]warning:[/yellow] {escape(str(warning))}", highlight=False)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- compare ------------------------------------------------------------------------------------


async def _compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from libs.events.registry import compare
    from services.cli.client import EXIT_OK, print_json, print_table

    async with _maybe_bus() as bus:
        comparison = await compare(bus, args.models, _models_dir(args))
    if args.json:
        print_json(comparison)
        return EXIT_OK
    table = Table(title="compare (* best)")
    table.add_column("")
    for ref, name in zip(comparison.refs, comparison.models, strict=True):
        table.add_column(name if ref == name else f"{ref}\n{name}", justify="right")
    for row in comparison.rows:
        table.add_row(row.label, *_cells(row))
    print_table(table, plain=args.plain)
    return EXIT_OK


def _cells(row: CompareRow) -> list[str]:
    cells = []
    for i, value in enumerate(row.values):
        text = "-" if value is None else _fmt(row.key, value)
        if row.spread is not None and row.spread[i] is not None:
            text += f" ± {_fmt(row.key, row.spread[i])}"
        if i in row.best:
            text = f"[bold green]{text} *[/bold green]"
        cells.append(text)
    return cells


_LABELS = {"macro_f1": "macro F1", "accuracy": "accuracy", "weighted_f1": "weighted F1",
           "backtest_sharpe": "Sharpe", "backtest_net_return": "net return",
           "backtest_max_drawdown": "max drawdown", "backtest_trades": "trades"}


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key.endswith(("_return", "_drawdown", "_vs_buy_and_hold")):
        return f"{value * 100:+.2f}%"
    if key.endswith(("trades", "samples")) or key == "seed":
        return str(int(value))
    if key.startswith("lift_"):
        return f"{value:+.4f}"
    return f"{value:.4f}"


# --- aliases ------------------------------------------------------------------------------------


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00",
                                                                                     "Z")


async def _promote(args: argparse.Namespace) -> int:
    from libs.events.registry import parse_duration, resolve_ref, set_alias
    from services.cli.client import EXIT_OK, open_bus, print_json

    expires = parse_duration(args.expires_after) if args.expires_after else None
    async with open_bus() as bus:
        target = await resolve_ref(bus, args.model, _models_dir(args), check_expiry=False)
        record = await set_alias(bus, target.strategy, args.alias, target.version, by=args.by,
                                 expires_after=expires, reason=args.reason,
                                 models_dir=_models_dir(args))
    if args.json:
        print_json(record)
    else:
        until = f", expires {_when(record.expires_at)}" if record.expires_at else ""
        print(f"{record.ref} -> {record.strategy}/{record.version}{until} (log seq "
              f"{record.seq})", flush=True)
    return EXIT_OK


async def _demote(args: argparse.Namespace) -> int:
    from libs.events.errors import InvalidRequest
    from libs.events.registry import remove_alias, split_ref
    from services.cli.client import EXIT_OK, open_bus, print_json

    strategy, alias, is_alias = split_ref(args.ref)
    if not is_alias:
        raise InvalidRequest(f"{args.ref}: name an alias as strategy@alias", field="alias")
    async with open_bus() as bus:
        removed = await remove_alias(bus, strategy, alias, by=args.by, reason=args.reason)
    if args.json:
        print_json(removed)
    else:
        print(f"{removed.ref} removed (it pointed at {removed.version})", flush=True)
    return EXIT_OK


async def _aliases(args: argparse.Namespace) -> int:
    from rich.table import Table

    from libs.events.registry import list_aliases
    from services.cli.client import EXIT_OK, open_bus, print_json, print_table

    async with open_bus() as bus:
        if args.history:
            return await _history(bus, args)
        records = await list_aliases(bus, args.strategy)
    if args.json:
        print_json(records)
        return EXIT_OK
    table = Table(title=f"aliases ({len(records)})")
    for column in ("alias", "version", "set by", "set at", "expires", "reason"):
        table.add_column(column)
    for r in records:
        expires = _when(r.expires_at) + (" (expired)" if r.expired() else "")
        table.add_row(r.ref, r.version, r.set_by, _when(r.set_at),
                      expires if r.expires_at else "-", r.reason or "")
    print_table(table, plain=args.plain)
    return EXIT_OK


async def _history(bus: Bus, args: argparse.Namespace) -> int:
    from libs.events.audit import alias_timeline
    from services.cli.client import EXIT_OK, print_json

    entries = await alias_timeline(bus, args.strategy)
    if args.json:
        print_json([{"seq": e.seq, "time": e.time, "text": e.text} for e in entries])
        return EXIT_OK
    if not entries:
        print("no alias changes in the log", flush=True)
    for entry in entries:
        print(f"{_when(entry.time)}  #{entry.seq:<7} {entry.text}", flush=True)
    return EXIT_OK


# --- delete, prune ------------------------------------------------------------------------------


def _where(local_path: str | None, object_name: str | None) -> str:
    return " + ".join(w for w in ((f"disk {local_path}" if local_path else ""),
                                  (f"object {object_name}" if object_name else "")) if w)


async def _delete(args: argparse.Namespace) -> int:
    from libs.events.registry import delete_model
    from services.cli.client import EXIT_OK, open_bus, print_json

    async with open_bus() as bus:
        deletion = await delete_model(bus, args.model, _models_dir(args), dry_run=args.dry_run)
    if args.json:
        print_json({"dry_run": args.dry_run, "deleted": [deletion]})
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {deletion.model}: "
          f"{_where(deletion.local_path, deletion.object_name) or 'nothing stored'}", flush=True)
    return EXIT_OK


async def _prune(args: argparse.Namespace) -> int:
    from libs.events.registry import prune
    from services.cli.client import EXIT_OK, open_bus, print_json

    async with open_bus() as bus:
        plan = await prune(bus, _models_dir(args), keep=args.keep, strategy=args.strategy,
                           dry_run=args.dry_run)
    if args.json:
        print_json(plan)
        return EXIT_OK
    verb = "would delete" if plan.dry_run else "deleted"
    for deletion in plan.delete:
        print(f"{verb} {deletion.model}: {_where(deletion.local_path, deletion.object_name)}",
              flush=True)
    for name in plan.orphans:
        print(f"{verb} object {name} (no completed job names it)", flush=True)
    for kept in plan.kept:
        print(f"kept {kept.model}: {kept.reason}", flush=True)
    if not (plan.delete or plan.orphans):
        print(f"nothing to prune beyond the newest {plan.keep}", flush=True)
    return EXIT_OK
