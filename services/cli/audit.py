"""`trainbus audit`: replay the log from sequence 1 and compare with the projected job states.

    trainbus audit                       every job; exit 1 when anything differs
    trainbus audit --job ID              one job
    trainbus audit --job ID --timeline   that job's history, one line per message
    trainbus audit --json                machine-readable report
    trainbus audit --repair              rebuild the projection from the log, writing back what
                                         differs (reported one line per change; exit 1 when an
                                         entry changed meanwhile and was left to the projector)

Signed events (libs/events/signing.py): the report counts the events whose signature verified
(`SIGNED`), lists each bad signature (`BAD SIGNATURE seq N <subject>`) and, when the operator
trusts at least one key (`trainbus workers trust`), each completed job no trusted key signed
(`UNTRUSTED <job>: <why>`: its model is neither listed nor served). Those, like FOREIGN and
SKIPPED, do not fail the audit: the projection ignored them too.

Connection settings come from NATS_URL / NATS_* / TRAINBUS_SUBJECT_PREFIX (see
libs/events/config.py). Errors are one line on stderr, exit 1; a job the log and the projection
do not know exits 1 as `trainbus show` does, a malformed job id 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.events.bus import Bus

from services.cli.args import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, job_id


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="rebuild job state from the log and diff it against the KV projection"
    )
    parser.add_argument("--job", metavar="ID", type=job_id, help="only this job")
    parser.add_argument("--timeline", action="store_true",
                        help="print the job's history instead of diffing (needs --job)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--repair", action="store_true",
                        help="rewrite the KV projection from the log and report what changed")
    parser.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long to let a running projector catch up (default 10)")
    parser.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from libs.events.errors import TrainbusBusError

    if args.timeline and not args.job:
        print("trainbus audit: --timeline needs --job ID", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.repair and (args.job or args.timeline):
        print("trainbus audit: --repair rebuilds every job: drop --job/--timeline",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_run(args))
    except TrainbusBusError as exc:  # process edge: one line, no traceback
        print(f"trainbus audit: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(args: argparse.Namespace) -> int:
    from libs.events.bus import connect
    from libs.events.setup import open_jetstream
    from services.cli.client import bus_config

    # bus_config: with a local `trainbus up`'s credentials, the auditor (--repair: backend)
    bus = await connect(bus_config(client_name="trainbus-audit"))
    try:
        await open_jetstream(bus)
        if args.timeline:
            return await _timeline(bus, args)
        if args.repair:
            return await _repair(bus, args)
        return await _audit(bus, args)
    finally:
        await bus.close()


async def _timeline(bus: Bus, args: argparse.Namespace) -> int:
    from libs.events.audit import format_timeline, timeline

    entries = await timeline(bus, args.job)
    if args.json:
        print(json.dumps([
            {"seq": e.seq, "time": e.time, "text": e.text, "applied": e.applied,
             "status": e.status} for e in entries
        ], indent=2))
    elif not entries:
        print(f"no messages for job {args.job}")
    else:
        print(f"job {args.job}")
        for line in format_timeline(entries):
            print(f"  {line}")
    return EXIT_OK if entries else EXIT_FAILED


async def _audit(bus: Bus, args: argparse.Namespace) -> int:
    from libs.events.audit import audit

    report = await audit(bus, job_id=args.job, catch_up_timeout=args.wait)
    # Nothing replayed and nothing projected for the job asked about: it does not exist, and
    # "OK: 0 jobs" would read as a clean bill of health.
    unknown = (args.job is not None and report.jobs == 0 and not report.differences
               and not report.unverifiable and not report.foreign)
    if args.json:
        print(json.dumps({
            "ok": report.ok,
            "replayed_to": report.replayed_to,
            "checkpoint": report.checkpoint,
            "jobs": report.jobs,
            "unverifiable": report.unverifiable,
            "differences": [
                {"job_id": d.job_id, "kind": d.kind, "field": d.field, "detail": d.detail}
                for d in report.differences
            ],
            "foreign": report.foreign,
            "skipped": [{"seq": seq, "subject": subject, "reason": why}
                        for seq, subject, why in report.skipped],
            "signatures": {
                "verified": report.signed,
                "unsigned": report.unsigned,
                "invalid": [{"seq": seq, "subject": subject}
                            for seq, subject in report.bad_signatures],
                "trusted_keys": report.trusted_keys,
                "untrusted_completed": [{"job_id": job, "reason": why}
                                        for job, why in report.untrusted],
            },
        }, indent=2, default=str))
    else:
        for d in report.differences:
            print(f"DIFF {d.job_id}: {d.kind}: {d.detail}")
        for job, seqs in report.foreign.items():
            print(f"FOREIGN {job}: {len(seqs)} message(s) not written by the job's claimant, "
                  f"ignored (seq {', '.join(map(str, seqs[:10]))}"
                  f"{', ...' if len(seqs) > 10 else ''})")
        for seq, subject, why in report.skipped:
            print(f"SKIPPED seq {seq} {subject}: {why}")
        for seq, subject in report.bad_signatures:
            print(f"BAD SIGNATURE seq {seq} {subject}: present but not valid, read as unsigned")
        for job, why in report.untrusted:
            print(f"UNTRUSTED {job}: {why}")
        trust = (f", {report.trusted_keys} trusted key(s)" if report.trusted_keys
                 else ", trust not configured")
        print(f"SIGNED {report.signed} event(s) verified, {report.unsigned} unsigned, "
              f"{len(report.bad_signatures)} invalid{trust}")
        if report.unverifiable:
            print(f"note: {len(report.unverifiable)} job(s) older than the log's first message "
                  "cannot be verified")
        verdict = "OK" if report.ok else f"{len(report.differences)} difference(s)"
        if not unknown:
            print(f"{verdict}: {report.jobs} job(s) replayed to sequence "
                  f"{report.replayed_to}, projection checkpoint {report.checkpoint}")
    if unknown:
        print(f"trainbus audit: no job {args.job!r} in the log (replayed to sequence "
              f"{report.replayed_to}) or in the projection", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if report.ok else EXIT_FAILED


async def _repair(bus: Bus, args: argparse.Namespace) -> int:
    from libs.events.audit import repair

    report = await repair(bus)
    if args.json:
        print(json.dumps({
            "replayed_to": report.replayed_to,
            "jobs": report.jobs,
            "changes": [
                {"key": c.key, "action": c.action, "detail": c.detail,
                 "differences": [{"kind": d.kind, "field": d.field, "detail": d.detail}
                                 for d in c.differences]}
                for c in report.changes
            ],
            "skipped": report.skipped,
            "unverifiable": report.unverifiable,
        }, indent=2, default=str))
    else:
        for change in report.changes:
            print(f"{change.action.upper()} {change.key}: {change.detail}")
            for d in change.differences:
                print(f"  was: {d.kind}: {d.detail}")
        for key in report.skipped:
            print(f"SKIPPED {key}: changed while repairing (a running projector wrote it); "
                  "run the repair again")
        verdict = (f"repaired {len(report.changes)} KV entry(ies)" if report.changed
                   else "nothing to repair")
        print(f"{verdict}: {report.jobs} job(s) replayed to sequence {report.replayed_to}")
    return EXIT_FAILED if report.skipped else EXIT_OK
