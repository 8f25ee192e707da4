"""Looking at and steering jobs and workers over NATS (models: services/cli/models.py).

    trainbus jobs [--status S] [--strategy NAME] [--pool P] [--experiment NAME] [--tag k=v|k]
        [--symbol S] [--timeframe TF] [--worker ID] [--since DATE] [--until DATE]
        [--limit N] [--json | --plain]
    trainbus jobs annotate JOB [--tag k=v ...] [--untag k ...] [--note TEXT]
        [--experiment NAME] [--json]      organise a job (an `annotated` event in the log)
    trainbus jobs fail JOB --reason TEXT [--force] [--json]   end a job no live worker holds
    trainbus show JOB [--json]
    trainbus watch JOB [--json]        live progress until the job ends (Ctrl-C: cancel or leave)
    trainbus cancel JOB [--reason TEXT] [--json]
    trainbus workers [--json | --plain]  each with its signing key and whether it is trusted
    (trust, untrust: services/cli/trust.py)

`jobs` filters combine (all must hold); `--tag` repeats (`k=v`: that value, `k`: any value);
`--since`/`--until` bound the creation time (ISO date or date-time, UTC when naive). The
`metric` column is the headline test metric of a completed job (macro F1, accuracy, RMSE, ...).
`jobs annotate` works on finished jobs too: `--note ""` clears the note, `--experiment ""` the
experiment.

In a pipe or a file, tables print every value whole (no 80-column fit, no cut job ids);
`--plain` prints them as TSV (a header line, one line per row).

Exit codes: 0 ok, 1 failed (unknown job, job already finished, NATS unreachable; for watch:
the job failed; fail: a live worker holds the job), 2 bad input (not a job id; watch: the job
was rejected), 130 cancelled / stopped watching.

`jobs fail` records an `operator_failed` event (libs/events/operator.py); under the NATS roles
of deploy/nats-roles.conf that takes the admin user, as promoting models does.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.args import job_id, tag_pair
from services.cli.client import positive_int

STATUSES = ("queued", "running", "cancelling", "completed", "failed", "cancelled", "rejected")


def register(subparsers: Any) -> None:
    jobs = subparsers.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=STATUSES, default=None)
    jobs.add_argument("--strategy", default=None)
    jobs.add_argument("--pool", choices=("any", "container", "host"), default=None)
    jobs.add_argument("--experiment", default=None)
    jobs.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY[=VALUE]",
                      help="has this tag (with this value); repeatable")
    jobs.add_argument("--symbol", default=None, help="trains on this symbol")
    jobs.add_argument("--timeframe", default=None, help="trains on this timeframe")
    jobs.add_argument("--worker", default=None, help="claimed by this worker id")
    jobs.add_argument("--since", default=None, help="created at or after (ISO date)")
    jobs.add_argument("--until", default=None, help="created before (ISO date)")
    jobs.add_argument("--limit", type=positive_int, default=50)
    jobs.add_argument("--offset", type=int, default=0)
    _output(jobs)
    jobs.set_defaults(handler=lambda args: _run(_jobs, args))
    actions = jobs.add_subparsers(dest="jobs_action", metavar="{annotate,fail}")
    annotate = actions.add_parser(
        "annotate", help="set tags, a note or the experiment of a job (any status)")
    annotate.add_argument("job", metavar="JOB", type=job_id)
    annotate.add_argument("--tag", dest="set_tags", type=tag_pair, action="append", default=[],
                          metavar="KEY=VALUE", help="set a tag (repeatable)")
    annotate.add_argument("--untag", action="append", default=[], metavar="KEY",
                          help="remove a tag (repeatable)")
    annotate.add_argument("--note", default=None, help='replace the note ("" clears it)')
    annotate.add_argument("--experiment", dest="set_experiment", default=None, metavar="NAME",
                          help='move the job to this experiment ("" clears it)')
    annotate.add_argument("--json", action="store_true")
    annotate.set_defaults(handler=lambda args: _run(_annotate, args))
    fail = actions.add_parser(
        "fail", help="end a job no live worker holds (a stuck job): recorded in the log as "
        "failed by an operator")
    fail.add_argument("job", metavar="JOB", type=job_id)
    fail.add_argument("--reason", required=True, help="why: kept in the log and the job's error")
    fail.add_argument("--force", action="store_true",
                      help="fail it even though a live worker's heartbeat lists it")
    fail.add_argument("--json", action="store_true")
    fail.set_defaults(handler=lambda args: _run(_fail, args))

    show = subparsers.add_parser("show", help="one job's state")
    show.add_argument("job", metavar="JOB", type=job_id)
    show.add_argument("--json", action="store_true", help="the projected state as JSON")
    show.set_defaults(handler=lambda args: _run(_show, args))

    watch = subparsers.add_parser("watch", help="follow a job live until it ends")
    watch.add_argument("job", metavar="JOB", type=job_id)
    watch.add_argument("--json", action="store_true", help="one JSON line per event")
    watch.set_defaults(handler=lambda args: _run(_watch, args))

    cancel = subparsers.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job", metavar="JOB", type=job_id)
    cancel.add_argument("--reason", default=None)
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(handler=lambda args: _run(_cancel, args))

    workers = subparsers.add_parser("workers", help="live trainers and what they run")
    _output(workers)
    workers.set_defaults(handler=lambda args: _run(_workers, args))


def _output(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="machine-readable output")
    formats.add_argument("--plain", action="store_true", help="TSV: a header line, one per row")


def _run(command: Any, args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: command(args))


def _service(bus: Any) -> Any:
    from libs.events.jobs import JobService

    return JobService(bus)


def job_query(args: argparse.Namespace) -> Any:
    """The `jobs` filters as a JobQuery (bad dates: InvalidRequest naming the option)."""
    from libs.events.job_query import JobQuery, parse_moment

    return JobQuery(status=args.status, strategy=args.strategy, pool=args.pool,
                    experiment=args.experiment, tags=tuple(args.tags), symbol=args.symbol,
                    timeframe=args.timeframe, worker=args.worker,
                    since=parse_moment(args.since, field="--since"),
                    until=parse_moment(args.until, field="--until"))


def metric_text(name: str | None, value: float | None) -> str:
    return f"{name} {value:.4f}" if name is not None and value is not None else ""


async def _jobs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from services.cli.client import EXIT_OK, age, open_bus, print_json, print_table, stdout_console

    query = job_query(args)
    async with open_bus() as bus:
        page = await _service(bus).list(query=query, limit=args.limit, offset=args.offset)
    if args.json:
        print_json(page)
        return EXIT_OK
    console = stdout_console()
    # A terminal's note column is cut to keep the table readable; a pipe gets it whole.
    note_width = 60 if console.is_terminal and not args.plain else None
    table = Table(title=f"jobs ({len(page.items)} of {page.total})")
    for column in ("job", "status", "strategy", "experiment", "pool", "trainer", "progress",
                   "metric", "created", "tags", "note"):
        table.add_column(column)
    for job in page.items:
        progress = (f"epoch {job.epoch}/{job.total_epochs}" if job.epoch is not None
                    else job.phase or "")
        trainer = f"{job.worker_kind}/{job.device}" if job.worker_kind else ""
        tags = ",".join(f"{k}={v}" for k, v in sorted(job.tags.items()))
        # The error says why a job ended badly; otherwise the person's note.
        note = job.error or job.note or ""
        table.add_row(job.job_id, job.status, job.strategy or "(inline)", job.experiment or "",
                      job.pool or "", trainer, progress, metric_text(job.metric, job.metric_value),
                      age(job.created_at), tags, note[:note_width])
    print_table(table, plain=args.plain, console=console)
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    from services.cli.client import EXIT_OK, open_bus, print_json, report, stdout_console

    async with open_bus() as bus:
        state = await _service(bus).get(args.job)
    if args.json:
        print_json(state)
        return EXIT_OK
    console = stdout_console()
    fields = {
        "status": state.status,
        "strategy": state.strategy or "(inline)",
        "symbols": ", ".join(state.symbols),
        "timeframes": ", ".join(state.timeframes),
        "window": f"{state.start or '...'} .. {state.end or '...'}"
        if state.start or state.end else None,
        "seed": state.seed,
        "epochs": state.epochs,
        "derived": f"from {state.derived_from}" if state.derived_from else None,
        "experiment": state.experiment,
        "tags": ", ".join(f"{k}={v}" for k, v in sorted(state.tags.items())),
        "note": state.note,
        "pool": state.pool,
        "worker": f"{state.worker} ({state.worker_kind}, {state.device})" if state.worker
        else None,
        "attempt": state.attempt or None,
        "phase": state.phase,
        "epoch": f"{state.epoch}/{state.total_epochs}" if state.epoch is not None else None,
        "checkpoint": state.checkpoint,
    }
    from rich.markup import escape

    console.print(f"[bold]job {state.job_id}[/bold]")
    for key, value in fields.items():
        if value:
            console.print(f"  {key:<11} {escape(str(value))}", highlight=False)
    if state.status in ("completed", "failed", "cancelled", "rejected"):
        report(console, state)  # a `code` failure's traceback too
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    from services.cli.client import follow_to_exit, open_bus, stdout_console

    console = stdout_console()
    async with open_bus() as bus:
        state = await _service(bus).get(args.job)
        return await follow_to_exit(bus, console, state, json_output=args.json)


async def _cancel(args: argparse.Namespace) -> int:
    from libs.events.job_types import CancelRequest
    from services.cli.client import EXIT_OK, open_bus, print_json

    async with open_bus() as bus:
        accepted = await _service(bus).cancel(
            args.job, CancelRequest(reason=args.reason, requested_by="cli")
        )
    if args.json:
        print_json(accepted)
    else:
        print(f"cancel sent for job {accepted.job_id} ({accepted.status})", flush=True)
    return EXIT_OK


async def _annotate(args: argparse.Namespace) -> int:
    import msgspec

    from libs.events.errors import InvalidRequest
    from libs.events.job_types import AnnotateRequest
    from services.cli.client import EXIT_OK, open_bus, print_json

    values: dict[str, Any] = {"tags": dict(args.set_tags), "untag": args.untag,
                              "note": args.note, "experiment": args.set_experiment,
                              "requested_by": "cli"}
    try:
        request = msgspec.convert({k: v for k, v in values.items() if v is not None},
                                  AnnotateRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None
    async with open_bus() as bus:
        accepted = await _service(bus).annotate(args.job, request)
    if args.json:
        print_json(accepted)
    else:
        print(f"job {accepted.job_id} annotated at sequence {accepted.seq}", flush=True)
    return EXIT_OK


async def _fail(args: argparse.Namespace) -> int:
    from libs.events.operator import fail_job
    from services.cli.client import EXIT_BAD_INPUT, EXIT_OK, error, open_bus, print_json

    if not args.reason.strip():
        error("--reason must say why the job is being failed")
        return EXIT_BAD_INPUT
    async with open_bus() as bus:
        accepted = await fail_job(bus, args.job, reason=args.reason, by="cli", force=args.force)
    if args.json:
        print_json(accepted)
    else:
        forced = f" (forced: {accepted.held_by} still listed it)" if accepted.forced else ""
        print(f"job {accepted.job_id} failed by operator at sequence {accepted.seq}{forced}",
              flush=True)
    return EXIT_OK


async def _workers(args: argparse.Namespace) -> int:
    import msgspec
    from rich.table import Table

    from libs.events.heartbeat import read_workers
    from libs.events.trust import read_trusted
    from services.cli.client import EXIT_OK, age, open_bus, print_json, print_table
    from services.cli.trust import trust_label

    async with open_bus() as bus:
        workers = await read_workers(bus)
        trusted = await read_trusted(bus)
    if args.json:
        print_json([{**msgspec.to_builtins(w), "trusted": w.signer in trusted}
                    for w in workers])
        return EXIT_OK
    table = Table(title=f"workers ({len(workers)})")
    for column in ("worker", "kind", "pools", "device", "host", "running", "started", "key",
                   "trusted"):
        table.add_column(column)
    for w in workers:
        table.add_row(w.worker_id, w.kind, ",".join(w.pools), w.device, w.host,
                      ", ".join(w.running) or "-", age(w.started_at), w.signer or "-",
                      trust_label(w.signer, trusted))
    print_table(table, plain=args.plain)
    return EXIT_OK
