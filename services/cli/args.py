"""What every `trainbus` command shares: exit codes and argument types (no heavy imports).

Exit codes: 0 done, 1 failed, 2 bad input or usage, 130 cancelled or interrupted.
"""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def csv_list(text: str) -> list[str]:
    """`A,B` -> ["A", "B"]; empty items dropped, an empty list refused."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def tag_pair(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value) for `--tag` (the value may be empty, the key not)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def add_organising(parser: argparse.ArgumentParser) -> None:
    """`--experiment`, `--tag k=v` (repeatable) and `--note`, shared by train and rerun."""
    parser.add_argument("--experiment", default=None, help="the experiment this run belongs to")
    parser.add_argument("--tag", dest="tags", type=tag_pair, action="append", default=[],
                        metavar="KEY=VALUE", help="a tag (repeatable)")
    parser.add_argument("--note", default=None, help="free text kept with the job")
