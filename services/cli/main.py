"""`trainbus` console script: one argparse tree, one module per command family.

Each module in COMMAND_MODULES exposes `register(subparsers)`; it adds its commands and sets
`handler` (a function taking the parsed args and returning an exit code). Heavy imports (torch,
pandas, nats) happen inside handlers so `trainbus --help` stays instant.

Exit codes: 0 done, 1 failed, 2 bad input / usage, 130 cancelled or interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from services.cli.args import EXIT_BAD_INPUT, EXIT_CANCELLED

COMMAND_MODULES: tuple[str, ...] = (
    "services.cli.data",
    "services.cli.pipeline",
    "services.cli.predict",
    "services.cli.schema",
    "services.cli.strategy",
    "services.cli.audit",
    "services.cli.trainers",
    "services.cli.train",
    "services.cli.jobs",
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
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
