"""`trainbus logs JOB [--follow] [--json]`: the job's trainer log lines (libs/events/job_logs.py).

The worker running the job publishes the records logged while it runs it (its attempt and its
training thread; at the trainer's log level) on `<prefix>.log.<job>`, kept with limits in the
logs stream (the oldest lines of a long job can be gone). Without --follow: the stored lines,
then exit. With --follow: the stored lines, then new ones as they come, until the job is
finished and its last attempt's lines are all in. `--json`: one JSON object per line.

Exit codes: 0 done, 1 failed (unknown job, NATS unreachable), 2 bad input (not a job id),
130 interrupted.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.args import job_id


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logs", help="a job's trainer log lines (--follow: live)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", metavar="JOB", type=job_id)
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new lines until the job is finished")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=run_logs)


def run_logs(args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: _logs(args))


async def _logs(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from libs.events.job_logs import follow_lines, format_line, read_lines
    from libs.events.jobs import JobService
    from services.cli.client import EXIT_OK, open_bus, print_json_line

    async with open_bus() as bus:
        state = await JobService(bus).get(args.job)  # an unknown job: exit 1, not silence
        if args.follow:
            async with contextlib.aclosing(follow_lines(bus, state.job_id)) as lines:
                async for line in lines:
                    _print(line, json_output=args.json, fmt=format_line,
                           json_line=print_json_line)
        else:
            for line in await read_lines(bus, state.job_id):
                _print(line, json_output=args.json, fmt=format_line, json_line=print_json_line)
    sys.stdout.flush()
    return EXIT_OK


def _print(line: Any, *, json_output: bool, fmt: Any, json_line: Any) -> None:
    if json_output:
        json_line(line)
    elif not line.end:  # the end marker is for followers, not for people
        print(fmt(line), flush=True)
