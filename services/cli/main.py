"""`trainbus` console script: one argparse tree, one module per command family.

Each module in COMMAND_MODULES exposes `register(subparsers)`; it adds its commands and sets
`handler` (a function taking the parsed args and returning an exit code). Heavy imports (torch,
pandas, nats) happen inside handlers so `trainbus --help` stays instant.

Exit codes: 0 done, 1 failed, 2 bad input / usage, 130 cancelled or interrupted. When the
reader of stdout goes away (`trainbus audit --timeline | head`) the command stops writing and
exits 1 without a traceback, as rich's console does for its own output (and Python's docs
recommend): the output was not delivered.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from services.cli.args import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED

COMMAND_MODULES: tuple[str, ...] = (
    "services.cli.data",
    "services.cli.pipeline",
    "services.cli.predict",
    "services.cli.schema",
    "services.cli.strategy",
    "services.cli.audit",
    "services.cli.trainers",
    "services.cli.train",
    "services.cli.sweep",
    "services.cli.rerun",
    "services.cli.jobs",
    "services.cli.logs",
    "services.cli.trust",  # after jobs: adds `workers trust|untrust` to its `workers`
    "services.cli.models",
    "services.cli.backend",
    "services.cli.projector",
    "services.cli.predictor",
    "services.cli.up",
    "services.cli.demo",
)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainbus",
        description="Train neural trading strategies as jobs on a NATS JetStream event log.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    # The NATS role this command logs in as with a local `trainbus up`'s credentials.
    from services.cli.client import use_role_for

    use_role_for(args)
    try:
        code = int(handler(args))
        sys.stdout.flush()  # a closed pipe shows here, not as noise in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader of stdout is gone (`| head`): the output is no longer wanted. Point stdout at
    /dev/null so the interpreter's last flush at exit cannot raise (and print) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or not a real file: nothing to flush
        pass
    finally:
        os.close(devnull)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
