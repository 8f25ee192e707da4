"""Command-line options of the trainer entry points (argparse only: `trainbus --help` stays
instant because nothing here imports NATS or torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from libs import worker_defaults as defaults


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats-url", default=None, help="NATS server URL(s), comma-separated "
                        "(default $NATS_URL or nats://127.0.0.1:4222)")
    parser.add_argument("--worker-id", default=None, help="default <kind>-<host>-<pid>-<rand>")
    parser.add_argument("--capacity", type=_positive, default=defaults.CAPACITY,
                        help=f"jobs at once (default {defaults.CAPACITY}; >1 gives up "
                             "bit-identical reruns)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="default $TRAINBUS_DATA_DIR or ./data")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="default $TRAINBUS_MODELS_DIR or ./models")
    parser.add_argument("--strategies-dir", type=Path, default=None,
                        help="default $TRAINBUS_STRATEGIES_DIR or ./strategies")
    parser.add_argument("--checkpoint-every", type=_non_negative,
                        default=defaults.CHECKPOINT_EVERY,
                        help="epochs between checkpoints in the object store (default "
                             f"{defaults.CHECKPOINT_EVERY}; 0: only on drain)")
    parser.add_argument("--checkpoint-interval", type=_non_negative_seconds,
                        default=defaults.CHECKPOINT_INTERVAL,
                        help="seconds at least between two of those checkpoints (default "
                             f"{defaults.CHECKPOINT_INTERVAL:g}; 0: every --checkpoint-every "
                             "epochs); a drain always checkpoints")
    parser.add_argument("--ack-wait", type=float, default=None,
                        help="seconds a job's lease lasts without renewal (default "
                             "$TRAINBUS_ACK_WAIT or 120); applied to the pool consumers")
    parser.add_argument("--max-deliver", type=_positive, default=None,
                        help="deliveries of one command (default $TRAINBUS_MAX_DELIVER or 4)")
    parser.add_argument("--drain-timeout", type=float, default=defaults.DRAIN_TIMEOUT,
                        help="seconds to wait for the running job at shutdown (default "
                             f"{defaults.DRAIN_TIMEOUT:g})")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
